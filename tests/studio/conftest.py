"""The studio's tests need its extra (Starlette, uvicorn, scipy); a written scene list."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "starlette", reason='viewrt studio needs the studio extra: pip install ".[studio]"'
)
pytest.importorskip("scipy", reason='viewrt studio needs the studio extra: pip install ".[studio]"')


@pytest.fixture(scope="session")
def scene_list(tmp_path_factory, tiny_export):
    """A list file of two synthetic scenes at the tiny preset's size, in the dataset format."""
    from viewrt.data import make_synthetic_list
    from viewrt.runtime import load_manifest

    size = load_manifest(tiny_export[0]).image_size
    out = tmp_path_factory.mktemp("studio_scenes")
    return make_synthetic_list(out, 2, n_views=6, size=size, seed=910000)
