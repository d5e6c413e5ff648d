"""Running the studio app on uvicorn: in the foreground (``viewrt studio``) or in a thread
(the tests, the screenshot helper).

Imports uvicorn (the ``studio`` extra) when a server starts.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

from viewrt.errors import ViewrtError
from viewrt.studio.app import make_app
from viewrt.studio.state import Studio


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Fail in one line when ``host:port`` cannot be bound here (in use, not an address of
    this machine). Raises ViewrtError."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        raise ViewrtError(
            f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host"
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _server(studio: Studio, host: str, port: int):
    import uvicorn

    config = uvicorn.Config(make_app(studio), host=host, port=port, log_level="warning")
    return uvicorn.Server(config)


def run(studio: Studio, host: str, port: int) -> None:
    """Serve until Ctrl-C (or SIGTERM), then close every session."""
    try:
        _server(studio, host, port).run()
    finally:
        studio.manager.close_all()


class Background:
    """The app served from a thread on ``host:port`` (port 0: a free one): ``url``;
    :meth:`stop` (or leaving the ``with`` block) stops it and closes every session.

    Raises: ViewrtError when it does not start within ``timeout_s``.
    """

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int = 0, timeout_s=30.0):
        self.studio = studio
        port = port or free_port(host)
        self.url = f"http://{host}:{port}"
        self._server = _server(studio, host, port)
        self._thread = threading.Thread(target=self._server.run, name="studio", daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > timeout_s:
                raise ViewrtError(f"the studio server did not start on {host}:{port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.studio.manager.close_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
