"""A synthetic scene generator: ray-casts a small textured scene with exactly known cameras
(:func:`synthetic_cameras`, :func:`synthetic_views`), for tests and smoke runs without any
dataset. Only numpy; the files are written by :mod:`viewrt.data.writers`."""

from __future__ import annotations

from typing import Any

import numpy as np

from viewrt.errors import ViewrtError
from viewrt.geometry import look_at, rays

__all__ = ["STYLES", "TRAJECTORIES", "synthetic_cameras", "synthetic_sequence", "synthetic_views"]


_UP = np.array([0.0, 0.0, 1.0])
_LOOK_TARGET = np.array([0.0, 0.0, 0.45])


TRAJECTORIES = ("arc", "video")


def synthetic_cameras(
    n_views: int = 8, size: int = 64, seed: int = 0, trajectory: str = "arc"
) -> tuple[np.ndarray, np.ndarray]:
    """The exact cameras :func:`make_synthetic_scene` renders with.

    Trajectory "arc": ``n_views`` cameras on an arc of 110-145 degrees (start angle and span
    drawn from ``seed``) around the world origin, radius about 4, heights varying in about
    1.0-1.9 (world +z is up, the ground is z = 0), all looking at ``(0, 0, 0.45)``. The arc,
    not a full circle, keeps the mean viewing direction well defined for scene
    normalization.

    Trajectory "video": a hand-held walk for frame-by-frame models: the camera moves
    smoothly over 35-60 degrees of azimuth whatever the frame count (consecutive frames
    overlap as in a video), radius 3.6-4.4 and height 1.1-1.8 varying slowly, looking at a
    point that drifts within 0.3 of ``(0, 0, 0.45)``.

    Args:
        n_views: number of cameras (>= 1).
        size: image side in pixels; ``fx = fy = size``, ``cx = cy = size / 2``.
        seed: integer seed.
        trajectory: "arc" or "video".

    Returns:
        ``(c2ws float64 [n_views, 4, 4] OpenCV, fxfycxcy float64 [4])``.

    Raises:
        ViewrtError: a bad count, size or trajectory.
    """
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ViewrtError(f"n_views: expected a positive integer, got {n_views!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ViewrtError(f"size: expected a positive integer, got {size!r}")
    if trajectory not in TRAJECTORIES:
        raise ViewrtError(
            f"trajectory: expected one of {', '.join(TRAJECTORIES)}, got {trajectory!r}"
        )
    if trajectory == "video":
        return _video_cameras(n_views, size, seed)
    rng = np.random.default_rng([int(seed), 1])
    start = rng.uniform(0.0, 2.0 * np.pi)
    span = np.deg2rad(rng.uniform(110.0, 145.0))
    phase = rng.uniform(0.0, 2.0 * np.pi)
    s = np.linspace(0.0, 1.0, n_views) if n_views > 1 else np.zeros(1)
    azimuth = start + span * s
    radius = 4.0 + rng.uniform(-0.3, 0.3, n_views)
    height = 1.45 + 0.35 * np.sin(2.0 * np.pi * s + phase) + rng.uniform(-0.08, 0.08, n_views)
    c2ws = np.stack(
        [
            look_at([r * np.cos(a), r * np.sin(a), h], _LOOK_TARGET, _UP)
            for a, r, h in zip(azimuth, radius, height)
        ]
    )
    fxfycxcy = np.array([float(size), float(size), size / 2.0, size / 2.0])
    return c2ws, fxfycxcy


def _video_cameras(n_views: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The "video" trajectory of :func:`synthetic_cameras` (its own random stream)."""
    rng = np.random.default_rng([int(seed), 3])
    start = rng.uniform(0.0, 2.0 * np.pi)
    span = np.deg2rad(rng.uniform(35.0, 60.0)) * rng.choice([-1.0, 1.0])
    p = rng.uniform(0.0, 2.0 * np.pi, 4)  # phases of the slow wobbles
    s = np.linspace(0.0, 1.0, n_views) if n_views > 1 else np.zeros(1)
    azimuth = start + span * s
    radius = 4.0 + 0.4 * np.sin(np.pi * s + p[0])
    height = 1.45 + 0.35 * np.sin(1.5 * np.pi * s + p[1])
    drift = 0.3 * np.stack([np.sin(np.pi * s + p[2]), np.cos(np.pi * s + p[3]), 0.0 * s], axis=1)
    c2ws = np.stack(
        [
            look_at([r * np.cos(a), r * np.sin(a), h], _LOOK_TARGET + d, _UP)
            for a, r, h, d in zip(azimuth, radius, height, drift)
        ]
    )
    return c2ws, np.array([float(size), float(size), size / 2.0, size / 2.0])


def _hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = np.sin(ix * 127.1 + iy * 311.7 + iz * 74.7 + salt * 19.19) * 43758.5453
    return h - np.floor(h)


def _value_noise(p: np.ndarray, salt: float) -> np.ndarray:
    """Smooth trilinear value noise in [0, 1] at points p [M, 3]."""
    base = np.floor(p)
    f = p - base
    f = f * f * (3.0 - 2.0 * f)
    ix, iy, iz = base[:, 0], base[:, 1], base[:, 2]
    out = np.zeros(len(p))
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1.0 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1.0 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1.0 - f[:, 2]
                out += wx * wy * wz * _hash01(ix + dx, iy + dy, iz + dz, salt)
    return out


def _texture(kind: str, p: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Albedo [M, 3] of a procedural texture at world points p [M, 3]."""
    c0, c1 = params["colors"]
    if kind == "checker":
        q = np.floor(p / params["period"]).sum(axis=1)
        w = np.mod(q, 2.0)
    elif kind == "stripes":
        w = (np.sin(p @ params["axis"] * params["freq"]) > 0.0).astype(np.float64)
    else:  # noise
        q = p * (params["freq"] / 3.0)
        salt = params["salt"]
        w = 0.65 * _value_noise(q, salt) + 0.35 * _value_noise(2.3 * q, salt + 1.0)
        w = np.clip((w - 0.25) / 0.5, 0.0, 1.0)
    out = c0[None] * (1.0 - w[:, None]) + c1[None] * w[:, None]
    if "colors_b" in params:  # the other side of the object's split plane
        b0, b1 = params["colors_b"]
        side = (p - params["center"]) @ params["split"] < 0.0
        out[side] = b0[None] * (1.0 - w[side, None]) + b1[None] * w[side, None]
    return out


def _random_color(rng: np.random.Generator, lo: float = 0.08, hi: float = 0.95) -> np.ndarray:
    return rng.uniform(lo, hi, 3)


STYLES = ("classic", "multiview")


def _check_style(style: Any) -> str:
    if style not in STYLES:
        raise ViewrtError(f"style: expected one of {', '.join(STYLES)}, got {style!r}")
    return style


def _multiview_extras(layout: dict[str, Any], seed: int) -> None:
    """Make one view insufficient (style "multiview"), from a separate random stream so
    the classic draws are untouched: patterns coarse enough to resolve at 64 px, objects
    with a different colour pair on each side of a vertical plane, a ground whose tint
    varies over metres, and a horizon whose colour varies with azimuth."""
    rng = np.random.default_rng([int(seed), 2])
    for obj in layout["objects"]:
        prm = obj["params"]
        prm["period"] = float(rng.uniform(0.3, 0.5))
        prm["freq"] = float(rng.uniform(5.0, 9.0))
        ang = rng.uniform(0.0, 2.0 * np.pi)
        prm["split"] = np.array([np.cos(ang), np.sin(ang), 0.0])
        prm["center"] = obj["center"] if obj["kind"] == "sphere" else 0.5 * (obj["lo"] + obj["hi"])
        c0 = _random_color(rng)
        c1 = _random_color(rng)
        while np.linalg.norm(c1 - c0) < 0.4:
            c1 = _random_color(rng)
        prm["colors_b"] = (c0, c1)
    layout["ground"]["tint"] = (_random_color(rng, 0.2, 0.9), _random_color(rng, 0.2, 0.9))
    layout["ground"]["tint_salt"] = float(rng.uniform(0.0, 100.0))
    layout["sky_azimuth"] = (rng.uniform(0.0, 2.0 * np.pi, 3), float(rng.uniform(0.2, 0.35)))


def _synthetic_layout(seed: int, style: str = "classic") -> dict[str, Any]:
    """Objects, textures, light and sky of a synthetic scene (deterministic in seed)."""
    rng = np.random.default_rng([int(seed), 0])
    n_obj = int(rng.integers(2, 5))
    kinds = ["sphere", "box"] + [str(rng.choice(["sphere", "box"])) for _ in range(n_obj - 2)]
    textures = ["checker", "stripes", "noise"]
    objects: list[dict[str, Any]] = []
    placed: list[tuple[np.ndarray, float]] = []
    for kind in kinds:
        if kind == "sphere":
            r = float(rng.uniform(0.3, 0.55))
            extent = r
        else:
            half = rng.uniform(0.2, 0.45, 2)
            h = float(rng.uniform(0.3, 0.9))
            extent = float(np.hypot(*half))
        for _ in range(200):
            rad = rng.uniform(0.0, 1.3)
            ang = rng.uniform(0.0, 2.0 * np.pi)
            xy = np.array([rad * np.cos(ang), rad * np.sin(ang)])
            if all(np.linalg.norm(xy - q) > extent + e + 0.1 for q, e in placed):
                break
        placed.append((xy, extent))
        tex = str(rng.choice(textures))
        axis = rng.normal(size=3)
        c0 = _random_color(rng)
        c1 = _random_color(rng)
        while np.linalg.norm(c1 - c0) < 0.4:  # keep the pattern visible
            c1 = _random_color(rng)
        params = {
            "colors": (c0, c1),
            "period": float(rng.uniform(0.12, 0.25)),
            "freq": float(rng.uniform(12.0, 30.0)),
            "axis": axis / np.linalg.norm(axis),
            "salt": float(rng.uniform(0.0, 100.0)),
        }
        obj: dict[str, Any] = {"kind": kind, "texture": tex, "params": params}
        if kind == "sphere":
            obj["center"] = np.array([xy[0], xy[1], r])
            obj["radius"] = r
        else:
            obj["lo"] = np.array([xy[0] - half[0], xy[1] - half[1], 0.0])
            obj["hi"] = np.array([xy[0] + half[0], xy[1] + half[1], h])
        objects.append(obj)
    ground = {
        "colors": (_random_color(rng, 0.25, 0.75), _random_color(rng, 0.25, 0.75)),
        "period": float(rng.uniform(0.4, 0.7)),
    }
    light_az = rng.uniform(0.0, 2.0 * np.pi)
    light_el = np.deg2rad(rng.uniform(35.0, 65.0))
    light = np.array(
        [np.cos(light_el) * np.cos(light_az), np.cos(light_el) * np.sin(light_az), np.sin(light_el)]
    )
    sky = (
        np.array([0.85, 0.88, 0.95]) + rng.uniform(-0.05, 0.05, 3),
        np.array([0.25, 0.45, 0.85]) + rng.uniform(-0.1, 0.1, 3),
    )
    layout = {"objects": objects, "ground": ground, "light": light, "sky": sky, "ambient": 0.3}
    if style == "multiview":
        _multiview_extras(layout, seed)
    return layout


def _intersect(obj: dict[str, Any], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance (inf where none) and outward normal of one primitive."""
    eps = 1e-6
    if obj["kind"] == "sphere":
        oc = o - obj["center"]
        b = np.einsum("ij,ij->i", oc, d)
        c = np.einsum("ij,ij->i", oc, oc) - obj["radius"] ** 2
        disc = b * b - c
        ok = disc >= 0.0
        sq = np.sqrt(np.where(ok, disc, 0.0))
        t = np.where(-b - sq > eps, -b - sq, -b + sq)
        t = np.where(ok & (t > eps), t, np.inf)
        hit = np.isfinite(t)
        normal = np.zeros_like(o)
        normal[hit] = (o[hit] + t[hit, None] * d[hit] - obj["center"]) / obj["radius"]
        return t, normal
    safe = np.where(np.abs(d) < 1e-12, 1e-12, d)
    inv = 1.0 / safe
    t1 = (obj["lo"] - o) * inv
    t2 = (obj["hi"] - o) * inv
    tnear = np.minimum(t1, t2)
    tfar = np.maximum(t1, t2)
    t_in = tnear.max(axis=1)
    t_out = tfar.min(axis=1)
    t = np.where(t_in > eps, t_in, t_out)
    t = np.where((t_out >= t_in) & (t > eps), t, np.inf)
    axis = tnear.argmax(axis=1)
    normal = np.zeros_like(o)
    rows = np.arange(len(o))
    normal[rows, axis] = -np.sign(safe[rows, axis])
    return t, normal


def _render(layout: dict[str, Any], c2w: np.ndarray, fxfycxcy: np.ndarray, size: int) -> np.ndarray:
    """Ray-cast one view; float [3, size, size] in [0, 1]."""
    return _render_with_depth(layout, c2w, fxfycxcy, size)[0]


def _render_with_depth(
    layout: dict[str, Any], c2w: np.ndarray, fxfycxcy: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast one view: (float [3, size, size] in [0, 1], z-depth float [size, size]:
    hit distance along the unit ray times the ray's cosine with the optical axis, 0 where
    the ray meets only sky)."""
    origins, dirs = rays(c2w, fxfycxcy, size, size)
    o = origins.reshape(-1, 3)
    d = dirs.reshape(-1, 3)
    best_t, best_id, normal = _nearest_hits(layout, o, d)
    color = _sky(layout, d)
    hit = best_id >= 0
    p = o[hit] + best_t[hit, None] * d[hit]
    nrm = normal[hit]
    albedo = _albedo(layout, p, nrm, best_id[hit], best_t[hit])
    color[hit] = albedo * _shade(layout, p, nrm)[:, None]
    img = np.clip(color, 0.0, 1.0).reshape(size, size, 3)
    z = np.where(hit, best_t * (d @ np.asarray(c2w, np.float64)[:3, 2]), 0.0)
    return img.transpose(2, 0, 1), z.reshape(size, size)


def _nearest_hits(
    layout: dict[str, Any], o: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ray [M]: distance of the nearest hit (inf: none), what it hit (-1 sky, 0 ground,
    k+1 object k) and the surface normal there [M, 3]."""
    n = len(o)
    best_t = np.full(n, np.inf)
    best_id = np.full(n, -1)  # -1 sky, 0 ground, k+1 object k
    normal = np.zeros((n, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(d[:, 2] < -1e-9, -o[:, 2] / d[:, 2], np.inf)
    tg = np.where(tg > 1e-6, tg, np.inf)
    ground_hit = tg < best_t
    best_t[ground_hit] = tg[ground_hit]
    best_id[ground_hit] = 0
    normal[ground_hit] = _UP
    for k, obj in enumerate(layout["objects"]):
        t, nk = _intersect(obj, o, d)
        closer = t < best_t
        best_t[closer] = t[closer]
        best_id[closer] = k + 1
        normal[closer] = nk[closer]
    return best_t, best_id, normal


def _sky(layout: dict[str, Any], d: np.ndarray) -> np.ndarray:
    """Sky colour [M, 3] along ray directions d [M, 3]: horizon to zenith gradient."""
    horizon, zenith = layout["sky"]
    w = np.sqrt(np.clip(d[:, 2], 0.0, 1.0))[:, None]
    if "sky_azimuth" in layout:  # horizon colour that changes with the ray's azimuth
        phases, amp = layout["sky_azimuth"]
        az = np.arctan2(d[:, 1], d[:, 0])[:, None]
        horizon = np.clip(horizon[None] - amp + amp * np.cos(az + phases[None]), 0.0, 1.0)
    return horizon * (1.0 - w) + zenith[None] * w


def _albedo(
    layout: dict[str, Any], p: np.ndarray, nrm: np.ndarray, ids: np.ndarray, dist: np.ndarray
) -> np.ndarray:
    """Surface colour [M, 3] at hit points p [M, 3] (normals nrm, ids and distances as
    :func:`_nearest_hits`); the ground fades to its mean colour far away."""
    p_tex = p - 1e-4 * nrm  # just inside the surface: no texture-cell ties on flat faces
    albedo = np.zeros_like(p)
    g = ids == 0
    if g.any():
        gc = _texture("checker", p_tex[g], layout["ground"])
        if "tint" in layout["ground"]:  # metre-scale tint: each view sees its own patch of ground
            t0, t1 = layout["ground"]["tint"]
            v = np.clip(
                (_value_noise(p_tex[g] * 0.6, layout["ground"]["tint_salt"]) - 0.2) / 0.6, 0.0, 1.0
            )[:, None]
            chk = np.mod(np.floor(p_tex[g] / layout["ground"]["period"]).sum(axis=1), 2.0)[:, None]
            gc = (0.8 + 0.2 * chk) * (t0[None] * (1.0 - v) + t1[None] * v)
        fade = np.clip((dist[g] - 6.0) / 10.0, 0.0, 1.0)[:, None]
        mean = 0.5 * (layout["ground"]["colors"][0] + layout["ground"]["colors"][1])
        if "tint" in layout["ground"]:
            mean = 0.45 * (layout["ground"]["tint"][0] + layout["ground"]["tint"][1])
        albedo[g] = gc * (1.0 - fade) + mean[None] * fade
    for k, obj in enumerate(layout["objects"]):
        sel = ids == k + 1
        if sel.any():
            albedo[sel] = _texture(obj["texture"], p_tex[sel], obj["params"])
    return albedo


def _shade(layout: dict[str, Any], p: np.ndarray, nrm: np.ndarray) -> np.ndarray:
    """Light factor [M]: ambient plus Lambertian from the directional light where no
    object casts a shadow on p."""
    light = layout["light"]
    lambert = np.clip(nrm @ light, 0.0, None)
    shadow_o = p + 1e-4 * nrm
    shadow_d = np.broadcast_to(light, shadow_o.shape)
    lit = np.ones(len(p), dtype=bool)
    for obj in layout["objects"]:
        t, _ = _intersect(obj, shadow_o, shadow_d)
        lit &= ~np.isfinite(t)
    amb = layout["ambient"]
    return amb + (1.0 - amb) * lambert * lit


def synthetic_views(
    n_views: int = 8, size: int = 64, seed: int = 0, style: str = "classic"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The views of a synthetic scene in memory (what :func:`make_synthetic_scene` writes,
    before 8-bit quantization).

    Args:
        n_views, size, seed: as :func:`synthetic_cameras`.
        style: "classic" (the original scenes) or "multiview" (scenes one view cannot
            explain: coarse patterns, objects coloured differently on each side, a ground
            tint that varies over metres and a horizon colour that varies with azimuth;
            same cameras and objects as "classic" for a seed).

    Returns:
        ``(images float64 [n_views, 3, size, size] in [0, 1], c2ws float64 [n_views, 4, 4],
        fxfycxcy float64 [4])``.

    Raises:
        ViewrtError: on a bad count, size or style.
    """
    style = _check_style(style)
    c2ws, fxfycxcy = synthetic_cameras(n_views, size, seed)
    layout = _synthetic_layout(seed, style)
    images = np.stack([_render(layout, c2w, fxfycxcy, size) for c2w in c2ws])
    return images, c2ws, fxfycxcy


def synthetic_sequence(
    n_frames: int = 16,
    size: int = 64,
    seed: int = 0,
    style: str = "classic",
    trajectory: str = "video",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic frame sequence with its ground truth: images, cameras and z-depth.

    Same scene as :func:`synthetic_views` for ``(seed, style)``; the cameras follow
    ``trajectory`` (:func:`synthetic_cameras`).

    Args:
        n_frames, size, seed: as :func:`synthetic_cameras` (``n_views``).
        style: as :func:`synthetic_views`.
        trajectory: "video" (small steps, for frame-by-frame models) or "arc".

    Returns:
        ``(images float64 [n_frames, 3, size, size] in [0, 1], c2ws float64
        [n_frames, 4, 4] OpenCV, fxfycxcy float64 [4], depths float32 [n_frames, size,
        size])``: depth is the z-depth (distance along the optical axis, world units) of
        the surface each pixel centre's ray meets first, 0 where it meets none (sky).

    Raises:
        ViewrtError: on a bad count, size, style or trajectory.
    """
    style = _check_style(style)
    c2ws, fxfycxcy = synthetic_cameras(n_frames, size, seed, trajectory)
    layout = _synthetic_layout(seed, style)
    frames = [_render_with_depth(layout, c2w, fxfycxcy, size) for c2w in c2ws]
    images = np.stack([img for img, _ in frames])
    depths = np.stack([z for _, z in frames]).astype(np.float32)
    return images, c2ws, fxfycxcy, depths
