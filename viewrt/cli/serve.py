"""``viewrt serve`` (render sessions behind an HTTP JSON API on Ray Serve) and
``viewrt serve-bench`` (its load benchmark against the same work in one process).

Ray (the ``serve`` extra) is imported inside the commands: ``viewrt --help`` needs none.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import time
from pathlib import Path

import click

import viewrt.runtime as vrt
import viewrt.runtime.backends as registry
import viewrt.serve.load as load
from viewrt.cli._errors import cli_errors, finite_float
from viewrt.cli.options import backend_option, export_dir_argument, out_option, threads_option
from viewrt.contract.manifest import load_manifest
from viewrt.errors import ViewrtError
from viewrt.folders import check_creatable
from viewrt.serve.session import Limits, SessionManager

FINITE_POSITIVE = finite_float(True)
# as viewrt.serve.app.LOCAL_ENV (that module imports ray, which reads it at import)
RAY_LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _local_ray_env(address: str | None) -> None:
    """Local mode: Ray's processes on loopback. Ray reads this when it is first imported,
    so it is set before anything that may import ray."""
    if address is None:
        os.environ.update(RAY_LOCAL_ENV)


def _require_ray(command: str) -> None:
    """Ray Serve is installed (checked without importing ray)."""
    spec = importlib.util.find_spec("ray")
    where = list(spec.submodule_search_locations or []) if spec else []
    if not any((Path(p) / "serve" / "__init__.py").is_file() for p in where):
        raise ViewrtError(
            f'{command} needs Ray Serve: pip install ".[serve]" (from the viewrt clone)'
        )


def _check_port_free(host: str, port: int) -> None:
    """Fail before Ray starts when the HTTP port cannot be bound here."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            # as the HTTP server binds: a port left in TIME-WAIT by a stopped server is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise ViewrtError(
            f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host"
        ) from None


def _check_cluster(address: str, timeout: float = 5.0) -> None:
    """Fail in one line when a Ray cluster's HOST:PORT does not answer (``ray.init`` would
    retry for ever); "auto" and ray:// addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ViewrtError(f"--address {address!r}: expected HOST:PORT, 'auto' or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ViewrtError(
            f"--address {address}: no Ray cluster answers there ({e.strerror or e}); "
            "start one with `ray start --head` or leave --address out for a local Ray"
        ) from None


def _preflight(export_dir: str, backend: str, threads: int | None) -> None:
    """Open (and close) one session here, so that a backend that cannot run fails in one
    line before Ray starts (local mode: the replicas run on this machine)."""
    vrt.open(export_dir, backend=backend, max_views=1, **_open_options(threads)).close()


def _open_options(threads: int | None) -> dict:
    """The runtime's open options of every session (``--threads``)."""
    return {} if threads is None else {"threads": threads}


def _start(export_dir, backend, replicas, threads, replica_cpus, address, limits, **http):
    """Start the Ray Serve application (viewrt.serve.app.start) with the runtime's ``open``
    as the replicas' opener; ``http``: ``port`` (and ``host``)."""
    import viewrt.serve.app as app  # lazy: imports ray, after the loopback setting

    return app.start(
        str(Path(export_dir).resolve()), opener=vrt.open, backend=backend, replicas=replicas,
        address=address, limits=limits, replica_cpus=replica_cpus,
        open_options=_open_options(threads), **http,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _shutdown() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def _serve_options(fn):
    """EXPORT_DIR and the options shared by serve and serve-bench: backend, replicas,
    threads, replica CPUs, address."""
    for deco in reversed(
        [
            export_dir_argument(),
            backend_option(
                registry.names, "ort", "Runtime backend of every session (as viewrt infer)."
            ),
            click.option(
                "--replicas",
                type=click.IntRange(1),
                default=1,
                show_default=True,
                help="Session replicas (Ray actors; each holds its own sessions).",
            ),
            threads_option("ONNX Runtime threads per session (default: the runtime's)."),
            click.option(
                "--replica-cpus",
                type=FINITE_POSITIVE,
                default=1.0,
                show_default=True,
                help="CPUs each replica reserves in Ray (placement on a cluster).",
            ),
            click.option(
                "--address",
                default=None,
                help="Join this Ray cluster ('auto' or HOST:PORT); default: a local Ray for this command, on loopback, no dashboard.",
            ),
        ]
    ):
        fn = deco(fn)
    return fn


@click.command("serve")
@_serve_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address of the HTTP socket (0.0.0.0: every interface).",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="HTTP port."
)
@click.option(
    "--max-sessions",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Sessions per replica.",
)
@click.option(
    "--max-cache-mib",
    type=FINITE_POSITIVE,
    default=1024.0,
    show_default=True,
    help="K/V cache MiB all sessions of a replica may reserve.",
)
@click.option(
    "--idle-timeout",
    type=FINITE_POSITIVE,
    default=600.0,
    show_default=True,
    help="Seconds after which an idle session is closed.",
)
@cli_errors
def serve(
    export_dir, backend, replicas, threads, replica_cpus, address, host, port, max_sessions,
    max_cache_mib, idle_timeout,
):  # fmt: skip
    """Serve render sessions of EXPORT_DIR over HTTP (JSON) until Ctrl-C.

    Each session is a renderer with its own K/V cache on one replica; see docs/serving.md
    for the API and viewrt.serve.Client for the Python client.
    """
    _local_ray_env(address)
    _require_ray("viewrt serve")
    load_manifest(export_dir)  # a bad folder fails before Ray starts
    limits = Limits(max_sessions, int(max_cache_mib * 2**20), idle_timeout)
    if address is None:
        _check_port_free(host, port)
        _preflight(export_dir, backend, threads)
    else:
        _check_cluster(address)
    try:
        server = _start(
            export_dir, backend, replicas, threads, replica_cpus, address, limits, host=host,
            port=port,
        )  # fmt: skip
        click.echo(
            f"viewrt serve: {server.url} ({replicas} replica(s) of {export_dir}); Ctrl-C stops",
            err=True,
        )
        # `kill` stops it as cleanly as Ctrl-C, and so does SIGINT when the shell started it
        # with SIGINT ignored (`viewrt serve ... &` in a script)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("viewrt serve: stopping", err=True)
    finally:
        _shutdown()


