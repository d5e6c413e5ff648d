"""Calibration inputs from posed views of scenes, through the fp32 runtime.

- Encoder samples: the views themselves (``view [1, 9, S, S]``: image and Plücker rays in
  the scene's normalization frame), every frame of every scene.
- Decoder samples: target rays ``[1, Vt, 6, S, S]`` plus the K/V that the fp32 encoder
  produced for the scene's views, read out of the runtime's cache (ONNX Runtime on the CPU:
  the cache buffers are host numpy arrays). Each scene gives one sample per cache size
  (1, 2, 4, ... views), so the past-token axis is calibrated over the range it will see.

Scenes come from a list file (``viewrt.data`` format) or are generated
(:func:`viewrt.data.make_synthetic_list`, at the model's image size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import viewrt.runtime as vrt
from viewrt.data import load_frame, load_scene, load_scene_list, make_synthetic_list
from viewrt.errors import ViewrtError
from viewrt.geometry import NormalizationFrame, input_view, plucker


@dataclass
class CalibrationSet:
    """Feeds for each graph and where they came from.

    Attributes:
        encoder: list of ``{view: float32 [1, 9, S, S]}``.
        decoder: list of ``{target_rays: float32 [1, Vt, 6, S, S], past_*: [1, N*T, H, Dh]}``.
        record: what the manifest records (source, scenes, views per decoder sample, counts).
    """

    encoder: list[dict] = field(default_factory=list)
    decoder: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)


class FeedReader:
    """ONNX Runtime CalibrationDataReader over a list of feeds (one pass)."""

    def __init__(self, feeds: list[dict]):
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._feeds)

    def set_range(self, start_index: int, end_index: int):
        """Serve feeds[start:end] next (ONNX Runtime's strided calibration)."""
        self._it = iter(self._feeds[start_index:end_index])

    def __len__(self):
        return len(self._feeds)


def scene_paths(
    scenes: str | Path | None,
    synthetic: int | None,
    size: int,
    workdir: Path,
    seed: int = 0,
    n_views: int = 12,
) -> tuple[list[Path], str]:
    """Scene JSON paths from a list file, or ``synthetic`` generated scenes in ``workdir``.

    Returns: (paths, a short description for the manifest).
    Raises: ViewrtError for both or neither source given, a missing or empty list, or
        ``synthetic < 1``.
    """
    if (scenes is None) == (synthetic is None):
        raise ViewrtError(
            "give calibration scenes with exactly one of --list FILE or --synthetic N"
        )
    if synthetic is not None:
        if synthetic < 1:
            raise ViewrtError(f"--synthetic: expected at least 1 scene, got {synthetic}")
        lst = make_synthetic_list(
            workdir, synthetic, n_views=n_views, size=size, seed=seed, prefix="calib"
        )
        return (
            load_scene_list(lst),
            f"synthetic: {synthetic} scene(s) of {n_views} views at {size}px, seeds {seed}..{seed + synthetic - 1}",
        )
    paths = load_scene_list(scenes)
    if not paths:
        raise ViewrtError(f"--scenes {scenes}: the list names no scene")
    return paths, f"list: {Path(scenes).resolve()} ({len(paths)} scene(s))"


def _views_schedule(n_frames: int, max_views: int) -> list[int]:
    """Cache sizes sampled per scene: 1, 2, 4, ... up to what the scene and export allow
    (at least one frame is left over as a target)."""
    top = max(1, min(max_views, n_frames - 1))
    out, n = [], 1
    while n < top:
        out.append(n)
        n *= 2
    return sorted({*out, top})


def collect(
    export_dir: str | Path,
    paths: list[Path],
    targets: int = 4,
    max_samples: int = 256,
    progress: bool = False,
) -> CalibrationSet:
    """Run the fp32 export view by view over each scene and keep what each graph is fed.

    Args:
        export_dir: the fp32 export (opened with ``viewrt.runtime.open(.., "ort")``, CPU).
        paths: scene JSON paths.
        targets: target views per decoder sample (frames not in the cache, up to this many).
        max_samples: cap on encoder and on decoder samples each.
        progress: tqdm bar over scenes (shown only on a terminal).
    Returns: a :class:`CalibrationSet`.
    Raises: ViewrtError for an unreadable scene or image, or a scene with fewer than 2 frames.
    """
    cs = CalibrationSet()
    with vrt.open(export_dir, "ort") as r:
        m, size, T = r.manifest, r.size, r.manifest.tokens_per_view
        past = m.past_names
        views_used: list[int] = []
        for path in tqdm(paths, desc="calibration scenes", disable=None if progress else True):
            scene = load_scene(path)
            if len(scene.frames) < 2:
                raise ViewrtError(
                    f"scene {scene.name!r} ({path}): calibration needs at least 2 frames (views and a target), got {len(scene.frames)}"
                )
            frames = [load_frame(f, size) for f in scene.frames]
            frame = NormalizationFrame.from_cameras(np.stack([c2w for _, _, c2w in frames]))
            for image, fxfycxcy, c2w in frames:
                if len(cs.encoder) < max_samples:
                    cs.encoder.append(
                        {
                            m.view_input: input_view(image, frame.apply(c2w), fxfycxcy)[
                                None
                            ].astype(np.float32)
                        }
                    )
            # the views are spread over the scene; the targets are frames between them
            order = [int(i) for i in np.linspace(0, len(frames) - 1, len(frames)).round()]
            for n in _views_schedule(len(frames), r.max_views):
                if len(cs.decoder) >= max_samples:
                    break
                ins = sorted({int(i) for i in np.linspace(0, len(frames) - 1, n).round()})
                tgt = [i for i in order if i not in ins][:targets]
                if not tgt:
                    continue
                r.reset()
                r.frame = frame
                for i in ins:
                    image, fxfycxcy, c2w = frames[i]
                    r.add_view(image, vrt.Camera(c2w, fxfycxcy))
                k = len(ins)
                kv = {
                    name: np.ascontiguousarray(buf.host[:, : k * T]).copy()
                    for name, buf in zip(past, r.cache.buffers)
                }
                rays = np.stack(
                    [plucker(frame.apply(frames[i][2]), frames[i][1], size, size) for i in tgt]
                )[None]
                cs.decoder.append({m.target_input: rays.astype(np.float32), **kv})
                views_used.append(k)
    cs.record = {
        "encoder_samples": len(cs.encoder),
        "decoder_samples": len(cs.decoder),
        "decoder_views": sorted(set(views_used)),
        "targets_per_sample": targets,
        "scenes": len(paths),
    }
    return cs
