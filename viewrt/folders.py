"""Output folders that several processes may write: a lock per folder, creation with one
clear error, and a restorable swap of a set of files (used by export and infer).

The lock is a file named after the folder's resolved path in ``<tmp>/viewrt-locks-<uid>/`` (the
filelock library), so nothing is added to the folder itself. A second writer on the same
machine waits for the first and then sees what it wrote (export then refuses another
model without --force).

The swap puts the new files in place in an order that a kill at any point can be undone:
new files are written into a hidden staging folder ``<folder>/.export-<id>/``; the old
files move into ``<staging>/old/`` (the manifest first, so an interrupted folder has no
manifest and is never taken for a whole export); the new files move in, the manifest
last (the commit). :func:`recover` (run under the lock, at the next export) puts a
complete old set back when the folder was left without a manifest, and removes every
stale staging folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

from viewrt.errors import ViewrtError

log = logging.getLogger("viewrt")
STAGING_PREFIX = ".export-"


def make_folder(path: str | Path, what: str = "output") -> Path:
    """Create ``path`` (and its parents) or raise one ViewrtError saying why not.

    Raises: ViewrtError when the path is a file, lies under a file, or cannot be created
        or written (permissions, a read-only or virtual file system).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ViewrtError(f"{what} {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".viewrt-write-test-", delete=True)
        probe.close()
    except OSError as e:
        raise ViewrtError(
            f"{what} {path}: cannot be created or written ({e.strerror or type(e).__name__})"
        ) from None
    return path


def check_apart(
    path: str | Path, within: dict, same: dict | None = None, what: str = "--out"
) -> None:
    """Refuse an output folder that would mix its files with the command's inputs.

    Args:
        path: the output folder.
        within: ``{description: folder or None}``: folders the output may be neither equal
            to nor inside (an export).
        same: folders the output may not be equal to, but may lie inside (a scene list's
            folder, often the working directory).
    Raises: ViewrtError naming the option and the input folder.
    """
    out = Path(path).expanduser().resolve()
    checks = [(n, f, True) for n, f in within.items()] + [
        (n, f, False) for n, f in (same or {}).items()
    ]
    for name, folder, nested in checks:
        if folder is None:
            continue
        f = Path(folder).expanduser().resolve()
        if out == f or (nested and f in out.parents):
            where = "is" if out == f else "lies inside"
            raise ViewrtError(
                f"{what} {path}: it {where} {name} ({folder}); give the outputs a folder of their own"
            )


def check_creatable(path: str | Path, what: str = "output") -> Path:
    """Check, without creating anything, that ``path`` can be made and written: it is not a
    file and its nearest existing parent is a folder that takes a file. Returns that parent.

    Raises: ViewrtError saying why not.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ViewrtError(f"{what} {path} exists and is not a folder")
    parent = next((p for p in (path.resolve(), *path.resolve().parents) if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise ViewrtError(f"{what} {path}: cannot be created (a file stands in its path)")
    try:  # access bits are not enough: a virtual file system (e.g. /proc) takes no files
        tempfile.NamedTemporaryFile(dir=parent, prefix=".viewrt-write-test-").close()
    except OSError as e:
        raise ViewrtError(
            f"{what} {path}: cannot be created or written ({e.strerror or type(e).__name__})"
        ) from None
    return parent


@contextlib.contextmanager
def locked_folder(path: str | Path, what: str = "output", clean_on_error=False):
    """Create ``path`` and hold its lock for the block (waiting while another viewrt
    process holds it). Yields the Path.

    ``clean_on_error``: when the folder did not exist before this call and was still empty
    once the lock was taken (nobody's work in it) and the block raises, remove it, still
    under the lock, so a failed run leaves nothing behind and never removes another
    process's results or a folder the user made. A callable decides per
    exception (``clean_on_error(exc) -> bool``).
    """
    existed = Path(path).exists()
    path = make_folder(path, what)
    lock = FileLock(str(lock_path(path)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another viewrt process writing into %s", path)
        lock.acquire()
    except OSError as e:
        raise ViewrtError(
            f"{what} {path}: cannot lock it ({e.strerror or type(e).__name__})"
        ) from None
    try:
        path.mkdir(
            parents=True, exist_ok=True
        )  # the previous holder may have removed it after a failure
        fresh = not existed and not any(path.iterdir())
        try:
            yield path
        except BaseException as e:
            if fresh and (clean_on_error(e) if callable(clean_on_error) else clean_on_error):
                shutil.rmtree(path, ignore_errors=True)
            raise
    finally:
        lock.release()


def lock_path(path: Path) -> Path:
    """The lock file of a folder: ``<tmp>/viewrt-locks-<uid>/<sha256 of its resolved
    path>.lock``; one folder per user, so that a folder another user made first (mode 0755)
    never stops this one from locking."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    locks = Path(tempfile.gettempdir()) / f"viewrt-locks-{uid}"
    locks.mkdir(mode=0o700, exist_ok=True)
    return locks / (hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32] + ".lock")


def staging_folder(path: Path) -> Path:
    """A new hidden staging folder inside ``path``."""
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path))


def swap_in(
    staging: Path, folder: Path, files: list[str], commit: str, replaced: list[str]
) -> None:
    """Move ``files`` (``commit`` last) from ``staging`` into ``folder``, first moving the
    ``replaced`` files present there into ``staging/old`` (``commit`` first). Restorable by
    :func:`recover` after a kill at any point."""
    old = staging / "old"
    old.mkdir(exist_ok=True)
    for name in sorted(replaced, key=lambda n: n != commit):  # the manifest leaves first
        if (folder / name).exists():
            os.replace(folder / name, old / name)
    for name in sorted(files, key=lambda n: n == commit):  # ... and arrives last
        os.replace(staging / name, folder / name)


def recover(folder: Path, commit: str, keep: Path | None = None) -> list[str]:
    """Undo interrupted swaps and remove stale staging folders (hold the lock).

    When ``folder`` has no ``commit`` file but a staging folder holds a complete old set
    (``old/<commit>`` among it), that set is moved back. Returns what was done, for a log line.
    """
    done = []
    for stale in sorted(folder.glob(STAGING_PREFIX + "*")):
        if not stale.is_dir() or (keep is not None and stale == keep):
            continue
        old = stale / "old"
        if not (folder / commit).exists() and (old / commit).exists():
            for f in old.iterdir():  # the whole old set goes back over any new file moved in
                os.replace(f, folder / f.name)
            done.append(f"restored the export that an interrupted run had moved into {stale.name}")
        shutil.rmtree(stale, ignore_errors=True)
        done.append(f"removed {stale.name} left by an interrupted run")
    return done
