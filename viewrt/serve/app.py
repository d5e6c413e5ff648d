"""``viewrt serve`` on Ray Serve: an HTTP gateway deployment over session replicas.

Layout:

- N **session replicas**: Ray actors (:class:`SessionHost`), each holding one
  :class:`~viewrt.serve.session.SessionManager` (its sessions' renderers and K/V caches)
  within its :class:`~viewrt.serve.session.Limits`. They are created by the process that
  starts the server (``viewrt serve``), restart after a crash (empty), and reserve
  ``replica_cpus`` CPUs and ``max_cache_bytes`` of Ray's ``memory`` resource, which is
  what places them on a cluster.
- One Ray Serve deployment, the **gateway** (:class:`Gateway`), behind Serve's HTTP proxy:
  it parses the request line, and forwards the raw body to the replica that holds the
  session. It keeps no state, so it can run as several Serve replicas.

Session affinity: a session id is ``"<replica index>-<incarnation>-<random>"``. The gateway
routes on the index; the replica checks the incarnation (a random tag drawn each time the
actor starts). A replica that died is restarted by Ray empty, with a new incarnation, so
every call of a session it held answers 410 "session ... was lost"; calls in flight when
it died answer the same. Sessions of the other replicas are not touched. New sessions go
to the replicas in turn, skipping one that is down or whose bounds are full.

Imports ray and ray.serve (the ``serve`` extra) at module top: only ``viewrt serve`` and
``viewrt serve-bench`` import this module.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field

import ray
from ray import serve
from ray.exceptions import GetTimeoutError, RayActorError
from starlette.responses import Response

import viewrt.serve.api as api
from viewrt.contract.manifest import load_manifest
from viewrt.errors import ViewrtError
from viewrt.serve.errors import SessionGone, UnknownSession
from viewrt.serve.session import Limits, Opener, SessionManager

log = logging.getLogger("viewrt.serve")

START_TIMEOUT_S = 180.0
# Ray's single-machine mode (every socket of its processes on 127.0.0.1); read by Ray when it
# is imported, so it must be in the environment before: see init_ray.
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def session_host(session_id: str) -> tuple[int, str] | None:
    """(replica index, incarnation) encoded in a session id, or None for a malformed id."""
    parts = session_id.split("-")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1]


class SessionHost:
    """One session replica (a Ray actor): a SessionManager and the API over it.

    Args:
        index: the replica's index (the first field of its session ids).
        export_dir, backend, limits, open_options, opener: as :class:`SessionManager`.
    """

    def __init__(
        self,
        index: int,
        export_dir: str,
        backend: str,
        limits: Limits,
        open_options: dict,
        opener: Opener,
    ):
        self.index = index
        self.incarnation = secrets.token_hex(3)
        with warnings.catch_warnings():  # Ray 2.60 warns about its own use of actor_id here
            warnings.simplefilter("ignore")
            self.restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.manager = SessionManager(
            export_dir, backend, limits, open_options, opener=opener,
            id_prefix=f"{index}-{self.incarnation}-",
        )  # fmt: skip
        period = min(30.0, limits.idle_timeout_s / 4)
        threading.Thread(target=self._sweeper, args=(period,), daemon=True).start()

    def _sweeper(self, period: float) -> None:
        while True:  # closes idle sessions even when no call comes
            time.sleep(period)
            self.manager.sweep()

    def call(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Answer one request of a session of this replica: (status, JSON bytes)."""
        try:
            r = api.route(method, path)
        except Exception as e:
            return self._answer(*api.error_payload(e))
        if r.session is not None and r.op != "create":
            where = session_host(r.session)
            if where is not None and where[1] != self.incarnation:
                return self._answer(*api.error_payload(self._not_mine(r.session)))
        return self._answer(*api.handle(self.manager, method, path, body))

    def _not_mine(self, session: str) -> Exception:
        """A session id of this index with another incarnation: lost when this replica
        was restarted (it died), else an id that never existed."""
        if self.restarted:
            return SessionGone(
                f"session {session} was lost: replica {self.index} died and was restarted empty"
            )
        return UnknownSession(f"unknown session {session!r}")

    @staticmethod
    def _answer(status: int, payload: dict) -> tuple[int, bytes]:
        return status, api.dumps(payload)

    def stats(self) -> dict:
        """The manager's stats, the replica's index, process id and incarnation."""
        return {
            "replica": self.index,
            "pid": os.getpid(),
            "incarnation": self.incarnation,
            **self.manager.stats(),
        }


