"""No function of the package is 100 lines or more (issue 18: a function has one job; split
by step, not by line count). Tests and test doubles are not the package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ("viewrt", "runtime", "export", "models", "calib", ".ci")
LIMIT = 100


def _long_functions() -> list[str]:
    found = []
    for top in PACKAGE:
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n >= LIMIT:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n})")
    return found


def test_no_function_of_100_lines_or_more():
    assert not _long_functions()
