"""The CLI's own rules (viewrt/cli/__init__.py, viewrt/cli/options.py): `viewrt --help`
imports no heavy layer; shared options are declared once; ``--precision`` means the graph
precision in every subcommand, and the old meanings are refused with a hint."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from viewrt.cli import main
from viewrt.cli.options import parse_frame_indices
from viewrt.contract.precision import PRECISIONS
from viewrt.errors import ViewrtError

CLI = Path(__file__).resolve().parents[2] / "viewrt" / "cli"
HEAVY = (
    "torch", "onnx", "onnxruntime", "openvino", "tensorrt", "matplotlib", "skimage", "ray",
    "starlette", "uvicorn", "scipy", "playwright",
)  # fmt: skip
LAZY_LAYERS = (
    "viewrt.models",
    "viewrt.export",
    "viewrt.calib",
    "viewrt.serve.app",
    "viewrt.studio.server",
)  # import torch/onnx, or Ray (which must see the loopback setting before it loads)
LAZY_THIRD_PARTY = ("torch", "tqdm", "ray")
SHARED = (
    "--out",
    "--seed",
    "--precision",
    "--threads",
    "--device",
    "--backend",
    "--backends",
    "--list",
    "--max-views",
    "--synthetic",
    "--style",
)


def _imports(tree: ast.AST):
    """(module name, inside a function?) of every absolute import of a parsed module."""
    local = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            local |= {id(n) for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, id(node) in local) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, id(node) in local


def _is(name: str, packages) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_help_imports_no_heavy_layer():
    code = (
        "import sys; from click.testing import CliRunner; from viewrt.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", f"`viewrt --help` imports {res.stdout.strip()}"


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_imports_follow_the_rule(path):
    """Top: everything but the torch/onnx layers; inside functions: only those layers and
    the heavy third-party packages."""
    bad = []
    for name, inside in _imports(ast.parse(path.read_text())):
        if inside and not _is(name, LAZY_LAYERS + LAZY_THIRD_PARTY):
            bad.append(f"{name} imported inside a function: import it at module top")
        if not inside and _is(name, LAZY_LAYERS + HEAVY):
            bad.append(f"{name} imported at module top: it loads torch/onnx on `viewrt --help`")
    assert not bad, f"{path.name}: {bad}"


def test_the_import_check_sees_both_kinds(tmp_path):
    tree = ast.parse(
        "import click\nfrom viewrt.models import x\ndef f():\n    from viewrt.data import y\n"
    )
    assert list(_imports(tree)) == [
        ("click", False),
        ("viewrt.models", False),
        ("viewrt.data", True),
    ]


@pytest.mark.parametrize(
    "path", sorted(p for p in CLI.glob("*.py") if p.name != "options.py"), ids=lambda p: p.name
)
def test_shared_options_are_declared_once(path):
    """A shared flag is declared in viewrt/cli/options.py only (hidden refusals aside)."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "click.option"
            and any(isinstance(a, ast.Constant) and a.value in SHARED for a in node.args)
        ):
            bad.append(f"line {node.lineno}: {ast.unparse(node.args[0])}")
    assert not bad, f"{path.name} declares shared options itself: {bad}"


def _commands():
    return sorted(main.commands.items())


@pytest.mark.parametrize("name, command", _commands(), ids=[n for n, _ in _commands()])
def test_precision_is_the_graph_precision_everywhere(name, command):
    for p in command.params:
        if "--precision" in getattr(p, "opts", ()) and not p.hidden:
            assert isinstance(p.type, click.Choice), name
            assert set(p.type.choices) <= set(PRECISIONS), (name, p.type.choices)


@pytest.mark.parametrize(
    "args, hint",
    [
        (["infer", "EXPORT", "--out", "OUT", "--precision", "bf16"], "--inference-precision bf16"),
        (["infer", "EXPORT", "--out", "OUT", "--precision", "fp32"], "--inference-precision f32"),
        (["train", "--out", "OUT", "--precision", "fp32"], "--autocast off"),
        (["train", "--out", "OUT", "--precision", "bf16"], "--autocast bf16"),
        (["train", "--precision", "auto"], "--autocast auto"),
        (["calib", "EXPORT", "--out", "OUT", "--scenes", "s.txt"], "--list s.txt"),
        (["calib-report", "EXPORT", "--out", "OUT", "--scenes", "s.txt"], "--list s.txt"),
    ],
)
def test_old_spellings_are_refused_with_a_hint(tmp_path, args, hint):
    args = [str(tmp_path / a) if a in ("EXPORT", "OUT") else a for a in args]
    r = CliRunner().invoke(main, args)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.stderr
    assert " is " in lines[0] and hint in lines[0], lines[0]
    assert not (tmp_path / "OUT").exists()


def test_frame_indices():
    assert parse_frame_indices("5, 2") == [5, 2]  # the order given
    assert parse_frame_indices(None) is None
    for bad in ("x,1", "1,1", ",", "-1"):
        with pytest.raises(ViewrtError, match="--targets"):
            parse_frame_indices(bad)
