"""Random posed inputs shared by the tests (fresh each call: the caller's rng decides)."""

from __future__ import annotations

import numpy as np

from viewrt.geometry import input_view, look_at, plucker


def random_cameras(rng: np.random.Generator, n: int, size: int):
    """n random cameras around the origin looking at it: [(c2w, fxfycxcy)]."""
    cams = []
    for _ in range(n):
        eye = rng.normal(size=3)
        eye *= rng.uniform(0.5, 1.5) / np.linalg.norm(eye)
        up = (0.0, 0.0, 1.0) if abs(eye[2]) < 0.9 * np.linalg.norm(eye) else (0.0, 1.0, 0.0)
        f = rng.uniform(0.8, 1.5) * size
        k = [f, f, size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2)]
        cams.append((look_at(eye, rng.normal(scale=0.1, size=3), up), k))
    return cams


def posed_views(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """[n, 9, S, S] float32: random images with the rays of random cameras."""
    return np.stack(
        [
            input_view(rng.uniform(0, 1, (3, size, size)), c, k)
            for c, k in random_cameras(rng, n, size)
        ]
    )


def target_rays(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """[n, 6, S, S] float32 Plücker rays of random target cameras."""
    return np.stack([plucker(c, k, size, size) for c, k in random_cameras(rng, n, size)])