@click.command("serve-bench")
@_serve_options
@click.option(
    "--sessions",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Concurrent sessions (one client thread each).",
)
@click.option(
    "--views", type=click.IntRange(1), default=4, show_default=True, help="Views each session adds."
)
@click.option(
    "--targets",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Targets per render call.",
)
@click.option(
    "--renders",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Render calls per session.",
)
@out_option(
    "Also write the results to OUT/serve_bench.json (the folder is created).", required=False
)
@cli_errors
def serve_bench(
    export_dir, backend, replicas, threads, replica_cpus, address, sessions, views, targets,
    renders, out_dir,
):  # fmt: skip
    """Load benchmark: SESSIONS concurrent sessions through `viewrt serve` (HTTP) against
    the same work in one process; throughput and p50/p99 latency."""
    if out_dir is not None:
        check_creatable(out_dir)  # before any work: an unwritable --out changes nothing
    _local_ray_env(address)
    _require_ray("viewrt serve-bench")
    manifest = load_manifest(export_dir)
    if views > manifest.max_views:
        raise ViewrtError(f"--views {views} exceeds the export's max_views {manifest.max_views}")
    _preflight(export_dir, backend, threads)
    if address is not None:
        _check_cluster(address)
    w = load.Workload(sessions, views, targets, renders)
    limits = Limits(
        max_sessions=sessions, max_cache_bytes=sessions * manifest.kv_bytes_per_view * views
    )
    # one process first, while no Ray process runs
    manager = SessionManager(export_dir, backend, limits, _open_options(threads), opener=vrt.open)
    local = load.run_in_process(manager, w)
    try:
        server = _start(
            export_dir, backend, replicas, threads, replica_cpus, address, limits,
            port=_free_port(),
        )  # fmt: skip
        served = load.run_http(server.url, manifest.image_size, w)
        server.stop()
    finally:
        _shutdown()
    result = {
        "export": str(export_dir),
        "backend": backend,
        "replicas": replicas,
        "threads": threads,
        "workload": w.__dict__,
        "one_process": local,
        "served": served,
    }
    _print_table(result)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "serve_bench.json").write_text(json.dumps(result, indent=1))
    if local["errors"] or served["errors"]:
        raise ViewrtError(f"errors during the run: {(local['errors'] + served['errors'])[:3]}")


def _print_table(result: dict) -> None:
    keys = ["wall_s", "renders_per_s", "images_per_s", "render_ms_p50", "render_ms_p99",
            "add_view_ms_p50", "add_view_ms_p99"]  # fmt: skip
    w = result["workload"]
    click.echo(
        f"{w['sessions']} sessions x ({w['views']} views, {w['renders']} renders of "
        f"{w['targets']} targets), {result['replicas']} replica(s), backend {result['backend']}"
    )
    click.echo(f"{'':<18}{'one process':>14}{'served (HTTP)':>16}")
    for k in keys:
        click.echo(f"{k:<18}{result['one_process'][k]!s:>14}{result['served'][k]!s:>16}")
