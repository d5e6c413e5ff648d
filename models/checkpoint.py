"""Loading upstream checkpoints strictly.

Accepts ``torch.save({"model": state_dict, "optimizer": ..., ...})`` (the upstream
layout), a bare state dict, or a ``.safetensors`` file. ``.pt`` files are read with
``weights_only=True``. Prefixes ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) are
stripped; known non-model keys (``loss_computer.*`` perceptual-loss weights, ``repa_*``)
are dropped and reported. The config is inferred from the weight shapes and checked
against the requested one; then every key must match: a missing, unexpected or mis-shaped
key is an error that names it. Upstream's ``strict=False`` would load nothing silently
when prefixes differ; we never do that.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import serialization

from viewrt.errors import ViewrtError
from viewrt.models.efficient_lvsm import EfficientLVSMConfig
from viewrt.models.lvsm import LVSMConfig
from viewrt.models.registry import FAMILIES, family_of_config, family_of_state_dict

# Lazy: safetensors (only for .safetensors files), imported where used.

STRIP_PREFIXES = ("_orig_mod.", "module.")
IGNORED_PREFIXES = ("loss_computer.", "repa_")
_MAX_LISTED = 12


@dataclass
class LoadReport:
    """What loading did: the source, the inferred config and the keys it dropped."""

    path: str
    family: str
    config: EfficientLVSMConfig | LVSMConfig
    ignored_keys: list[str] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {self.family} from {self.path}"]
        if self.stripped_prefixes:
            parts.append(f"stripped prefixes {', '.join(self.stripped_prefixes)}")
        if self.ignored_keys:
            groups = sorted({k.split(".")[0] for k in self.ignored_keys})
            parts.append(f"ignored {len(self.ignored_keys)} non-model keys ({', '.join(groups)})")
        return "; ".join(parts)


def _unsafe_globals(path: Path) -> list[str]:
    """Globals a torch.save file would import that weights-only loading does not allow
    (torch.serialization.get_unsafe_globals_in_checkpoint, torch >= 2.5); [] for a file
    that is not a torch.save checkpoint at all."""
    try:
        return list(serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - not a checkpoint: the caller reports it as unreadable
        return []


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict (no key rewriting).

    Raises:
        ViewrtError: missing file, unreadable/corrupt file, a pickle that is not weights
            only, or a file that holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ViewrtError(f"checkpoint {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            with (
                warnings.catch_warnings()
            ):  # e.g. "Detected pickle protocol 4": one error line, not warnings
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch raises the same UnpicklingError for a pickle of arbitrary objects (refused)
        # and for bytes that are no checkpoint at all, worded differently across versions:
        # ask torch which globals the file would load instead of reading the message.
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise ViewrtError(
                f"checkpoint {path}: not weights-only: refused for safety (it pickles {', '.join(unsafe[:3])}, "
                "which torch.load(weights_only=True) does not run); nothing in it was executed"
            ) from None
        raise ViewrtError(
            f"checkpoint {path}: cannot be read (not a torch.save file, or corrupt)"
        ) from None
    except Exception as e:  # corrupt zip, truncated file, bad safetensors header...
        raise ViewrtError(
            f"checkpoint {path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise ViewrtError(
            f"checkpoint {path}: holds no state dict (expected {{'model': state_dict}} or a dict of tensors)"
        )
    return obj


def clean_keys(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Strip compile/DDP prefixes and drop known non-model keys.

    Returns: (cleaned dict, ignored original keys, prefixes that were stripped).
    """
    out, ignored, stripped = {}, [], set()
    for key, value in sd.items():
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if name.startswith(prefix):
                    name, changed = name[len(prefix) :], True
                    stripped.add(prefix)
        if name.startswith(IGNORED_PREFIXES):
            ignored.append(key)
            continue
        out[name] = value
    return out, ignored, sorted(stripped)


def _n_blocks(sd: dict, prefix: str) -> int:
    idx = [int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))]
    return max(idx) + 1 if idx else 0


