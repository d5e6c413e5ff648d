"""A Python client of the HTTP API of ``viewrt serve`` (standard library + numpy only).

    from viewrt.serve import Client
    client = Client("http://127.0.0.1:8000")
    with client.session() as s:
        vid = s.add_view(image, (c2w, fxfycxcy))   # image: float32 [3, S, S] in [0, 1]
        images = s.render([(c2w_t, fxfycxcy_t)])   # float32 [Vt, 3, S, S]

An error answer of the server raises the matching :mod:`viewrt.serve.errors` class with
the server's one-line message (e.g. SessionGone when the replica holding the session died).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np

import viewrt.serve.codec as codec
from viewrt.serve.errors import (
    BadRequest,
    NotFound,
    Refused,
    ServeError,
    SessionGone,
    UnknownSession,
)

_BY_STATUS = {400: BadRequest, 404: UnknownSession, 405: NotFound, 410: SessionGone, 503: Refused}


class Client:
    """Talks to one ``viewrt serve`` server.

    Args:
        url: the server's base URL, e.g. "http://127.0.0.1:8000".
        timeout: seconds per request.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call of the API: the JSON answer.

        Raises: a :class:`~viewrt.serve.errors.ServeError` subclass for an error answer
            (the server's message), ServeError when the server cannot be reached.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                msg = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                msg = raw.decode(errors="replace").strip() or e.reason
            err = _BY_STATUS.get(e.code, ServeError)(f"{msg}")
            err.status = e.code
            raise err from None
        except (urllib.error.URLError, OSError) as e:
            raise ServeError(f"cannot reach viewrt serve at {self.url}: {e}") from None

    def server_info(self) -> dict:
        """The export's summary, the limits and the sessions held."""
        return self.request("GET", "/")

    def session(
        self,
        max_views: int | None = None,
        window: int | None = None,
        pinned: int = 0,
        frame=None,
    ):
        """Open a session on the server (a renderer with its own K/V cache).

        Args: as :func:`viewrt.runtime.open` (``max_views``: cache capacity in views;
            ``frame``: cameras, (c2w, fxfycxcy) pairs or 4x4 c2w matrices to compute the
            scene's normalization frame from, or None: from the first added view).
        Returns: a :class:`Session` (a context manager that closes it).
        Raises: Refused when a bound of the server is hit, BadRequest for a bad option.
        """
        body = {"max_views": max_views, "window": window, "pinned": pinned}
        if frame is not None:
            body["frame"] = codec.encode_frame(frame)
        answer = self.request("POST", "/sessions", body)
        return Session(self, answer["session"])


class Session:
    """One session on the server; the methods mirror :class:`viewrt.runtime.Renderer`."""

    def __init__(self, client: Client, session_id: str):
        self.client, self.id = client, session_id

    def _path(self, tail: str = "") -> str:
        return f"/sessions/{self.id}{tail}"

    def add_view(self, image, camera, keyframe: bool = True) -> int:
        """Encode a posed view: float ``[3, S, S]`` in [0, 1], a Camera or (c2w, fxfycxcy).
        Returns the view id."""
        body = {
            "image": codec.encode_array(np.asarray(image, np.float32)),
            "camera": codec.encode_camera(camera),
            "keyframe": keyframe,
        }
        return self.client.request("POST", self._path("/views"), body)["view_id"]

    def remove_view(self, view_id: int) -> None:
        """Remove a cached view."""
        self.client.request("DELETE", self._path(f"/views/{int(view_id)}"))

    def render(self, cameras, fmt: str = "f32") -> np.ndarray:
        """Render target cameras: float32 ``[Vt, 3, S, S]`` in [0, 1] (``fmt="png"``: 8 bits)."""
        body = {"cameras": [codec.encode_camera(c) for c in cameras], "format": fmt}
        return codec.decode_array(
            self.client.request("POST", self._path("/render"), body)["images"], "images"
        )

    def info(self) -> dict:
        """The renderer's info() and the session's (id, cache bytes, age)."""
        return self.client.request("GET", self._path())

    def close(self) -> None:
        """Close the session and release its cache on the server."""
        self.client.request("DELETE", self._path())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.close()
        except SessionGone:
            pass
