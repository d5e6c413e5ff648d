"""The deployable runtime alone: ``import viewrt.runtime`` loads neither the dataset code,
nor the applications built on the runtime (bench, evaluation), nor PIL, torch, the model
or export code, matplotlib or scikit-image (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "viewrt.data",
    "PIL",
    "viewrt.bench",
    "viewrt.evaluation",
    "torch",
    "viewrt.models",
    "viewrt.export",
    "matplotlib",
    "skimage",
)


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import json, sys; {statement}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {{'viewrt', 'PIL', 'torch', 'matplotlib', 'skimage'}})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _heavy(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_runtime_loads_only_the_deployable_part():
    loaded = _loaded_after("import viewrt.runtime")
    assert "viewrt.runtime.renderer" in loaded  # the check sees what was imported
    assert _heavy(loaded) == []


def test_opening_a_backend_class_loads_no_application_code():
    loaded = _loaded_after(
        "from viewrt.runtime.backends import backend_class; backend_class('ort')"
    )
    assert "viewrt.runtime.backends.ort" in loaded
    assert _heavy(loaded) == []


def test_the_check_sees_the_applications():
    """The same probe after importing the bench does report it (the test can fail)."""
    assert {"viewrt.bench", "viewrt.data"} <= set(_heavy(_loaded_after("import viewrt.bench")))