def _shape(sd: dict, key: str, path) -> tuple[int, ...]:
    if key not in sd:
        raise ViewrtError(f"checkpoint {path}: missing key {key!r}, cannot infer the model config")
    return tuple(sd[key].shape)


def infer_config(sd: dict[str, torch.Tensor], image_size: int, path="checkpoint"):
    """Infer model family and config from weight shapes (image size cannot be inferred).

    Returns: (family name, e.g. "efficient-lvsm" or "lvsm", config).
    Raises: ViewrtError for an unknown model or weights of an impossible shape.
    """
    fam = family_of_state_dict(sd, path)
    d, cin = _shape(sd, fam.tokenizer_key, path)
    patch = int(round((cin / fam.in_channels) ** 0.5))
    if fam.in_channels * patch * patch != cin:
        raise ViewrtError(
            f"checkpoint {path}: {fam.tokenizer_key} has shape {(d, cin)}, expected [d, {fam.in_channels}*p*p]"
        )
    (head_dim,) = _shape(sd, fam.q_norm_key, path)
    mlp_mult = _shape(sd, f"{fam.blocks_prefix}.0.mlp.mlp.0.weight", path)[0] // d
    cfg = fam.config_cls(
        image_size=image_size,
        patch_size=patch,
        d_model=d,
        n_layers=_n_blocks(sd, fam.blocks_prefix),
        head_dim=head_dim,
        mlp_mult=mlp_mult,
    )
    return fam.name, cfg


def _listed(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], path="checkpoint") -> None:
    """Load ``sd`` into ``model`` requiring every key to match; errors name the keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [
        f"{k} {tuple(sd[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in sd and sd[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys: {_listed(misshaped)}")
    if problems:
        raise ViewrtError(
            f"checkpoint {path} does not match {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in sd.items()}, strict=True)


def load_checkpoint(
    path: str | Path,
    config: EfficientLVSMConfig | LVSMConfig | None = None,
    image_size: int | None = None,
):
    """Build the reference model that a checkpoint holds and load it strictly.

    Args:
        path: ``.pt``/``.pth`` (torch.save, read weights-only) or ``.safetensors``.
        config: expected config (e.g. a preset). Its architecture must equal what the
            weights imply (width, patch, layers, head_dim); it sets the image size.
        image_size: image size when no config is given (default 256).
    Returns:
        (model in eval mode, LoadReport).
    Raises:
        ViewrtError: unreadable file, unknown model, config mismatch, or any missing,
            unexpected or mis-shaped key.
    """
    raw = read_state_dict(path)
    sd, ignored, stripped = clean_keys(raw)
    size = config.image_size if config is not None else (image_size or 256)
    family, inferred = infer_config(sd, size, path)

    if config is not None:
        want = family_of_config(config).name
        if want != family:
            raise ViewrtError(f"checkpoint {path} holds a {family} model, expected {want}")
        if replace(config, image_size=size) != inferred:
            diffs = [
                f"{k}: checkpoint {v}, expected {getattr(config, k)}"
                for k, v in inferred.to_dict().items()
                if v != getattr(config, k)
            ]
            raise ViewrtError(
                f"checkpoint {path} does not match the requested config ({'; '.join(diffs)})"
            )
    if inferred.image_size % inferred.patch_size:
        raise ViewrtError(
            f"image size {inferred.image_size} is not a multiple of the checkpoint's patch {inferred.patch_size}"
        )
    model = FAMILIES[family].model_cls(inferred)
    load_into(model, sd, path)
    return model.eval(), LoadReport(str(path), family, inferred, ignored, stripped)


def save_upstream_checkpoint(
    model: torch.nn.Module,
    path: str | Path,
    compiled_prefix: bool = True,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` in the upstream layout (``{"model": sd, ...}``, optional
    ``_orig_mod.`` prefix and extra loss keys). Used to make test fixtures and the
    built-in weights file in the format real checkpoints have."""
    prefix = "_orig_mod." if compiled_prefix else ""
    sd = {prefix + k: v.detach().clone() for k, v in model.state_dict().items()}
    sd.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": sd, "optimizer": {}, "step": 0}, path)
    return path


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over the state dict (sorted keys, fp32 bytes): the model's identity."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()
