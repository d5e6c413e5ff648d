"""Backends behind one runner interface (base.Backend), as a registry whose rows carry their
facts, so that nothing else keeps a list of backends or branches on a backend's name.

``BACKENDS``: one :class:`BackendEntry` per backend: its class (imported lazily by name, so
that ``import viewrt.runtime`` works where onnxruntime's GPU build, OpenVINO or TensorRT
are absent), the packages it needs and how to install them, and a check of the machine.
``CONFIGS``: one :class:`Config` per named configuration (a backend with fixed options):
its device, the quantized export precisions it runs, whether the runtime tests run on it.
``open()``, ``viewrt infer``, ``viewrt bench`` and the tests' backend fixture iterate these.

A new backend is one module plus one row: in this file, or from outside the package with
:func:`register` (or a ``viewrt.backends`` entry point whose object is called once to
register, loaded the first time the registry is read).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from viewrt import devices
from viewrt.contract.precision import QUANTIZED_PRECISIONS
from viewrt.errors import ViewrtError

ENTRY_POINT_GROUP = "viewrt.backends"


@dataclass(frozen=True)
class BackendEntry:
    """One backend.

    Attributes:
        module, cls: where its Backend subclass lives (imported when first needed).
        packages: the import names of the packages it needs (checked without importing them).
        install: how to install them, for messages.
        description: one line.
        unavailable: ``fn(manifest, **options) -> str | None``: why it cannot run here with
            these options (a missing execution provider, no GPU, no engines in the export),
            without loading a graph; None: it can wherever its packages are installed.
            A ``"module:function"`` string is imported when first called.
    """

    module: str
    cls: str
    packages: tuple[str, ...]
    install: str
    description: str
    unavailable: Callable | str | None = None

    @property
    def needs(self) -> str:
        """The packages it needs and how to install them, for messages."""
        return f"{', '.join(self.packages)} ({self.install})"


@dataclass(frozen=True)
class Config:
    """A named runtime configuration: a backend with fixed options.

    Attributes:
        backend: a key of ``BACKENDS``.
        options: keyword options for the backend (``device``, ``precision``, ...).
        description: one line (the bench's tables and ``--help``).
        gpu: it runs on a CUDA GPU (else on the CPU).
        quantized: the quantized export precisions (``int8``, ``fp8``: Q/DQ graphs from
            ``viewrt calib``) it runs; the bench adds a ``<name>-<precision>`` column each.
        tests: the runtime's parity and policy tests run on it (the ``backend`` fixture).
    """

    backend: str
    options: dict = field(default_factory=dict)
    description: str = ""
    gpu: bool = False
    quantized: tuple[str, ...] = ()
    tests: bool = False


def _tensorrt_unavailable(manifest=None, **_options) -> str | None:
    """Why the native TensorRT backend cannot run here or on this export, or None."""
    status = devices.tensorrt_status()
    if not status.ok:
        return status.reason
    if manifest is not None and not manifest.engines:
        return f"no engines in {manifest.dir} (run `viewrt build`)"
    return None


BACKENDS: dict[str, BackendEntry] = {
    "ort": BackendEntry(
        "viewrt.runtime.backends.ort",
        "OrtBackend",
        ("onnxruntime",),
        "pip install onnxruntime, or onnxruntime-gpu for the CUDA and TensorRT EPs",
        "ONNX Runtime (CPU; CUDA/TensorRT EPs by device)",
        unavailable="viewrt.runtime.backends.ort:unavailable",
    ),
    "trt": BackendEntry(
        "viewrt.runtime.backends.trt",
        "TrtBackend",
        ("tensorrt", "cuda"),
        "pip install '.[gpu]' and TensorRT",
        "native TensorRT engines (viewrt build)",
        unavailable=_tensorrt_unavailable,
    ),
    "openvino": BackendEntry(
        "viewrt.runtime.backends.openvino",
        "OpenVinoBackend",
        ("openvino",),
        "pip install '.[openvino]'",
        "OpenVINO CPU plugin (fused attention; bf16 where the CPU has it)",
    ),
}

CONFIGS: dict[str, Config] = {
    "ort": Config(
        "ort",
        {"device": "cpu"},
        "viewrt runtime, ONNX Runtime CPU (fused MultiHeadAttention decoder where the export has it)",
        quantized=QUANTIZED_PRECISIONS,
        tests=True,
    ),
    "ort-plain": Config(
        "ort",
        {"device": "cpu", "fused_attention": False},
        "viewrt runtime, ONNX Runtime CPU, the plain decoder (MatMul -> Softmax -> MatMul attention)",
    ),
    "ort-cuda": Config(
        "ort", {"device": "cuda:0"}, "viewrt runtime, ONNX Runtime CUDA EP", gpu=True
    ),
    "ort-trt": Config(
        "ort", {"device": "tensorrt:0"}, "viewrt runtime, ONNX Runtime TensorRT EP", gpu=True
    ),
    "trt": Config("trt", {"device": "cuda:0"}, "viewrt runtime, native TensorRT engines", gpu=True),
    "openvino": Config(
        "openvino",
        {},
        "viewrt runtime, OpenVINO CPU, its default precision for this CPU",
        quantized=QUANTIZED_PRECISIONS,
    ),
    "openvino-plain": Config(
        "openvino",
        {"fused_attention": False},
        "viewrt runtime, OpenVINO CPU, its default precision, the cache reader's attention unfused "
        "(MatMul -> Softmax -> MatMul; a view renderer splits targets by its attention budget)",
        quantized=QUANTIZED_PRECISIONS,
    ),
    # the precision the runtime tests hold to PyTorch within 1e-4
    "openvino-f32": Config(
        "openvino", {"inference_precision": "f32"}, "viewrt runtime, OpenVINO CPU, f32", tests=True
    ),
}


# --------------------------------------------------------------------------- registration

_entry_points_loaded = False


def register(
    name: str,
    entry: BackendEntry | None = None,
    configs: dict[str, Config] | None = None,
    *,
    replace: bool = False,
) -> None:
    """Add a backend and/or named configurations to the registry, from any package.

    Args:
        name: the backend's name (a key of ``BACKENDS``).
        entry: the backend's row; None to add configurations of a registered backend.
        configs: named configurations; default with an entry: one configuration ``name``
            with no options, on the CPU.
        replace: allow replacing an existing row of the same name.
    Raises: ViewrtError for a name already taken (without ``replace``), or a configuration
        of a backend that is not registered.
    """
    if entry is not None:
        if name in BACKENDS and not replace:
            raise ViewrtError(f"backend {name!r} is already registered")
        configs = configs if configs is not None else {name: Config(name, {}, entry.description)}
    taken = [c for c in configs or {} if c in CONFIGS and not replace]
    if taken:
        raise ViewrtError(f"configuration(s) {', '.join(taken)} already registered")
    known = {*BACKENDS, *([name] if entry is not None else [])}
    for c, row in (configs or {}).items():
        if row.backend not in known:
            raise ViewrtError(f"configuration {c!r}: backend {row.backend!r} is not registered")
    if entry is not None:
        BACKENDS[name] = entry
    CONFIGS.update(configs or {})


def load_entry_points() -> None:
    """Call each ``viewrt.backends`` entry point's object once (it calls :func:`register`).

    Raises: ViewrtError naming an entry point that cannot be loaded or fails.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()()
        except ViewrtError:
            raise
        except Exception as e:  # noqa: BLE001 - a third party's code; name it in one line
            raise ViewrtError(
                f"backend entry point {ep.name!r} ({ep.value}) failed: {type(e).__name__}: {e}"
            ) from None


def backends() -> dict[str, BackendEntry]:
    """Every registered backend (entry points included), by name."""
    load_entry_points()
    return BACKENDS


def configs() -> dict[str, Config]:
    """Every named configuration (entry points included), by name."""
    load_entry_points()
    return CONFIGS


def names() -> list[str]:
    """The names ``open()`` takes: the configurations, then backends not named by one."""
    return list(dict.fromkeys([*configs(), *backends()]))


# --------------------------------------------------------------------------- lookups


def backend_class(name: str):
    """The Backend subclass registered as ``name``.

    Raises: ViewrtError for an unknown name, or when its packages are not installed.
    """
    if name not in backends():
        raise ViewrtError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    e = BACKENDS[name]
    try:
        return getattr(importlib.import_module(e.module), e.cls)
    except ModuleNotFoundError as err:
        raise ViewrtError(
            f"backend {name!r} needs {e.needs}, which is not installed ({err.name})"
        ) from None


def resolve(name: str, **options) -> tuple[str, dict]:
    """``(backend, options)`` for a backend or configuration name; explicit options (not
    None) add to the configuration's. An explicit option that contradicts the one the
    configuration is named for is refused (``openvino-f32`` with ``inference_precision``
    "bf16" would run bf16 under the f32 name); the device is a default any caller may
    change (``ort`` with "cuda:0").

    Raises: ViewrtError for an unknown name or a contradicting option.
    """
    if name in configs():
        c = CONFIGS[name]
        given = {k: v for k, v in options.items() if v is not None}
        # a configuration's device is only its default ("ort" with "cuda:0")
        fixed = {k: v for k, v in c.options.items() if k != "device"}
        for k, v in given.items():
            if k in fixed and v != fixed[k]:
                raise ViewrtError(
                    f"{name} runs with {k} {fixed[k]!r}, not {v!r}; to choose the {k}, use the "
                    f"backend {c.backend!r}"
                )
        return c.backend, {**c.options, **given}
    if name in BACKENDS:
        return name, {k: v for k, v in options.items() if v is not None}
    raise ViewrtError(f"unknown backend {name!r}; expected one of {', '.join(names())}")


def create(name: str, manifest, **options):
    """Make an (inactive) backend for a backend or configuration name.

    Raises: ViewrtError for an unknown name, missing packages, or an option the backend
        does not take.
    """
    backend, opts = resolve(name, **options)
    t = opts.get("threads")
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
        raise ViewrtError(
            f"threads must be a positive integer or None, got {type(t).__name__} {t!r}"
        )
    if "device" in opts and not isinstance(opts["device"], str):
        raise ViewrtError(
            f"device must be a string such as 'cpu' or 'cuda:0', got {type(opts['device']).__name__}"
        )
    cls = backend_class(backend)
    unknown = set(opts) - set(cls.options)
    if unknown:
        raise ViewrtError(
            f"backend {backend!r} takes no option {', '.join(sorted(unknown))} (it takes {', '.join(cls.options) or 'none'})"
        )
    return cls(manifest, **opts)


def planned_cache_dtype(name: str, manifest, **options) -> str:
    """The numpy dtype name of the K/V cache a backend or configuration will keep on
    ``manifest``'s export with these options (``Backend.planned_cache_dtype``), for the
    memory estimate; loads no graph.

    Raises: ViewrtError for an unknown name or missing packages.
    """
    backend, opts = resolve(name, **options)
    return backend_class(backend).planned_cache_dtype(manifest, **opts)


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # in sys.modules without a spec (a module made at run time)
        return True


def missing(name: str) -> str | None:
    """Why a backend or configuration cannot load here (its packages are not installed;
    checked without importing them), or None.

    Raises: ViewrtError for an unknown name.
    """
    backend, _ = resolve(name)
    e = BACKENDS[backend]
    absent = [p for p in e.packages if not _installed(p)]
    if absent:
        return f"backend {backend!r} needs {', '.join(absent)}, not installed here ({e.install})"
    return None


def unavailable(name: str, manifest=None, **options) -> str | None:
    """Why a backend or configuration cannot run here on ``manifest``'s export, or None:
    its packages are missing, its machine check fails (execution provider, GPU, engines),
    or it cannot be made for the export (files missing or not matching the manifest, an
    option it does not take). Loads no graph.

    Raises: ViewrtError for an unknown name.
    """
    why = missing(name)
    if why is not None:
        return why
    backend, opts = resolve(name, **options)
    check = BACKENDS[backend].unavailable
    if isinstance(check, str):
        module, _, fn = check.partition(":")
        check = getattr(importlib.import_module(module), fn)
    try:
        why = check(manifest, **opts) if check is not None else None
        if why is None and manifest is not None:
            create(name, manifest, **options)
    except ViewrtError as e:
        return str(e)
    return why