def _loopback_replica_grpc() -> None:
    """Local mode: bind this Serve replica's inter-deployment gRPC server (started after the
    constructor, unused by the HTTP path) to 127.0.0.1; Ray 2.60 hard-codes "[::]:0" for it
    (ray/serve/_private/replica.py). A Ray without that helper keeps its own address."""
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_viewrt_loopback", False):
        return

    def add_port(server, address: str):
        return original(server, address.replace("[::]", "127.0.0.1", 1))

    add_port._viewrt_loopback = True
    replica.add_port_to_grpc_server = add_port


def _json(status: int, payload: dict) -> Response:
    return Response(api.dumps(payload), status_code=status, media_type="application/json")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class Gateway:
    """The HTTP ingress: routes each request to the session replica that holds it."""

    def __init__(self, hosts: list, summary: dict, loopback: bool = False):
        if loopback:
            _loopback_replica_grpc()
        self.hosts = hosts
        self.summary = summary
        self._next = 0

    async def __call__(self, request) -> Response:
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method, body = request.method, await request.body()
        try:
            r = api.route(method, path)
            if r.op == "server":
                return _json(200, await self._server())
            if r.op == "create":
                return await self._create(method, path, body)
            where = session_host(r.session)
            if where is None or where[0] >= len(self.hosts):
                raise UnknownSession(f"unknown session {r.session!r}")
        except Exception as e:
            return _json(*api.error_payload(e))
        try:
            status, data = await self.hosts[where[0]].call.remote(method, path, body)
        except RayActorError:
            lost = SessionGone(f"session {r.session} was lost: replica {where[0]} died")
            return _json(*api.error_payload(lost))
        return Response(data, status_code=status, media_type="application/json")

    async def _create(self, method: str, path: str, body: bytes) -> Response:
        """A new session on the next replica that is up and within its bounds."""
        answer = None
        n, first = len(self.hosts), self._next
        self._next = (first + 1) % n  # before any await: concurrent creates spread out
        for k in range(n):
            i = (first + k) % n
            try:
                status, data = await self.hosts[i].call.remote(method, path, body)
            except RayActorError as e:
                answer = (503, {"error": f"replica {i} is down ({type(e).__name__})"})
                continue
            if status != 503:  # made, or a bad request that every replica would refuse
                return Response(data, status_code=status, media_type="application/json")
            answer = (status, api.parse_body(data))
        status, payload = answer
        if n > 1:
            payload = {"error": f"all {n} replicas refused; last: {payload['error']}"}
        return _json(status, payload)

    async def _server(self) -> dict:
        replicas = []
        for i, h in enumerate(self.hosts):
            try:
                replicas.append(await h.stats.remote())
            except RayActorError as e:
                replicas.append({"replica": i, "down": type(e).__name__})
        up = [r for r in replicas if "down" not in r]
        return {
            "export": self.summary,
            "replicas": replicas,
            "sessions": sum(r["sessions"] for r in up),
            "cache_bytes": sum(r["cache_bytes"] for r in up),
        }


@dataclass
class Server:
    """A running application: its URL, Serve app name and session replicas (actor handles)."""

    url: str
    name: str
    hosts: list = field(repr=False)

    def replicas(self) -> list[dict]:
        """Each replica's stats (index, pid, incarnation, sessions, cache bytes, limits)."""
        return ray.get([h.stats.remote() for h in self.hosts])

    def stop(self) -> None:
        """Delete the Serve application and end its replicas (their sessions close)."""
        serve.delete(self.name)
        for h in self.hosts:
            ray.kill(h, no_restart=True)


