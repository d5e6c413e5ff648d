"""Where dataset files are: a path written on another machine, looked for here.

Datasets processed on another machine carry absolute paths that no longer exist here;
:class:`DataRoots` says where to look for them instead (prefix maps and a fallback under
the files' own roots). See ``docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath

from viewrt.errors import ViewrtError

__all__ = ["DataRoots", "not_found_message"]

SCENE_TAIL = 2  # <root>/metadata/<scene>.json: the fallback looks for "metadata/<scene>.json"
IMAGE_TAIL = 3  # <root>/images/<scene>/<file>: the fallback looks for "images/<scene>/<file>"


@dataclass(frozen=True)
class DataRoots:
    """Where to look for dataset files whose recorded paths do not exist on this machine.

    Upstream preprocessing writes absolute paths (list lines to ``<root>/metadata/<scene>.json``,
    ``image_path`` to ``<root>/images/<scene>/<NNNNN>.png``), which are wrong once the
    data is moved. A path as written (list line or ``image_path``) is looked for, in order:

    1. under each prefix map ``old -> new`` whose ``old`` is a leading part of the path
       (whole components; longest ``old`` first): ``new`` + the rest;
    2. the path itself (a relative path joined to the list's or scene JSON's folder);
    3. if ``fallback``: its trailing part (``metadata/<scene>.json``: last 2 components
       for a scene file; ``images/<scene>/<file>``: last 3 for an image) under the file's
       own roots: for a scene file, the list file's folder and that folder's parent
       (:meth:`for_list`); for an image, the scene JSON's folder and its parent (where the
       JSON sits in ``<root>/metadata/``), then the list's.

    The first that is a file wins; when none is, the error gives the path as written and
    every place tried.

    Attributes:
        maps: ``(old, new)`` prefix pairs, e.g. from ``viewrt infer --data-root OLD=NEW``.
        search: folders for the fallback besides a file's own roots (set by :meth:`for_list`).
        fallback: look for the trailing part under the roots (on by default).
    """

    maps: tuple[tuple[str, str], ...] = ()
    search: tuple[Path, ...] = ()
    fallback: bool = True

    @classmethod
    def parse(cls, specs: Sequence[str] = (), fallback: bool = True) -> DataRoots:
        """Build from ``OLD=NEW`` strings (split at the first ``=``).

        Raises:
            ViewrtError: a spec without ``=``, an empty side, or a NEW that is not a folder.
        """
        maps = []
        for spec in specs:
            old, sep, new = str(spec).partition("=")
            if not sep or not old.strip() or not new.strip():
                raise ViewrtError(
                    f"--data-root {spec!r}: expected OLD=NEW, e.g. /cluster/re10k=/data/re10k"
                )
            if not Path(new).is_dir():
                raise ViewrtError(f"--data-root {spec!r}: {new} is not a folder")
            maps.append((old.strip(), new.strip()))
        return cls(maps=tuple(maps), fallback=fallback)

    def for_list(self, list_path: str | Path) -> DataRoots:
        """A copy whose fallback also looks under a list file's folder and its parent."""
        folder = Path(list_path).parent
        extra = tuple(p for p in (folder, folder.parent) if p not in self.search)
        return replace(self, search=self.search + extra)

    def candidates(
        self, written: str | Path, base: Path | None, kind: str, own: Sequence[Path] = ()
    ) -> list[Path]:
        """Places to look for a path as written in a file, in order (no file is touched).

        Args:
            written: the path as written (a list line or an ``image_path``).
            base: folder a relative path is joined to (None: the current folder).
            kind: ``"scene"`` or ``"image"`` (how long the trailing part is).
            own: the file's own roots for the fallback, before :attr:`search`.
        Returns:
            Distinct paths, the first that exists is the one to use.
        """
        raw = Path(written)
        out: list[Path] = []
        parts = raw.parts
        for old, new in sorted(self.maps, key=lambda m: -len(PurePath(m[0]).parts)):
            old_parts = PurePath(old).parts
            if old_parts and parts[: len(old_parts)] == old_parts:
                out.append(Path(new).joinpath(*parts[len(old_parts) :]))
        out.append(raw if raw.is_absolute() or base is None else base / raw)
        tail = SCENE_TAIL if kind == "scene" else IMAGE_TAIL
        if self.fallback and len(parts) > tail:
            rest = Path(*parts[-tail:])
            out += [root / rest for root in (*own, *self.search)]
        return list(dict.fromkeys(out))

    def resolve(
        self, written: str | Path, base: Path | None, kind: str, own: Sequence[Path] = ()
    ) -> tuple[Path, tuple[Path, ...]]:
        """``(path, tried)``: the first candidate that is a file and ``()``; or, when none
        is, the path as written (joined to ``base``) and every candidate tried."""
        cands = self.candidates(written, base, kind, own)
        for c in cands:
            if c.is_file():
                return c, ()
        raw = Path(written)
        return (raw if raw.is_absolute() or base is None else base / raw), tuple(cands)


def not_found_message(what: str, path: Path, tried: Sequence[Path]) -> str:
    """One line: ``what`` not found at ``path``, and the other places tried."""
    others = [str(t) for t in tried if t != path]
    return f"{what} not found: {path}" + (f" (also tried: {'; '.join(others)})" if others else "")
