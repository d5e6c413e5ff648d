"""What the studio does, without HTTP: each page session is a session of
:class:`viewrt.serve.session.SessionManager` (its own renderer and K/V cache, within the
manager's bounds and idle timeout) plus the scene it shows and which frame each cached
view came from. Every answer is the session's state as the server holds it
(:meth:`Studio.state`), read back from the runtime after the action.

Imports viewrt.serve (the session manager), the floor (errors, geometry, metrics) and
viewrt.studio.scenes; never the runtime: the CLI (viewrt/cli/studio.py) gives the manager
its opener (:func:`viewrt.runtime.open`) and the backends on offer
(:class:`BackendChoice`, from the runtime's registry).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from viewrt.errors import ViewrtError
from viewrt.geometry import Camera
from viewrt.metrics import psnr
from viewrt.serve.errors import BadRequest, UnknownSession
from viewrt.serve.session import SessionManager
from viewrt.studio.scenes import Catalogue, LoadedScene, interpolate, png_base64

TIMINGS_KEPT = 60  # latency samples a session keeps for the page's chart
STEPS = ("encode", "cache", "decode")  # the chart's components; the rest of the total is "other"


@dataclass(frozen=True)
class BackendChoice:
    """A backend the page can switch to: a registry configuration ``config`` on an export
    folder (the export itself, or a quantized calib export of it next to it), offered as
    ``id``. ``why``: why it cannot run here (None: it can). The CLI lists them
    (``viewrt.cli.studio.backend_choices``)."""

    id: str
    config: str
    export_dir: Path
    why: str | None

    def public(self) -> dict:
        return {"id": self.id, "available": self.why is None, "why": self.why}


@dataclass
class ViewRecord:
    """A view the session added: the runtime's ``view_id``, the scene ``frame`` it shows,
    ``keyframe``, and whether the page asked for it to be ``pinned``."""

    view_id: int
    frame: int
    keyframe: bool
    pinned: bool = False


@dataclass
class PageSession:
    sid: str
    scene: LoadedScene
    backend: str
    views: list[ViewRecord] = field(default_factory=list)  # in replay order (pinned first)
    timings: deque = field(default_factory=lambda: deque(maxlen=TIMINGS_KEPT))
    render: dict | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Studio:
    """The page's sessions over one export.

    Args:
        manager: the session manager (its export, default backend, opener, bounds, idle
            timeout).
        catalogue: the scenes on offer.
        backends: the backends on offer by id (``viewrt.cli.studio.backend_choices``).
    """

    def __init__(
        self, manager: SessionManager, catalogue: Catalogue, backends: dict[str, BackendChoice]
    ):
        self.manager, self.catalogue = manager, catalogue
        self.backends = dict(backends)
        self._sessions: dict[str, PageSession] = {}
        self._lock = threading.Lock()

    # -- server ---------------------------------------------------------------------------------
    def server(self) -> dict:
        """The export, the scenes, the backends (with why one cannot run), the bounds."""
        m = self.manager.manifest
        return {
            "export": {
                "dir": str(m.dir),
                "preset": m.preset,
                "precision": m.precision,
                "image_size": m.image_size,
                "max_views": m.max_views,
            },  # fmt: skip
            "scenes": self.catalogue.public(),
            "backends": [b.public() for b in self.backends.values()],
            "default_backend": self.manager.backend,
            **self.manager.stats(),
        }

    def _backend(self, name) -> BackendChoice:
        b = self.backends.get(name) if isinstance(name, str) else None
        if b is None:
            raise BadRequest(
                f"unknown backend {name!r}; expected one of {', '.join(self.backends)}"
            )
        if b.why is not None:
            raise ViewrtError(f"backend {name} cannot run here: {b.why}")
        return b

    def _page(self, sid) -> PageSession:
        with self._lock:
            p = self._sessions.get(sid) if isinstance(sid, str) else None
        if p is None:
            self.manager.options(sid)  # SessionGone / UnknownSession as the manager says
            raise UnknownSession(f"unknown session {sid!r}")
        return p

    # -- sessions -------------------------------------------------------------------------------
    def create(self, scene, backend=None, max_views=None, window=None, pinned=0) -> dict:
        """A new page session on ``scene`` (id of the catalogue); returns its state.

        Raises: Refused (a bound), BadRequest / ViewrtError (bad option, unknown scene or
            backend, a scene that cannot be read); nothing is kept.
        """
        choice = self._backend(backend or self.manager.backend)
        loaded = self.catalogue.load(scene)
        sid = self.manager.create(
            max_views=max_views, window=window, pinned=pinned, frame=_frame(loaded),
            backend=choice.config, export_dir=choice.export_dir,
        )  # fmt: skip
        page = PageSession(sid, loaded, choice.id)
        self._forget_ended()
        with self._lock:
            self._sessions[sid] = page
        with page.lock:
            return self._state(page)

    def _forget_ended(self) -> None:
        """Drop the pages of sessions the manager no longer holds (expired, closed)."""
        held = set(self.manager.ids())
        with self._lock:
            for sid in [sid for sid in self._sessions if sid not in held]:
                del self._sessions[sid]

    def close(self, sid) -> dict:
        """Close a page session and release its cache. Raises: UnknownSession, SessionGone."""
        self._page(sid)
        self.manager.close(sid)
        with self._lock:
            self._sessions.pop(sid, None)
        return {"closed": sid}

    def state(self, sid) -> dict:
        """The session's state (see :meth:`_state`). Raises: UnknownSession, SessionGone."""
        page = self._page(sid)
        with page.lock:
            return self._state(page)

    def frames(self, sid) -> dict:
        """The scene's frames as PNG thumbnails (base64), in frame order."""
        page = self._page(sid)
        self.manager.renderer(sid)  # touches the idle clock; raises when gone
        return {"scene": page.scene.entry.id, "frames": [png_base64(x) for x in page.scene.images]}

    # -- views ----------------------------------------------------------------------------------
    def add(self, sid, frame, keyframe=True) -> dict:
        """Add scene frame ``frame`` as a view. Raises the runtime's ViewrtError (full
        cache, ...) with the session unchanged."""
        page = self._page(sid)
        with page.lock:
            image, cam = page.scene.frame(frame)
            vid = self.manager.add_view(sid, image, cam, keyframe=keyframe)
            page.views.append(ViewRecord(vid, frame, bool(keyframe)))
            self._timed(page, "add")
            return self._state(page)

    def remove(self, sid, view_id) -> dict:
        """Remove a cached view. Raises the runtime's ViewrtError (not cached), unchanged."""
        page = self._page(sid)
        with page.lock:
            self.manager.remove_view(sid, view_id)
            self._timed(page, "remove")
            return self._state(page)

    def reset(self, sid) -> dict:
        """Forget every view (the window and pinned settings stay)."""
        page = self._page(sid)
        with page.lock:
            self.manager.renderer(sid).reset()
            page.views.clear()
            page.render = None
            return self._state(page)

    def pin(self, sid, view_id, pinned: bool) -> dict:
        """Pin (or unpin) a cached keyframe: the cache is rebuilt with the pinned views
        added first and ``pinned`` = their number (the runtime pins the first keyframes
        added). Raises: BadRequest for a view that is not a cached keyframe."""
        if not isinstance(pinned, bool):
            raise BadRequest(f"pinned must be true or false, got {pinned!r}")
        page = self._page(sid)
        with page.lock:
            rec = next((v for v in page.views if v.view_id == view_id and v.keyframe), None)
            if rec is None:
                cached = [v.view_id for v in page.views if v.keyframe]
                raise BadRequest(f"view {view_id!r} is not a cached keyframe; cached: {cached}")
            marks = {id(v): v.pinned for v in page.views}
            marks[id(rec)] = pinned
            self._rebuild(page, marks=marks)
            return self._state(page)

    def settings(self, sid, window=None, pinned=0) -> dict:
        """Reopen the cache with another window / pinned count, the same views re-added
        (the first ``pinned`` keyframes are pinned). Raises the runtime's ViewrtError
        (e.g. pinned + window above the capacity) with the session unchanged."""
        page = self._page(sid)
        with page.lock:
            order = sorted(page.views, key=lambda v: not v.pinned)
            keys = [v for v in order if v.keyframe]
            n = pinned if isinstance(pinned, int) and not isinstance(pinned, bool) else 0
            marks = {id(v): (v in keys[:n]) for v in order}
            self._rebuild(page, marks=marks, window=window, pinned=pinned)
            return self._state(page)

    def switch(self, sid, backend) -> dict:
        """Move the session to another backend with the same views (re-added there)."""
        page = self._page(sid)
        with page.lock:
            choice = self._backend(backend)
            marks = {id(v): v.pinned for v in page.views}
            self._rebuild(page, marks=marks, backend=choice.config, export_dir=choice.export_dir)
            page.backend, page.render = choice.id, None
            return self._state(page)

    def scene(self, sid, scene) -> dict:
        """Show another scene: the cache is emptied and the scene's normalization frame set."""
        page = self._page(sid)
        with page.lock:
            loaded = self.catalogue.load(scene)
            self.manager.reopen(sid, frame=_frame(loaded))
            page.scene, page.views, page.render = loaded, [], None
            return self._state(page)

    def _rebuild(self, page: PageSession, marks: dict, **changes) -> None:
        """Reopen the session's renderer with ``changes`` and replay its views, those
        marked pinned first (``pinned`` = their number unless given). All or nothing."""
        order = sorted(page.views, key=lambda v: not marks[id(v)])
        changes.setdefault("pinned", sum(1 for v in order if marks[id(v)] and v.keyframe))
        new: list[ViewRecord] = []

        def replay(r) -> None:  # the new renderer
            for v in order:
                image, cam = page.scene.frame(v.frame)
                vid = r.add_view(image, cam, keyframe=v.keyframe)
                new.append(ViewRecord(vid, v.frame, v.keyframe, marks[id(v)]))

        self.manager.reopen(page.sid, setup=replay, **changes)
        page.views = new
        self._timed(page, "replay")

    # -- render ---------------------------------------------------------------------------------
    def render(self, sid, target) -> dict:
        """Render a target: ``{"frame": i}`` (ground truth and PSNR beside it) or
        ``{"between": [i, j], "t": 0..1}`` (a camera interpolated between two frames).
        Raises: BadRequest for a malformed target, the runtime's ViewrtError (no views)."""
        page = self._page(sid)
        with page.lock:
            cam, gt = _target(page.scene, target)
            image = np.clip(self.manager.render(sid, [cam])[0], 0.0, 1.0)
            self._timed(page, "render")
            page.render = {
                "target": target,
                "image": png_base64(image),
                "truth": None if gt is None else png_base64(gt),
                "psnr": None if gt is None else round(psnr(image, gt), 3),
                "frames": sorted(v.frame for v in page.views),
            }
            return self._state(page)

    # -- state ----------------------------------------------------------------------------------
    def _timed(self, page: PageSession, op: str) -> None:
        t = dict(self.manager.renderer(page.sid).last_timings)
        total = float(t.get("total", 0.0))
        steps = {k: float(t.get(k, 0.0)) for k in STEPS}
        other = max(total - sum(steps.values()), 0.0)
        page.timings.append({"op": op, **steps, "other": round(other, 4), "total": total})

    def _state(self, page: PageSession) -> dict:
        """The session as the runtime holds it (lock held): ``session``, ``scene`` (id, name,
        kind, frames), ``backend`` (the choice's id), ``cache`` (the runtime's info(): views,
        capacity, bytes, window, pinned, backend, device, precision), ``views`` (slot order:
        view_id, frame, keyframe, pinned), ``next_evicts`` (the policy's plan for one more
        keyframe: ``evicts`` or why it would be ``refused``), ``timings`` (ms per step of the
        last calls) and ``render`` (the last render: PNGs, PSNR)."""
        r = self.manager.renderer(page.sid)
        info = self.manager.info(page.sid)
        held = set(info["slots"])
        page.views = [v for v in page.views if v.view_id in held]  # evicted, used up
        by_id = {v.view_id: v for v in page.views}
        pinned_ids = set(info["pinned_ids"])
        return {
            "session": page.sid,
            "scene": {**page.scene.entry.public(), "frames": len(page.scene)},
            "backend": page.backend,
            "cache": _cache(info, r),
            "views": [
                {
                    "view_id": vid,
                    "frame": by_id[vid].frame,
                    "keyframe": by_id[vid].keyframe,
                    "pinned": vid in pinned_ids,
                }  # fmt: skip
                for vid in info["slots"]
            ],
            "next_evicts": _next_evicts(r, by_id),
            "timings": list(page.timings),
            "render": page.render,
        }