def init_ray(
    address: str | None = None, num_cpus: int | None = None, object_store_memory: int | None = None
) -> None:
    """Join the cluster at ``address``, or start a local Ray for this process: every one of
    its sockets on loopback, no dashboard, ``num_cpus`` logical CPUs (default: this
    machine's). A Ray already initialized in this process is used as it is.

    Keeping Ray's own processes (GCS, raylet, workers, agents, metrics) on loopback needs
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (:data:`LOCAL_ENV`, Ray's single-machine mode) in
    the environment before ``ray`` is first imported; ``viewrt serve`` sets it. Without it
    they listen on every interface, and this logs a warning. Only the HTTP proxy follows
    ``--host``.
    """
    if ray.is_initialized():
        return
    # Ray's and the replicas' logs stay in Ray's session folder (/tmp/ray/session_latest/logs)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "namespace": "viewrt"}
    if address:
        ray.init(address=address, **quiet)
        return
    if any(os.environ.get(k) != v for k, v in LOCAL_ENV.items()):
        log.warning(
            "Ray's own processes will listen on every interface: set %s before Ray is imported "
            "to keep them on loopback (viewrt serve does)",
            " ".join(f"{k}={v}" for k, v in LOCAL_ENV.items()),
        )
    ray.init(
        num_cpus=num_cpus or os.cpu_count() or 1,
        object_store_memory=object_store_memory,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        **quiet,
    )


def start(
    export_dir: str,
    *,
    opener: Opener,
    backend: str = "ort",
    replicas: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    limits: Limits | None = None,
    open_options: dict | None = None,
    replica_cpus: float = 1.0,
    name: str = "viewrt",
    route_prefix: str = "/",
) -> Server:
    """Start (or join) Ray, start Serve's HTTP proxy on ``host:port``, the session replicas
    and the gateway.

    Args:
        export_dir: export folder (it must be readable at this path on every node).
        opener: opens each session's renderer (:func:`viewrt.runtime.open`, passed in by
            the CLI): a module-level function, which Ray ships to the replicas by reference
            (its module must be importable on every node).
        backend: runtime backend of every session.
        replicas: session replicas (Ray actors).
        host, port: where Serve's HTTP proxy listens (ignored when Serve already runs).
        address: a Ray cluster to join ("auto", "ray://..." or "host:port"); None: local.
        limits: bounds per replica.
        open_options: more opener options of every session (threads, ...).
        replica_cpus: CPUs each replica reserves in Ray.
        name, route_prefix: the Serve application's name and URL prefix.
    Returns: the running :class:`Server`.
    Raises: ViewrtError for a bad export folder or option, or replicas that do not start.
    """
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ViewrtError(f"replicas must be a positive integer, got {replicas!r}")
    if not callable(opener):
        raise ViewrtError(f"opener must be callable (viewrt.runtime.open), got {opener!r}")
    export_dir = str(export_dir)
    summary = load_manifest(export_dir).summary()  # a bad folder fails before Ray starts
    limits = limits or Limits()
    init_ray(address, num_cpus=max(os.cpu_count() or 1, math.ceil(replicas * replica_cpus)))
    serve.start(http_options={"host": host, "port": port})
    actor = ray.remote(SessionHost).options(
        max_restarts=-1,
        max_task_retries=0,
        max_concurrency=8,
        num_cpus=replica_cpus,
        memory=limits.max_cache_bytes,
    )
    hosts = [
        actor.remote(i, export_dir, backend, limits, dict(open_options or {}), opener)
        for i in range(replicas)
    ]
    _wait_ready(hosts, limits, replica_cpus)
    serve.run(
        Gateway.bind(hosts, summary, address is None),  # local mode: internal sockets on loopback
        name=name,
        route_prefix=route_prefix,
        logging_config={"log_level": "WARNING"},
    )
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return Server(f"http://{shown}:{port}{route_prefix.rstrip('/')}", name, hosts)


def _wait_ready(hosts: list, limits: Limits, replica_cpus: float) -> None:
    try:
        ray.get([h.stats.remote() for h in hosts], timeout=START_TIMEOUT_S)
    except GetTimeoutError:
        for h in hosts:
            ray.kill(h, no_restart=True)
        raise ViewrtError(
            f"the session replicas did not start within {START_TIMEOUT_S:.0f} s: each needs "
            f"{replica_cpus:g} CPUs and {limits.max_cache_bytes / 2**20:.0f} MiB of Ray's memory "
            "resource free on one node (see `ray status`)"
        ) from None
    except RayActorError as e:
        for h in hosts:
            ray.kill(h, no_restart=True)
        raise ViewrtError(
            f"a session replica failed to start: {' '.join(str(e).split())[:500]}"
        ) from None
