"""A gct-stream stream-tiny export shared by the streaming CLI tests: the session-wide
``stream_export`` fixture of tests/conftest.py where there is one, else one made here once
per module."""

from __future__ import annotations

import pytest


def stream_export_dir(request, tmp_path_factory):
    """The export folder of a stream-tiny export (fp32, untrained seeded weights)."""
    try:
        return request.getfixturevalue("stream_export")[0]
    except pytest.FixtureLookupError:
        from viewrt.export.onnx_export import export_model
        from viewrt.models import build_model

        model, _ = build_model("stream-tiny")
        out = tmp_path_factory.mktemp("export_stream_tiny")
        export_model(model, out, "stream-tiny", max_views=6, progress=False)
        return out
