"""What a source file imports, read from its syntax tree (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path) -> set[str]:
    """The module names of every import statement anywhere in the file (function-local ones
    included): ``import a.b`` gives ``a.b``, ``from a.b import c`` gives ``a.b``; relative
    imports without a module name are left out."""
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
