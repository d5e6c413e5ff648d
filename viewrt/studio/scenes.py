"""The scenes a studio page can pick: synthetic scenes made on the spot
(:func:`viewrt.data.synthetic_views`) and the scenes of a list file (dataset format,
:func:`viewrt.data.load_scene`), each loaded at the model's image size when first picked.

Also the free camera between two frames (:func:`interpolate`) and thumbnails.

Imports viewrt.data (numpy, PIL) and viewrt.geometry; scipy (its rotation slerp) inside
:func:`interpolate`, so that ``viewrt --help`` does not load it.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from viewrt.data import STYLES, DataRoots, load_frame, load_scene, load_scene_list, synthetic_views
from viewrt.errors import ViewrtError
from viewrt.geometry import Camera, image_to_uint8

SYNTHETIC_SEED = 900000  # far from the seeds training draws from (as `make demo`)
SYNTHETIC_FRAMES = 8
_LOADED = 8  # scenes kept in memory


@dataclass(frozen=True)
class SceneEntry:
    """One scene of the catalogue: ``id`` (what the API names it by), ``name``, and either
    a synthetic ``(seed, style)`` or a scene JSON ``path``."""

    id: str
    name: str
    seed: int | None = None
    style: str | None = None
    path: Path | None = None

    def public(self) -> dict:
        kind = "synthetic" if self.path is None else "file"
        return {"id": self.id, "name": self.name, "kind": kind}


@dataclass
class LoadedScene:
    """A scene's frames at the model size: ``images`` float32 ``[N, 3, S, S]`` in [0, 1],
    ``cameras`` (N Cameras in the dataset's convention)."""

    entry: SceneEntry
    images: np.ndarray
    cameras: list[Camera]

    def __len__(self) -> int:
        return len(self.cameras)

    def frame(self, index) -> tuple[np.ndarray, Camera]:
        """(image, camera) of frame ``index``. Raises ViewrtError for a bad index."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
            raise ViewrtError(
                f"frame must be an integer in 0..{len(self) - 1} (scene {self.entry.name}), "
                f"got {index!r}"
            )
        return self.images[index], self.cameras[index]


class Catalogue:
    """The scenes on offer and a small cache of the loaded ones (thread-safe).

    Args:
        size: the model's image size (pixels).
        synthetic: how many synthetic scenes (seeds from 900000, styles in turn).
        list_file: a scene list file (one scene JSON per line), or None.
    Raises: ViewrtError when the list file cannot be read or names no scene.
    """

    def __init__(self, size: int, synthetic: int = 4, list_file: str | Path | None = None):
        self.size = size
        self.entries: dict[str, SceneEntry] = {}
        for i in range(synthetic):
            style = STYLES[i % len(STYLES)]
            seed = SYNTHETIC_SEED + i
            e = SceneEntry(f"synthetic-{style}-{seed}", f"{style} #{seed}", seed, style)
            self.entries[e.id] = e
        self._roots = None
        if list_file is not None:
            self._roots = DataRoots().for_list(list_file)
            for i, path in enumerate(load_scene_list(list_file)):
                e = SceneEntry(
                    f"file-{i}", f"{Path(path).parent.name}/{Path(path).name}", path=Path(path)
                )
                self.entries[e.id] = e
        if not self.entries:
            raise ViewrtError("no scenes: ask for synthetic scenes or give a scene list")
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, LoadedScene] = OrderedDict()

    def public(self) -> list[dict]:
        return [e.public() for e in self.entries.values()]

    def load(self, scene_id) -> LoadedScene:
        """The scene's frames at the model size (read once, then kept while used).

        Raises: ViewrtError for an unknown id, or a scene file or image that cannot be read
            (a file removed since the list was read included).
        """
        if not isinstance(scene_id, str) or scene_id not in self.entries:
            raise ViewrtError(f"unknown scene {scene_id!r}; see the scene list of GET /api/server")
        with self._lock:
            if scene_id in self._loaded:
                self._loaded.move_to_end(scene_id)
                return self._loaded[scene_id]
        scene = self._read(self.entries[scene_id])
        with self._lock:
            self._loaded[scene_id] = scene
            while len(self._loaded) > _LOADED:
                self._loaded.popitem(last=False)
        return scene

    def _read(self, e: SceneEntry) -> LoadedScene:
        if e.path is None:
            images, c2ws, k = synthetic_views(SYNTHETIC_FRAMES, self.size, e.seed, e.style)
            cams = [Camera(c, k) for c in c2ws]
            return LoadedScene(e, images.astype(np.float32), cams)
        scene = load_scene(e.path, self._roots)
        frames = [load_frame(f, self.size) for f in scene.frames]
        images = np.stack([f[0] for f in frames]).astype(np.float32)
        return LoadedScene(e, images, [Camera(f[2], f[1]) for f in frames])


def interpolate(a: Camera, b: Camera, t) -> Camera:
    """The camera a fraction ``t`` of the way from ``a`` to ``b``: rotation by slerp,
    position and intrinsics linearly.

    Raises: ViewrtError when ``t`` is not a number in [0, 1].
    """
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
        raise ViewrtError(f"t must be a number in [0, 1], got {t!r}")
    from scipy.spatial.transform import Rotation, Slerp

    rots = Rotation.from_matrix(np.stack([a.c2w[:3, :3], b.c2w[:3, :3]]))
    c2w = np.eye(4)
    c2w[:3, :3] = Slerp([0.0, 1.0], rots)([float(t)]).as_matrix()[0]
    c2w[:3, 3] = (1 - t) * a.c2w[:3, 3] + t * b.c2w[:3, 3]
    return Camera(c2w, (1 - t) * a.fxfycxcy + t * b.fxfycxcy)


def png_base64(image: np.ndarray) -> str:
    """base64 of an 8-bit RGB PNG of a float ``[3, S, S]`` image in [0, 1] (rounded to the
    nearest 8-bit value, as :func:`viewrt.geometry.image_to_uint8`)."""
    buf = io.BytesIO()
    Image.fromarray(image_to_uint8(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
