"""``viewrt studio``: a local web page over the runtime (viewrt/studio/, docs in README).

The composition: the page's session manager opens renderers with :func:`viewrt.runtime.open`,
and the backends on offer (:func:`backend_choices`) come from the runtime's registry; both
are given to viewrt.studio, which does not import the runtime.

Starlette and uvicorn (the ``studio`` extra) come with viewrt.studio.server, imported
inside the command; scipy and playwright are imported by the functions that use them:
``viewrt --help`` needs none.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

import viewrt.runtime as vrt
from viewrt.cli._errors import cli_errors, finite_float
from viewrt.cli.options import (
    backend_option,
    export_dir_argument,
    list_option,
    synthetic_option,
    threads_option,
)
from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.errors import ViewrtError
from viewrt.runtime import backends as registry
from viewrt.serve.session import Limits, SessionManager
from viewrt.studio import browser
from viewrt.studio.scenes import Catalogue
from viewrt.studio.state import BackendChoice, Studio

FINITE_POSITIVE = finite_float(True)
STUDIO_MODULES = ("starlette", "uvicorn", "scipy")


def backend_choices(export_dir: str | Path) -> dict[str, BackendChoice]:
    """The backends the page offers, by id: every registry configuration on the export, and
    ``<name>-<precision>`` on each quantized export of the same model in a sibling folder
    (``viewrt calib --out``) for the configurations that run that precision; each with why
    it cannot run here (``registry.unavailable``; None: it can).

    Raises: ViewrtError when the export's manifest cannot be read."""
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    out = {}
    for name in registry.names():
        why = registry.unavailable(name, manifest)
        out[name] = BackendChoice(name, name, export_dir, why)
    for q_dir, q in _quantized_siblings(export_dir, manifest):
        for name, row in registry.configs().items():
            if q.precision in row.quantized:
                cid = f"{name}-{q.precision}"
                out.setdefault(cid, BackendChoice(cid, name, q_dir, registry.unavailable(name, q)))
    return out


def _quantized_siblings(export_dir: Path, manifest: Manifest) -> list[tuple[Path, Manifest]]:
    found = []
    for d in sorted(export_dir.resolve().parent.iterdir()):
        if d == export_dir.resolve() or not (d / "manifest.json").is_file():
            continue
        try:
            m = load_manifest(d)
        except ViewrtError:
            continue
        same = (m.family, m.preset, m.image_size) == (
            manifest.family,
            manifest.preset,
            manifest.image_size,
        )
        if same and m.precision_row.quantized:
            found.append((d, m))
    return found


def _require_studio_extra() -> None:
    missing = [m for m in STUDIO_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ViewrtError(
            f'viewrt studio needs {", ".join(missing)}: pip install ".[studio]" (from the viewrt clone)'
        )


@click.command("studio")
@export_dir_argument()
@list_option("Scene list file (one scene JSON per line) to offer besides the synthetic scenes.")
@synthetic_option("Synthetic scenes to offer, made on the spot (default: 4, none with --list).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback makes the page reachable from other machines.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@backend_option(registry.names, "ort", "Backend a new page session starts on.")
@threads_option()
@click.option("--max-sessions", type=click.IntRange(1), default=4, show_default=True,
              help="Page sessions held at once.")  # fmt: skip
@click.option("--max-cache-mib", type=FINITE_POSITIVE, default=512.0, show_default=True,
              help="K/V cache MiB all sessions may reserve together.")  # fmt: skip
@click.option("--idle-timeout", type=FINITE_POSITIVE, default=600.0, show_default=True,
              help="Seconds after which an idle page session is closed.")  # fmt: skip
@click.option(
    "--screenshot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Instead of serving: drive the page in headless chromium (playwright) and save a PNG.",
)
@cli_errors
def studio(
    export_dir, list_file, synthetic, host, port, backend, threads, max_sessions, max_cache_mib,
    idle_timeout, screenshot,
):  # fmt: skip
    """Serve a page to add, remove and pin views of EXPORT_DIR's model, watch its cache and
    latency, and render targets (http://HOST:PORT/; Ctrl-C stops)."""
    _require_studio_extra()
    import viewrt.studio.server as server  # lazy: imports starlette and uvicorn

    manifest = load_manifest(export_dir)
    limits = Limits(max_sessions, int(max_cache_mib * 2**20), idle_timeout)
    opts = {} if threads is None else {"threads": threads}
    manager = SessionManager(export_dir, backend, limits, opts, opener=vrt.open)
    n = synthetic if synthetic is not None else (0 if list_file else 4)
    catalogue = Catalogue(manifest.image_size, n, list_file)
    app = Studio(manager, catalogue, backend_choices(export_dir))
    if app.backends[backend].why is not None:
        raise ViewrtError(f"--backend {backend} cannot run here: {app.backends[backend].why}")
    if screenshot is not None:
        return _screenshot(app, Path(screenshot))
    server.check_port(host, port)
    if not server.is_loopback(host):
        click.echo(f"viewrt studio: listening on {host}, reachable from other machines", err=True)
    click.echo(f"viewrt studio: http://{host}:{port}/ ({export_dir}); Ctrl-C stops", err=True)
    server.run(app, host, port)


def _screenshot(app, out: Path) -> None:
    import viewrt.studio.server as server  # lazy: imports starlette and uvicorn

    with server.Background(app) as bg:
        browser.screenshot(bg.url, out)
    click.echo(f"viewrt studio: wrote {out}", err=True)
