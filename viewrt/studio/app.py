"""The studio's HTTP side: one page (static files of this package) and a JSON API over
:class:`viewrt.studio.state.Studio`, on Starlette, served by uvicorn.

Why Starlette: it is the small, well-kept ASGI toolkit FastAPI is built on (and that the
``serve`` extra's Ray Serve already brings), with a static-files app and a test client;
the API here is a dozen routes over JSON the studio validates itself, so FastAPI's model
layer would add nothing.

Endpoints (bodies and answers are JSON; every answer of a session is its state):

======  ===================================  =======================================
method  path                                 body
======  ===================================  =======================================
GET     /api/server                          -
POST    /api/sessions                        {scene, backend?, max_views?, window?, pinned?}
GET     /api/sessions/{sid}                  -
DELETE  /api/sessions/{sid}                  -
GET     /api/sessions/{sid}/frames           -  (thumbnails)
POST    /api/sessions/{sid}/views            {frame, keyframe?}
DELETE  /api/sessions/{sid}/views/{view_id}  -
POST    /api/sessions/{sid}/pin              {view_id, pinned}
POST    /api/sessions/{sid}/settings         {window, pinned}
POST    /api/sessions/{sid}/reset            -
POST    /api/sessions/{sid}/backend          {backend}
POST    /api/sessions/{sid}/scene            {scene}
POST    /api/sessions/{sid}/render           {target: {frame} | {between, t}}
======  ===================================  =======================================

An error answers ``{"error": "<one line>"}`` with the status of
:func:`viewrt.serve.errors.status_of` (400, 404, 410, 503) and leaves the session as it was.

Imports starlette (the ``studio`` extra), viewrt.serve and viewrt.studio.state.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from viewrt.serve.api import dumps, error_payload, fields, parse_body
from viewrt.serve.errors import BadRequest
from viewrt.studio.state import Studio

STATIC = Path(__file__).resolve().parent / "static"


class _Json(JSONResponse):
    def render(self, content) -> bytes:
        return dumps(content)


def _body(raw: bytes, required: tuple = (), optional: tuple = ()) -> dict:
    """The request's JSON object with exactly these fields (the serve API's rules). Raises
    BadRequest."""
    return fields(parse_body(raw), required, optional)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"{what} must be an integer, got {text!r}") from None


# (method, path, fields required, fields optional, call(studio, path params, body))
_API = [
    ("GET", "/api/server", (), (), lambda s, p, b: s.server()),
    ("POST", "/api/sessions", ("scene",), ("backend", "max_views", "window", "pinned"),
     lambda s, p, b: s.create(**b)),
    ("GET", "/api/sessions/{sid}", (), (), lambda s, p, b: s.state(p["sid"])),
    ("DELETE", "/api/sessions/{sid}", (), (), lambda s, p, b: s.close(p["sid"])),
    ("GET", "/api/sessions/{sid}/frames", (), (), lambda s, p, b: s.frames(p["sid"])),
    ("POST", "/api/sessions/{sid}/views", ("frame",), ("keyframe",),
     lambda s, p, b: s.add(p["sid"], **b)),
    ("DELETE", "/api/sessions/{sid}/views/{view_id}", (), (),
     lambda s, p, b: s.remove(p["sid"], _int(p["view_id"], "view id"))),
    ("POST", "/api/sessions/{sid}/pin", ("view_id", "pinned"), (),
     lambda s, p, b: s.pin(p["sid"], **b)),
    ("POST", "/api/sessions/{sid}/settings", ("window", "pinned"), (),
     lambda s, p, b: s.settings(p["sid"], **b)),
    ("POST", "/api/sessions/{sid}/reset", (), (), lambda s, p, b: s.reset(p["sid"])),
    ("POST", "/api/sessions/{sid}/backend", ("backend",), (),
     lambda s, p, b: s.switch(p["sid"], **b)),
    ("POST", "/api/sessions/{sid}/scene", ("scene",), (), lambda s, p, b: s.scene(p["sid"], **b)),
    ("POST", "/api/sessions/{sid}/render", ("target",), (),
     lambda s, p, b: s.render(p["sid"], **b)),
]  # fmt: skip


def _endpoint(studio: Studio, required: tuple, optional: tuple, call):
    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = _body(raw, required, optional)
            payload = await run_in_threadpool(call, studio, dict(request.path_params), body)
            status = (
                201 if request.method == "POST" and request.url.path == "/api/sessions" else 200
            )
        except Exception as e:  # every error is one line, never a stack trace
            status, payload = error_payload(e)
        return _Json(payload, status_code=status)

    return endpoint


async def _not_found(request: Request, exc) -> Response:
    status = getattr(exc, "status_code", 404)
    what = "method not allowed" if status == 405 else "no such path"
    return _Json({"error": f"{what}: {request.method} {request.url.path}"}, status_code=status)


def make_app(studio: Studio) -> Starlette:
    """The ASGI app: the API routes, the page at ``/`` and its files beside it."""
    routes = [
        Route(path, _endpoint(studio, req, opt, call), methods=[method])
        for method, path, req, opt, call in _API
    ]
    page = StaticFiles(directory=STATIC, html=True)
    app = Starlette(
        routes=[*routes, Mount("/", app=page, name="page")],
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.studio = studio
    return app
