"""Serving beyond one process: stateful render sessions behind an HTTP JSON API.

- :mod:`viewrt.serve.session`: the engine-neutral session manager (no Ray, no HTTP).
- :mod:`viewrt.serve.api`, :mod:`viewrt.serve.codec`: the JSON API over it and the
  encoding of images and cameras.
- :mod:`viewrt.serve.app`: the Ray Serve application (``viewrt serve``; the ``serve``
  extra: ``pip install ".[serve]"``). Not imported here: ``import viewrt.serve`` needs no Ray.
- :class:`Client`: the Python client (standard library + numpy).

The runtime (:mod:`viewrt.runtime`) imports nothing of this package, and this package
nothing of the runtime: the session manager is given its ``opener`` (the runtime's
``open``) by the CLI.
"""

from viewrt.serve.client import Client, Session
from viewrt.serve.errors import (
    BadRequest,
    Refused,
    ServeError,
    SessionGone,
    UnknownSession,
)
from viewrt.serve.session import Limits, SessionManager

__all__ = [
    "BadRequest",
    "Client",
    "Limits",
    "Refused",
    "ServeError",
    "Session",
    "SessionGone",
    "SessionManager",
    "UnknownSession",
]
