"""PyTorch baselines of the streaming geometry family (gct-stream) for ``viewrt infer`` and
``viewrt bench``: the reference's streaming mode with its own preallocated cache behind the
streaming-session interface (:class:`TorchStreamSession`), and full causal recompute
(:func:`recompute_last`: ``forward_batch`` over every frame so far, keeping the newest
frame's prediction). The torch-free harnesses (viewrt.evaluation.stream, viewrt.bench.stream)
receive them from the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from viewrt.errors import ViewrtError
from viewrt.models import build_model
from viewrt.models.checkpoint import weights_digest
from viewrt.models.gct_stream import GCTStream

__all__ = [
    "TorchPrediction",
    "TorchStreamSession",
    "default_window",
    "open_reference",
    "recompute_last",
    "reference_model",
]


@dataclass
class TorchPrediction:
    """One frame's prediction, as the runtime's ``FramePrediction`` (numpy arrays)."""

    position: int
    frames_seen: int
    keyframe: bool
    pose_enc: np.ndarray  # float32 [9]
    depth: np.ndarray  # float32 [S, S]
    depth_conf: np.ndarray  # float32 [S, S]


def reference_model(manifest, export_dir: Path | str) -> GCTStream:
    """The PyTorch model of a gct-stream export (its preset and weights), eval mode.

    Raises:
        ViewrtError: the export is not gct-stream, or the weights do not reproduce it.
    """
    if manifest.family != "gct-stream":
        raise ViewrtError(
            f"{export_dir}: the PyTorch streaming reference runs gct-stream exports, this one is {manifest.family!r}"
        )
    model, _ = build_model(manifest.preset, manifest.checkpoint)
    digest, want = weights_digest(model), manifest.weights_sha256
    if digest != want:
        src = f"checkpoint {manifest.checkpoint}" if manifest.checkpoint else "the built-in weights"
        raise ViewrtError(
            f"{export_dir}: preset {manifest.preset!r} with {src} gives weights {digest[:12]}, but the export was "
            f"made from weights {str(want)[:12]}; PyTorch cannot reproduce this export"
        )
    return model.eval()


def default_window(manifest, pinned: int) -> int:
    """The export's window for ``pinned`` pinned frames: the step reads at most
    ``max_frames = pinned + window - 1`` full frames (the contract's header)."""
    return max(1, int(manifest.max_frames) - pinned + 1)


class TorchStreamSession:
    """The reference's streaming mode (its own preallocated cache) as a streaming session:
    ``prefill``, ``add_frame``, ``reset``, ``info``, ``close``. Numpy in and out.

    Args:
        model: a :class:`GCTStream` in eval mode.
        window: frames attended in full, the current one included.
        pinned: the first frames, processed together by :meth:`prefill` and pinned.
        device: torch device ("cpu" default).
        threads: torch CPU threads (None: torch's default).
    """

    def __init__(
        self,
        model: GCTStream,
        window: int,
        pinned: int,
        device: str | None = None,
        threads: int | None = None,
    ):
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = torch.device(device or "cpu")
        self.model = model.to(self.device)
        self.window, self.pinned = window, pinned
        self.state = model.new_stream(window, pinned)
        self._moved = False

    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(self.device)

    def _pred(self, out: dict, i: int | None, position: int, keyframe: bool) -> TorchPrediction:
        pick = (lambda t: t[i]) if i is not None else (lambda t: t)
        return TorchPrediction(
            position=position,
            frames_seen=self.state.frames_seen,
            keyframe=keyframe,
            pose_enc=pick(out["pose_enc"]).float().cpu().numpy(),
            depth=pick(out["depth"]).float().cpu().numpy(),
            depth_conf=pick(out["depth_conf"]).float().cpu().numpy(),
        )

    def prefill(self, images: np.ndarray) -> list[TorchPrediction]:
        """The first ``pinned`` frames ``[F, 3, S, S]`` together; one prediction each."""
        out = self.model.stream_prefill(self.state, self._tensor(images))
        return [self._pred(out, i, i, True) for i in range(images.shape[0])]

    def add_frame(self, image: np.ndarray, keyframe: bool = True) -> TorchPrediction:
        """One frame ``[3, S, S]`` at the next position (a non-keyframe is rolled back)."""
        t = self.state.position
        out = self.model.stream_step(self.state, self._tensor(image), keyframe)
        return self._pred(out, None, t, keyframe)

    def reset(self) -> None:
        self.model.stream_reset(self.state)

    def info(self) -> dict:
        s = self.state
        return {
            "backend": "torch",
            "window": self.window,
            "pinned": self.pinned,
            "scale_frames": self.pinned,
            "position": s.position,
            "frames_seen": s.frames_seen,
            "precision": "fp32",
        }

    def close(self) -> None:
        pass


def open_reference(
    model: GCTStream,
    manifest,
    window: int | None,
    pinned: int | None,
    device: str | None = None,
    threads: int | None = None,
) -> TorchStreamSession:
    """A :class:`TorchStreamSession` with the export's defaults for what is None (pinned:
    the export's scale frames; window: what fills its ``max_frames``)."""
    p = int(pinned or manifest.scale_frames)
    return TorchStreamSession(model, window or default_window(manifest, p), p, device, threads)


@torch.no_grad()
def recompute_last(model: GCTStream, images: torch.Tensor, window: int, pinned: int) -> dict:
    """Full causal recompute: ``forward_batch`` over all ``F`` frames so far (``[F, 3, S,
    S]``) with the window rule; the newest frame's prediction (``pose_enc [9]``, ``depth``,
    ``depth_conf [S, S]``)."""
    out = model.forward_batch(images, window, min(pinned, images.shape[0]))
    return {k: v[-1] for k, v in out.items()}