def _cache(info: dict, r) -> dict:
    keep = ("views", "max_views", "bytes_used", "bytes_reserved", "bytes_per_view", "window",
            "pinned", "cached_ids", "pinned_ids", "pending_non_keyframe", "backend", "device",
            "precision", "cache_bytes")  # fmt: skip
    return {k: info.get(k) for k in keep} | {"kv_dtype": r.manifest.kv_dtype}


def _next_evicts(r, by_id: dict[int, ViewRecord]) -> dict:
    """What adding one more keyframe would do, from the policy's plan (nothing changes)."""
    try:
        plan = r.cache.plan_add(True)
    except ViewrtError as e:
        return {"refused": str(e), "evicts": []}
    ev = [{"view_id": v, "frame": by_id[v].frame if v in by_id else None} for v in plan.drop]
    return {"refused": None, "evicts": ev, "slot": plan.slot}


def _frame(scene: LoadedScene) -> np.ndarray:
    """The session's normalization frame: from every camera of the scene, so a render is
    the same whichever views were added first."""
    return np.stack([c.c2w for c in scene.cameras])


def _target(scene: LoadedScene, target) -> tuple[Camera, np.ndarray | None]:
    if not isinstance(target, dict):
        raise BadRequest(
            'target: expected {"frame": i} or {"between": [i, j], "t": 0..1}, got '
            f"{type(target).__name__}"
        )
    if set(target) == {"frame"}:
        image, cam = scene.frame(target["frame"])
        return cam, image
    if set(target) == {"between", "t"}:
        pair = target["between"]
        if not isinstance(pair, list) or len(pair) != 2:
            raise BadRequest(f"target.between: expected two frame indices, got {pair!r}")
        a, b = (scene.frame(i)[1] for i in pair)
        try:
            return interpolate(a, b, target["t"]), None
        except ViewrtError as e:
            raise BadRequest(f"target.{e}") from None
    raise BadRequest(
        f'target: expected {{"frame": i}} or {{"between": [i, j], "t": 0..1}}, got keys {sorted(target)}'
    )
