"""Frame-by-frame evaluation of a streaming geometry model (``viewrt infer`` on a
token-window export): feed a sequence's frames to a streaming session in order, and write
each frame's camera and depth, its latency, and the errors against the ground truth where
the sequence has one. Torch-free: it drives any object with the streaming-session interface
(``prefill(images)``, ``add_frame(image, keyframe=True)`` returning a prediction with
``pose_enc [9]``, ``depth [S, S]``, ``depth_conf [S, S]``, ``frames_seen``, ``position``;
``reset()``, ``info()``), which the caller opens.

Output (``out``)::

    poses.json, poses.npz, poses.csv    # per frame: pose_enc, c2w, fxfycxcy, latency, errors
    depth/frame_NNNNN_depth.npy, _conf.npy, .png
    trajectory.png                      # camera centres, prediction vs ground truth
    latency.json, latency.png           # per frame
    summary.json

Decisions (recorded in summary.json too):

* The first ``prefill`` frames (the model's scale frames) go in one ``prefill`` call, as
  upstream processes them together; the others one ``add_frame`` each, as keyframes.
* Latency of a frame is wall time around its ``add_frame`` call (``time.perf_counter``);
  prefilled frames share their call's time (each row has the call's time and its share).
  One prefill and one step run first and are discarded (``reset`` after them): warm-up.
* Cameras are decoded from ``pose_enc`` with :func:`viewrt.geometry.pose_enc_to_camera`
  (world-to-camera extrinsics, quaternion real part last, FoV h then w) and compared after
  :func:`viewrt.metrics.align_first_frame` (first camera on the ground truth's first, scale
  fitted by least squares). Depth errors are per frame, median-scaled, over the pixels at or
  above the frame's median confidence (:func:`viewrt.metrics.depth_errors`).
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from viewrt.data.sequence import FrameSequence, SequenceFrame, iter_frames
from viewrt.errors import ViewrtError
from viewrt.evaluation.stream_writers import (
    finite_mean,
    plot_latency,
    plot_trajectory,
    write_depth_frame,
    write_poses,
)
from viewrt.evaluation.writers import write_json
from viewrt.geometry import pose_enc_to_camera
from viewrt.metrics import align_first_frame, depth_errors, pose_errors

__all__ = ["ALIGNMENT_NOTE", "StreamSettings", "run_sequence"]

ALIGNMENT_NOTE = (
    "predicted cameras are compared after aligning the first frame: the first predicted camera "
    "is moved onto the first ground-truth camera and the trajectory's scale is fitted by least "
    "squares (a model from images has no metric scale); depth is median-scaled per frame over the "
    "pixels at or above the frame's median confidence"
)
POSE_ENC_NOTE = (
    "pose_enc = [t (3), quaternion x y z w (4), fov_h, fov_w (radians)] of the world-to-camera "
    "extrinsics (VGGT's absT_quaR_FoV); c2w is OpenCV camera-to-world, fxfycxcy in pixels of the "
    "model's image with the principal point at its centre"
)


@dataclass(frozen=True)
class StreamSettings:
    """How to run and label one sequence.

    Attributes:
        size: the model's image side in pixels.
        prefill: frames processed together first (the export's scale frames; 0: none).
        weights: what made the predictions (a checkpoint, or the untrained label).
        untrained: the weights are untrained (every output says so).
        title: first line of the plots' titles (model, backend, window).
        check_intrinsics: check ground-truth intrinsics against the images.
        conf_quantile: depth pixels below this quantile of confidence are left out.
        progress: a progress bar on a terminal (quiet otherwise).
        extra: recorded in summary.json as given.
    """

    size: int
    prefill: int = 0
    weights: str = ""
    untrained: bool = False
    title: str = ""
    check_intrinsics: bool = True
    conf_quantile: float = 0.5
    progress: bool = True
    extra: dict = field(default_factory=dict)


def _warm_up(session, frames: list[SequenceFrame], prefill: int) -> None:
    """One prefill (if any) and one step, then reset: first-call costs out of the numbers."""
    if prefill:
        session.prefill(np.stack([f.image for f in frames[:prefill]]))
    if len(frames) > prefill:
        session.add_frame(frames[prefill].image)
    session.reset()


def _feed(session, seq: FrameSequence, settings: StreamSettings, bar) -> tuple[list, list]:
    """Every frame through the session: (frames as SequenceFrame, [(prediction, row)])."""
    frames = iter_frames(seq, settings.size, check_intrinsics=settings.check_intrinsics)
    head = [f for _, f in zip(range(max(settings.prefill, 1) + 1), frames)]
    _warm_up(session, head, min(settings.prefill, len(head)))
    done: list[SequenceFrame] = []
    out = []
    n_pre = min(settings.prefill, len(head))
    if n_pre:
        batch = head[:n_pre]
        t0 = time.perf_counter()
        preds = session.prefill(np.stack([f.image for f in batch]))
        ms = (time.perf_counter() - t0) * 1e3
        preds = list(preds)
        if len(preds) != n_pre:
            raise ViewrtError(f"prefill of {n_pre} frames returned {len(preds)} predictions")
        for f, p in zip(batch, preds):
            out.append(
                (p, {"frame": f.index, "phase": "prefill", "call_ms": ms, "latency_ms": ms / n_pre})
            )
        done += batch
        bar.update(n_pre)
    for f in itertools.chain(head[n_pre:], frames):
        t0 = time.perf_counter()
        p = session.add_frame(f.image)
        ms = (time.perf_counter() - t0) * 1e3
        out.append((p, {"frame": f.index, "phase": "step", "call_ms": ms, "latency_ms": ms}))
        done.append(f)
        bar.update()
    return done, out


def _decode(
    pose_enc: np.ndarray, size: int
) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(c2w, fxfycxcy, problem): a FoV outside (0, pi) (untrained weights give them) leaves
    the pose decodable and the intrinsics None; a zero or non-finite encoding, neither."""
    try:
        c2w, k = pose_enc_to_camera(pose_enc, size, size)
        return c2w, k, None
    except ViewrtError as e:
        fov_ok = pose_enc.copy()
        fov_ok[7:9] = np.pi / 2  # any valid FoV: the pose does not depend on it
        try:
            c2w, _ = pose_enc_to_camera(fov_ok, size, size)
        except ViewrtError:
            return None, None, str(e)
        return c2w, None, str(e)


def _k_or_nan(k: np.ndarray | None) -> np.ndarray:
    return np.full(4, np.nan) if k is None else k


def _camera_errors(
    cams: list, frames: list[SequenceFrame], size: int
) -> tuple[list, np.ndarray | None, float | None]:
    """Per-frame pose errors (None where a frame's camera is not decodable), the aligned
    poses ``[F, 4, 4]`` (NaN where not decodable) and the fitted scale."""
    ok = [i for i, (c2w, _, _) in enumerate(cams) if c2w is not None]
    errors: list = [None] * len(frames)
    if not ok or frames[0].c2w is None:
        return errors, None, None
    pred = np.stack([cams[i][0] for i in ok])
    gt = np.stack([frames[i].c2w for i in ok])
    aligned, scale = align_first_frame(pred, gt)
    e = pose_errors(
        aligned,
        np.stack([_k_or_nan(cams[i][1]) for i in ok]),
        gt,
        np.stack([frames[i].fxfycxcy for i in ok]),
        size,
        size,
    )
    full = np.full((len(frames), 4, 4), np.nan)
    for j, i in enumerate(ok):
        full[i] = aligned[j]
        errors[i] = {k: float(v[j]) for k, v in e.items()}
    return errors, full, scale


def _outputs(out: Path, seq, frames, results, settings: StreamSettings, session_info: dict) -> dict:
    """Write every file; return the summary."""
    size = settings.size
    pe = np.stack([np.asarray(p.pose_enc, np.float64).reshape(9) for p, _ in results])
    cams = [_decode(row, size) for row in pe]
    errors, aligned, scale = _camera_errors(cams, frames, size)
    recs, lat_rows = [], []
    for (p, row), f, (c2w, k, bad), err in zip(results, frames, cams, errors):
        depth = np.asarray(p.depth, np.float32)
        conf = np.asarray(p.depth_conf, np.float32)
        files = write_depth_frame(
            out / "depth",
            f.index,
            f.image,
            depth,
            conf,
            f.depth,
            settings.weights,
            settings.untrained,
        )
        derr = None
        if f.depth is not None:
            derr = depth_errors(depth, f.depth, conf, settings.conf_quantile)
        merged = {
            **(err or {}),
            **(
                {
                    "depth_abs_rel": derr["abs_rel"],
                    "depth_delta_1_25": derr["delta_1_25"],
                    "depth_pixels": derr["pixels"],
                    "depth_scale": derr["scale"],
                }
                if derr
                else {}
            ),
        }
        recs.append(
            {
                "frame": f.index,
                "file": str(f.path),
                "phase": row["phase"],
                "position": getattr(p, "position", None),
                "frames_seen": getattr(p, "frames_seen", None),
                "pose_enc": pe[len(recs)],
                "c2w": c2w,
                "fxfycxcy": k,
                "pose_enc_problem": bad,
                "latency_ms": row["latency_ms"],
                "depth_files": files,
                "errors": merged or None,
            }
        )
        lat_rows.append(row)
    arrays = {"pose_enc": pe.astype(np.float32)}
    if all(c is not None for c, _, _ in cams):
        arrays["c2w"] = np.stack([c for c, _, _ in cams])
    arrays["fxfycxcy"] = np.stack([_k_or_nan(k) for _, k, _ in cams])  # NaN: FoV not decodable
    if seq.has_poses:
        arrays["gt_c2w"] = np.stack([f.c2w for f in frames])
        arrays["gt_fxfycxcy"] = np.stack([f.fxfycxcy for f in frames])
        if aligned is not None:
            arrays["aligned_c2w"] = aligned
    meta = {
        "weights": settings.weights,
        "untrained": settings.untrained,
        "pose_enc": POSE_ENC_NOTE,
        "alignment": ALIGNMENT_NOTE if seq.has_poses else None,
        "trajectory_scale": scale,
    }
    write_poses(out, recs, arrays, meta)
    write_json(
        out / "latency.json",
        {
            "weights": settings.weights,
            "timing": "time.perf_counter around each prefill/add_frame call, after a discarded warm-up",
            "frames": lat_rows,
        },
    )
    plot_latency(
        out / "latency.png",
        lat_rows,
        f"{settings.title}: latency per frame",
        settings.weights,
        settings.untrained,
    )
    if "c2w" in arrays or aligned is not None:
        pred = aligned if aligned is not None else arrays["c2w"]
        keep = np.isfinite(pred).all(axis=(1, 2))
        plot_trajectory(
            out / "trajectory.png",
            pred[keep],
            arrays.get("gt_c2w", None) if aligned is None else arrays["gt_c2w"][keep],
            f"{settings.title}: {seq.name}",
            settings.weights,
            settings.untrained,
        )
    return _summary(seq, recs, lat_rows, settings, session_info, scale)


def _summary(seq, recs, lat_rows, settings: StreamSettings, session_info: dict, scale) -> dict:
    steps = [r["latency_ms"] for r in lat_rows if r["phase"] == "step"]
    pre = [r["call_ms"] for r in lat_rows if r["phase"] == "prefill"]
    errs = [r["errors"] or {} for r in recs]
    means = {
        k: finite_mean(e.get(k) for e in errs)
        for k in (
            "translation_error",
            "rotation_error_deg",
            "fov_h_error_deg",
            "fov_w_error_deg",
            "depth_abs_rel",
            "depth_delta_1_25",
        )
    }
    return {
        "sequence": seq.name,
        "source": str(seq.source),
        "frames": len(recs),
        "ground_truth": {"poses": seq.has_poses, "depth": seq.has_depth},
        "weights": settings.weights,
        "untrained": settings.untrained,
        "prefill_frames": min(settings.prefill, len(recs)),
        "prefill_ms": pre[0] if pre else None,
        "step_ms_median": float(np.median(steps)) if steps else None,
        "step_ms_mean": float(np.mean(steps)) if steps else None,
        "mean_errors": means if seq.has_poses or seq.has_depth else None,
        "trajectory_scale": scale,
        "pose_enc_problems": sum(r["pose_enc_problem"] is not None for r in recs),
        "alignment": ALIGNMENT_NOTE if seq.has_poses else None,
        "pose_enc": POSE_ENC_NOTE,
        "session": session_info,
        **settings.extra,
    }


def run_sequence(session, seq: FrameSequence, out: Path, settings: StreamSettings) -> dict:
    """Run a sequence through a streaming session and write its outputs into ``out``.

    Args:
        session: an open streaming session (see the module docstring); it is reset first
            and left holding the sequence's last frames.
        seq: from :func:`viewrt.data.load_sequence`.
        out: output folder (created).
        settings: sizes, prefill count, labels.

    Returns:
        The summary (as written to ``out/summary.json``).

    Raises:
        ViewrtError: a frame that cannot be read or has another size than the first (as
            :func:`viewrt.data.iter_frames`), or what the session raises for a frame.
    """
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    session.reset()
    with tqdm(
        total=len(seq),
        desc=seq.name,
        unit="frame",
        disable=not (settings.progress and sys.stderr.isatty()),
        file=sys.stderr,
    ) as bar:
        frames, results = _feed(session, seq, settings, bar)
    summary = _outputs(out, seq, frames, results, settings, dict(session.info()))
    write_json(out / "summary.json", summary)
    return summary
