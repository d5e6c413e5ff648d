"""The JSON API over a :class:`~viewrt.serve.session.SessionManager`, independent of the
transport: ``handle(manager, method, path, body) -> (status, payload)``. The Ray Serve
application routes requests to the replica that holds the session and calls it there; a
local web server could call it directly.

Endpoints (request and response bodies are JSON objects; images and cameras as in
:mod:`viewrt.serve.codec`):

======  ==============================  ===============================================  ==========================
method  path                            body                                             answer
======  ==============================  ===============================================  ==========================
GET     /                               -                                                server: export, limits, sessions
POST    /sessions                       {max_views?, window?, pinned?, frame?}           201 {session, info}
GET     /sessions/{id}                  -                                                {info}
DELETE  /sessions/{id}                  -                                                {closed: id}
POST    /sessions/{id}/views            {image, camera, keyframe?}                       201 {view_id}
DELETE  /sessions/{id}/views/{view_id}  -                                                {removed: view_id}
POST    /sessions/{id}/render           {cameras: [camera, ...], format?: "f32"|"png"}   {images}
======  ==============================  ===============================================  ==========================

Errors answer ``{"error": "<one line>"}`` with the status of
:func:`viewrt.serve.errors.status_of`: 400 bad request (and the renderer's own refusals:
bad image, bad camera, full cache), 404 unknown session or path, 405 method, 410 session
gone (closed, expired, lost with its replica), 503 a bound of the server. A refused call
leaves the session as it was.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

import viewrt.serve.codec as codec
from viewrt.serve.errors import BadRequest, NotFound, ServeError, status_of
from viewrt.serve.session import SessionManager

log = logging.getLogger("viewrt.serve")

CREATE_OPTIONS = ("max_views", "window", "pinned", "frame")


class MethodNotAllowed(NotFound):
    status = 405


@dataclass(frozen=True)
class Route:
    """What a request asks: ``op`` in server, create, info, close, add_view, remove_view,
    render; ``session`` and ``view_id`` where the path names them."""

    op: str
    session: str | None = None
    view_id: int | None = None


def route(method: str, path: str) -> Route:
    """Parse a request line. Raises NotFound (404) or MethodNotAllowed (405)."""
    parts = [p for p in path.split("/") if p]
    table = {
        0: {"GET": "server"},
        1: {"POST": "create"},
        2: {"GET": "info", "DELETE": "close"},
    }
    if parts[:1] not in ([], ["sessions"]) or len(parts) > 4:
        raise NotFound(f"no endpoint {path!r} (see GET / and docs/serving.md)")
    if len(parts) <= 2:
        ops = table[len(parts)]
    elif parts[2] == "views" and len(parts) == 3:
        ops = {"POST": "add_view"}
    elif parts[2] == "views":
        ops = {"DELETE": "remove_view"}
    elif parts[2] == "render" and len(parts) == 3:
        ops = {"POST": "render"}
    else:
        raise NotFound(f"no endpoint {path!r} (see GET / and docs/serving.md)")
    if method not in ops:
        raise MethodNotAllowed(f"{method} {path}: allowed: {', '.join(ops)}")
    view_id = None
    if len(parts) == 4:
        try:
            view_id = int(parts[3])
        except ValueError:
            raise BadRequest(f"view id must be an integer, got {parts[3]!r}") from None
    return Route(ops[method], parts[1] if len(parts) > 1 else None, view_id)


def parse_body(body: bytes | str | None) -> dict:
    """The JSON object of a request body (empty: {}). Raises BadRequest."""
    if not body:
        return {}
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(obj).__name__}")
    return obj


def fields(body: dict, required: tuple, optional: tuple = ()) -> dict:
    """``body`` when it has every field of ``required`` and no field beyond ``required`` and
    ``optional``. Raises BadRequest naming what is missing or unexpected."""
    missing = [k for k in required if k not in body]
    extra = sorted(set(body) - set(required) - set(optional))
    if missing or extra:
        want = ", ".join([*required, *(f"{k}?" for k in optional)])
        got = f"missing {missing}" if missing else f"unexpected {extra}"
        raise BadRequest(f"request body: {got}; expected fields: {want}")
    return body


def _run(manager: SessionManager, r: Route, body: dict) -> tuple[int, dict]:
    if r.op == "server":
        return 200, {"export": manager.manifest.summary(), **manager.stats()}
    if r.op == "create":
        options = dict(fields(body, (), CREATE_OPTIONS))
        if options.get("frame") is not None:
            options["frame"] = list(codec.decode_frame(options["frame"], "frame"))
        sid = manager.create(**options)
        return 201, {"session": sid, "info": manager.info(sid)}
    if r.op == "info":
        return 200, manager.info(r.session)
    if r.op == "close":
        manager.close(r.session)
        return 200, {"closed": r.session}
    if r.op == "add_view":
        b = fields(body, ("image", "camera"), ("keyframe",))
        image = codec.decode_array(b["image"], "image")
        camera = codec.decode_camera(b["camera"], "camera")
        vid = manager.add_view(r.session, image, camera, keyframe=b.get("keyframe", True))
        return 201, {"view_id": vid}
    if r.op == "remove_view":
        manager.remove_view(r.session, r.view_id)
        return 200, {"removed": r.view_id}
    b = fields(body, ("cameras",), ("format",))  # render
    fmt = b.get("format", "f32")
    if fmt not in codec.FORMATS:
        raise BadRequest(f"format must be one of {', '.join(codec.FORMATS)}, got {fmt!r}")
    if not isinstance(b["cameras"], list):
        raise BadRequest(f"cameras: expected a list of cameras, got {type(b['cameras']).__name__}")
    cams = [codec.decode_camera(c, f"cameras[{i}]") for i, c in enumerate(b["cameras"])]
    return 200, {"images": codec.encode_array(manager.render(r.session, cams), fmt)}


def error_payload(error: BaseException) -> tuple[int, dict]:
    """(status, {"error": one line}) of an exception; a non-viewrt one is logged as a bug."""
    status = status_of(error)
    msg = str(error) if status != 500 else f"internal error: {type(error).__name__}: {error}"
    if status == 500:
        log.exception("viewrt serve: internal error")
    return status, {"error": " ".join(msg.split())}


def handle(
    manager: SessionManager, method: str, path: str, body: bytes | str | None
) -> tuple[int, dict]:
    """Answer one request.

    Args:
        manager: the sessions.
        method: HTTP method ("GET", "POST", "DELETE").
        path: the path below the application's prefix, e.g. "/sessions/ab12/render".
        body: the raw JSON body (empty for GET / DELETE).
    Returns:
        (HTTP status, JSON-ready payload); an error is ``{"error": "<one line>"}``.
    """
    try:
        return _run(manager, route(method, path), parse_body(body))
    except Exception as e:  # every error becomes an answer, never a dropped connection
        return error_payload(e)


def dumps(payload: dict) -> bytes:
    """JSON bytes of a payload (numpy scalars and arrays become numbers and lists)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON: {type(o).__name__}")

    return json.dumps(payload, default=default).encode()


__all__ = ["Route", "ServeError", "dumps", "error_payload", "handle", "parse_body", "route"]
