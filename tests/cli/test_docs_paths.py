"""Every repository path the docs cite exists: README.md and docs/*.md name files such as
`runtime/kv/view_slots.py` or `docs/design.md`; a moved or deleted file makes this fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("viewrt", "runtime", "export", "models", "calib", "tests", "docs", ".ci")
# a path inside the repository: starts at a top-level folder, ends in a file or folder name
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*[\w/])" % "|".join(re.escape(t) for t in TOP))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _cited(doc: Path) -> list[str]:
    return sorted(set(PATH.findall(doc.read_text())))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_paths_exist(doc):
    missing = [
        p
        for p in _cited(doc)
        if not (ROOT / p).exists() and not p.endswith("_")  # a prefix: report_small_{a,b}
    ]
    assert not missing, f"{doc.name} cites paths that do not exist: {missing}"


def test_the_design_document_is_in_the_repository():
    assert (ROOT / "docs" / "design.md").is_file()
    for doc in DOCS:
        assert "DESIGN.md" not in doc.read_text(), f"{doc.name} cites DESIGN.md (docs/design.md)"
