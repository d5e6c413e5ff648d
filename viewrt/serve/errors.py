"""Errors of the session layer, each with the HTTP status a transport answers it with.

They are :class:`viewrt.errors.ViewrtError` (a problem the caller can fix; the message is
one line meant for the user). A plain ViewrtError raised by the renderer (bad image, bad
camera, full cache) is a bad request (400).
"""

from __future__ import annotations

from viewrt.errors import ViewrtError


class ServeError(ViewrtError):
    """Base of the session errors; ``status`` is the HTTP status code that stands for it."""

    status = 400


class BadRequest(ServeError):
    """A malformed request: bad JSON, bad image or camera encoding, a bad option (400)."""

    status = 400


class UnknownSession(ServeError):
    """No session of that id was ever held here (404)."""

    status = 404


class NotFound(ServeError):
    """No such endpoint (404) or method (405)."""

    status = 404


class SessionGone(ServeError):
    """The session existed and is gone: closed, expired after its idle timeout, or lost
    with the replica that held it (410)."""

    status = 410


class Refused(ServeError):
    """A bound of the server was hit (sessions, total cache bytes); the message names it (503)."""

    status = 503


def status_of(error: BaseException) -> int:
    """HTTP status of an exception: a ServeError's own, 400 for any other ViewrtError, 500
    for anything else (a bug of the server, not of the request)."""
    if isinstance(error, ServeError):
        return error.status
    return 400 if isinstance(error, ViewrtError) else 500
