"""Sessions of renderers keyed by id: the engine-neutral core of ``viewrt serve``.

A session holds one renderer (its own K/V cache) between calls, opened by the ``opener``
the manager is given: :func:`viewrt.runtime.open`, passed in by the CLI (viewrt/cli/serve.py,
viewrt/cli/studio.py), which is the only code that composes the layers.
The manager bounds the number of sessions and the total cache bytes they reserve (from
the manifest's arithmetic: ``kv_bytes_per_view * max_views`` per session), closes
sessions idle for longer than a timeout, and refuses with a message that names the bound
that was hit. It knows nothing of Ray or HTTP: the Ray Serve application
(:mod:`viewrt.serve.app`) and any other front end (a local web page) wrap it.

Imports the floor (errors, geometry), the contract's manifest loader, numpy and the standard
library only: never the runtime.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viewrt.contract.manifest import load_manifest
from viewrt.errors import ViewrtError
from viewrt.geometry import Camera
from viewrt.serve.errors import BadRequest, Refused, SessionGone, UnknownSession

_MiB = 2**20
_OPTION_NAMES = ("max_views", "window", "pinned", "frame", "backend", "export_dir")
_REMEMBERED = 4096  # ended session ids kept to answer "gone" rather than "unknown"

# opener(export_dir, *, backend, max_views, window, pinned, frame, **open_options) -> a
# renderer with the runtime's API (viewrt.runtime.open and viewrt.runtime.Renderer)
Opener = Callable[..., Any]


@dataclass(frozen=True)
class Limits:
    """Bounds of one session manager (one replica).

    Attributes:
        max_sessions: sessions held at once.
        max_cache_bytes: K/V cache bytes all sessions may reserve together.
        idle_timeout_s: a session not called for this many seconds is closed.
    """

    max_sessions: int = 16
    max_cache_bytes: int = 1024 * _MiB
    idle_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_cache_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ViewrtError(f"{name} must be a positive integer, got {v!r}")
        t = self.idle_timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ViewrtError(f"idle_timeout_s must be a positive number of seconds, got {t!r}")


@dataclass
class _Session:
    renderer: Any | None  # a renderer with the runtime's API; None while it opens
    cache_bytes: int
    created: float
    last_used: float
    options: dict = field(default_factory=dict)  # how it was opened (reopen() starts from it)


class SessionManager:
    """Renderers of one export, one per session, within :class:`Limits`.

    Thread-safe: the table is guarded by a lock, and each renderer serializes its own calls,
    so sessions run concurrently and the calls of one session one after the other.

    Args:
        export_dir: the export folder every session opens.
        backend: runtime backend name (as :func:`viewrt.runtime.open`).
        limits: the bounds.
        open_options: more keyword arguments of the opener for every session (e.g.
            ``threads``, ``device``); the per-session ones (``max_views``, ``window``,
            ``pinned``, ``frame``, ``backend``) come with :meth:`create`.
        opener: opens a session's renderer, called as
            ``opener(export_dir, backend=..., max_views=..., window=..., pinned=...,
            frame=..., **open_options)``: :func:`viewrt.runtime.open`, passed in by the CLI
            (this layer does not import the runtime).
        id_prefix: prefix of every session id (a front end routes on it).
        clock: seconds, monotonic (injectable for tests of the idle timeout).
    Raises:
        ViewrtError: the export folder cannot be read (from the manifest).
    """

    def __init__(
        self,
        export_dir: str | Path,
        backend: str = "ort",
        limits: Limits | None = None,
        open_options: dict | None = None,
        *,
        opener: Opener,
        id_prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.export_dir = Path(export_dir)
        self.backend = backend
        self.limits = limits or Limits()
        self.open_options = dict(open_options or {})
        if not callable(opener):
            raise ViewrtError(f"opener must be callable (viewrt.runtime.open), got {opener!r}")
        self.opener = opener
        self.id_prefix = id_prefix
        self.manifest = load_manifest(self.export_dir)
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # id -> why it is gone

    # -- table ----------------------------------------------------------------------------------
    def session_bytes(self, max_views: int | None) -> int:
        """K/V cache bytes a session of ``max_views`` views reserves (None: the export's)."""
        n = self.manifest.max_views if max_views is None else max_views
        return int(self.manifest.kv_bytes_per_view) * int(n)

    def _used_bytes(self) -> int:
        return sum(s.cache_bytes for s in self._sessions.values())

    def _admit(self, need: int) -> None:
        """Refuse a new session of ``need`` cache bytes that a bound does not allow (lock held)."""
        lim = self.limits
        if len(self._sessions) >= lim.max_sessions:
            raise Refused(
                f"session refused: this server holds {len(self._sessions)} sessions, its bound "
                f"(max_sessions {lim.max_sessions}); close one or wait for an idle one to expire"
            )
        used = self._used_bytes()
        if used + need > lim.max_cache_bytes:
            raise Refused(
                f"session refused: its K/V cache needs {need / _MiB:.2f} MiB, and "
                f"{used / _MiB:.2f} of the {lim.max_cache_bytes / _MiB:.2f} MiB bound "
                "(max_cache_bytes) are reserved; ask for fewer max_views or close a session"
            )

    def _end(self, sid: str, why: str) -> _Session | None:
        """Drop a session from the table and remember why (lock held)."""
        s = self._sessions.pop(sid, None)
        self._ended[sid] = why
        while len(self._ended) > _REMEMBERED:
            self._ended.popitem(last=False)
        return s

    def _get(self, sid) -> _Session:
        """The live session of that id, its idle clock reset; expired ones are closed first."""
        if not isinstance(sid, str):
            raise BadRequest(f"session id must be a string, got {type(sid).__name__}")
        self.sweep()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None or s.renderer is None:
                if sid in self._ended:
                    raise SessionGone(f"session {sid} is gone: {self._ended[sid]}")
                raise UnknownSession(f"unknown session {sid!r}")
            s.last_used = self._clock()
            return s

    def sweep(self) -> list[str]:
        """Close every session idle for longer than the timeout; returns their ids."""
        now = self._clock()
        with self._lock:
            old = [
                sid
                for sid, s in self._sessions.items()
                if s.renderer is not None and now - s.last_used > self.limits.idle_timeout_s
            ]
            gone = [
                self._end(sid, f"closed after {self.limits.idle_timeout_s:g} s idle") for sid in old
            ]
        for s in gone:
            s.renderer.close()
        return old

    # -- sessions -------------------------------------------------------------------------------
    def create(
        self,
        max_views: int | None = None,
        window: int | None = None,
        pinned: int = 0,
        frame=None,
        backend: str | None = None,
        export_dir: str | Path | None = None,
    ) -> str:
        """Open a session (a renderer with its own cache).

        Args:
            max_views: cache capacity in views (default: the export's).
            window: sliding window size (None: a full cache refuses new views).
            pinned: the first ``pinned`` views are never evicted.
            frame: the scene's normalization frame (a NormalizationFrame, or cameras / 4x4
                c2w matrices to compute it from); None: from the first added view.
            backend: this session's backend (None: the manager's).
            export_dir: this session's export folder (None: the manager's), e.g. the
                quantized ``viewrt calib`` export of the same model.
        Returns:
            the new session id.
        Raises:
            Refused: the sessions bound or the cache bytes bound would be exceeded.
            ViewrtError: a bad option (nothing is opened).
        """
        options = self._options(max_views, window, pinned, frame, backend, export_dir)
        need = self._need(options)
        self.sweep()
        with self._lock:
            self._admit(need)
            sid = f"{self.id_prefix}{secrets.token_hex(8)}"
            now = self._clock()
            self._sessions[sid] = _Session(None, need, now, now, options)  # reserved while it opens
        try:
            r = self._open(options)
        except BaseException:
            with self._lock:
                del self._sessions[sid]
            raise
        with self._lock:
            s = self._sessions[sid]
            s.renderer, s.cache_bytes = r, self._need(options, r.max_views)
        return sid

    def _options(self, max_views, window, pinned, frame, backend, export_dir) -> dict:
        if max_views is not None and (
            isinstance(max_views, bool) or not isinstance(max_views, (int, np.integer))
        ):
            raise BadRequest(f"max_views must be an integer or null, got {max_views!r}")
        if backend is not None and not isinstance(backend, str):
            raise BadRequest(f"backend must be a string, got {type(backend).__name__}")
        return {
            "max_views": max_views,
            "window": window,
            "pinned": pinned,
            "frame": frame,
            "backend": backend or self.backend,
            "export_dir": self.export_dir if export_dir is None else Path(export_dir),
        }

    def _need(self, options: dict, max_views: int | None = None) -> int:
        """Cache bytes a session of these options reserves (``max_views``: as opened)."""
        if options["export_dir"] == self.export_dir:
            manifest = self.manifest
        else:
            manifest = load_manifest(options["export_dir"])
        n = next(
            (v for v in (max_views, options["max_views"]) if v is not None), manifest.max_views
        )
        if not 1 <= int(n) <= manifest.max_views:  # a bad request before any bound is asked
            raise BadRequest(
                f"max_views must be in 1..{manifest.max_views} (the export's), got {n}"
            )
        return int(manifest.kv_bytes_per_view) * int(n)

    def _open(self, options: dict):
        o = dict(options)
        return self.opener(o.pop("export_dir"), **o, **self.open_options)

    def renderer(self, sid: str):
        """The live renderer of session ``sid`` (its idle clock reset), for a front end
        that needs more of the runtime's API than this class wraps (``reset``,
        ``last_timings``, the cache policy's plan). Raises: UnknownSession, SessionGone."""
        return self._get(sid).renderer

    def options(self, sid: str) -> dict:
        """The options session ``sid`` was opened with (max_views, window, pinned, frame,
        backend, export_dir). Raises: UnknownSession, SessionGone."""
        return dict(self._get(sid).options)

    def reopen(self, sid: str, setup: Callable[[Any], None] | None = None, **changes):
        """Replace session ``sid``'s renderer by a new one opened with its options updated
        by ``changes`` (any of :meth:`create`'s arguments: another backend, window, ...),
        after ``setup(new_renderer)`` ran (e.g. re-adding the session's views). The id
        stays. While it runs both renderers exist; the cache bytes bound counts the larger.

        Raises: UnknownSession, SessionGone, BadRequest for an unknown option, Refused when
            the new cache does not fit the bound, or what opening or ``setup`` raises: then
            the new renderer is closed and the session is exactly as it was.
        """
        unknown = sorted(set(changes) - set(_OPTION_NAMES))
        if unknown:
            raise BadRequest(f"reopen: unknown option(s) {unknown}")
        s = self._get(sid)
        options = self._options(**{**s.options, **changes})
        need = self._need(options)
        with self._lock:
            used = self._used_bytes() - s.cache_bytes
            if used + need > self.limits.max_cache_bytes:
                raise Refused(
                    f"reopen refused: the new K/V cache needs {need / _MiB:.2f} MiB, and "
                    f"{used / _MiB:.2f} of the {self.limits.max_cache_bytes / _MiB:.2f} MiB "
                    "bound (max_cache_bytes) are reserved by other sessions"
                )
        r = self._open(options)
        try:
            if setup is not None:
                setup(r)
        except BaseException:
            r.close()
            raise
        with self._lock:
            live = self._sessions.get(sid)
            if live is not s:  # closed or expired meanwhile
                r.close()
                raise SessionGone(f"session {sid} is gone: {self._ended.get(sid, 'closed')}")
            old = s.renderer
            s.renderer, s.options = r, options
            s.cache_bytes = self._need(options, r.max_views)
        old.close()

    def add_view(self, sid: str, image: np.ndarray, camera: Camera, keyframe: bool = True) -> int:
        """:meth:`viewrt.runtime.Renderer.add_view` in session ``sid``; returns the view id.

        Raises: UnknownSession, SessionGone, or the renderer's ViewrtError (session unchanged).
        """
        return self._get(sid).renderer.add_view(image, camera, keyframe=keyframe)

    def remove_view(self, sid: str, view_id: int) -> None:
        """:meth:`viewrt.runtime.Renderer.remove_view` in session ``sid``."""
        self._get(sid).renderer.remove_view(view_id)

    def render(self, sid: str, cameras: Sequence[Camera]) -> np.ndarray:
        """:meth:`viewrt.runtime.Renderer.render` in session ``sid``: float32 ``[Vt, 3, S, S]``."""
        return self._get(sid).renderer.render(cameras)

    def info(self, sid: str) -> dict:
        """The renderer's ``info()`` plus ``session``, ``cache_bytes`` (reserved, bounded
        by the limits) and ``age_s``."""
        s = self._get(sid)
        return {
            "session": sid,
            "cache_bytes": s.cache_bytes,
            "age_s": round(self._clock() - s.created, 3),
            **s.renderer.info(),
        }

    def close(self, sid: str) -> None:
        """Close session ``sid`` and release its cache. Raises: UnknownSession, SessionGone."""
        self._get(sid)
        with self._lock:
            s = self._end(sid, "closed by its client")
        if s is not None:
            s.renderer.close()

    def close_all(self) -> None:
        """Close every session (the server stops)."""
        with self._lock:
            gone = [self._end(sid, "the server stopped") for sid in list(self._sessions)]
        for s in gone:
            if s.renderer is not None:
                s.renderer.close()

    def ids(self) -> list[str]:
        """The ids of the sessions held now (expired ones closed first; no idle clock is
        reset)."""
        self.sweep()
        with self._lock:
            return [sid for sid, s in self._sessions.items() if s.renderer is not None]

    def stats(self) -> dict:
        """Sessions held, cache bytes reserved, and the limits."""
        self.sweep()
        with self._lock:
            return {
                "sessions": len(self._sessions),
                "cache_bytes": self._used_bytes(),
                "max_sessions": self.limits.max_sessions,
                "max_cache_bytes": self.limits.max_cache_bytes,
                "idle_timeout_s": self.limits.idle_timeout_s,
            }
