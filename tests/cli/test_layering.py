"""Arrows point down only (DESIGN.md): every module is parsed, function-local imports
included, and checked against what its layer may import. Only viewrt/cli composes layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# folder -> (import package, imports it must never make)
LAYERS = {
    "viewrt": (
        "viewrt",
        (
            "viewrt.models",
            "viewrt.export",
            "viewrt.runtime",
            "viewrt.calib",
            "viewrt.cli",
            "viewrt.serve",
            "torch",
            "onnx",
        ),
    ),
    "runtime": (
        "viewrt.runtime",
        ("viewrt.models", "viewrt.export", "viewrt.calib", "viewrt.cli", "viewrt.serve", "torch"),
    ),
    # an application over the runtime (Ray only in serve/app.py: tests/serve checks that)
    "viewrt/serve": (
        "viewrt.serve",
        ("viewrt.models", "viewrt.export", "viewrt.calib", "viewrt.cli", "torch", "onnx"),
    ),
    "models": ("viewrt.models", ("viewrt.export", "viewrt.runtime", "viewrt.calib", "viewrt.cli")),
    "export": ("viewrt.export", ("viewrt.runtime", "viewrt.calib", "viewrt.cli")),
    "calib": ("viewrt.calib", ("viewrt.cli",)),
}


def _modules():
    for folder in LAYERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if folder == "viewrt" and path.relative_to(ROOT / "viewrt").parts[0] == "cli":
                continue  # the one place that composes the layers
            if folder == "viewrt" and path.relative_to(ROOT / "viewrt").parts[0] == "serve":
                continue  # its own layer (above the runtime)
            yield folder, path


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module name an import statement anywhere in the file names (absolute)."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


@pytest.mark.parametrize(
    "folder, path",
    list(_modules()),
    ids=lambda x: str(x.relative_to(ROOT)) if isinstance(x, Path) else x,
)
def test_module_imports_only_layers_below(folder, path):
    _, forbidden = LAYERS[folder]
    bad = [
        f"line {ln}: {name}"
        for ln, name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert not bad, (
        f"{path.relative_to(ROOT)} imports a layer above it or a heavy dependency: {bad}"
    )


def test_the_check_sees_function_local_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from viewrt.models import build_model\n    import torch\n")
    assert [n for _, n in _imports(f)] == ["viewrt.models", "viewrt.models.build_model", "torch"]
