"""A studio over an export (tests/studio): the ORT backend on one thread, synthetic scenes
and an optional scene list; composed as ``viewrt studio`` does (the runtime's ``open`` and
the backends on offer given from the CLI's side)."""

from __future__ import annotations

import viewrt.runtime as vrt
from viewrt.cli.studio import backend_choices
from viewrt.serve.session import Limits, SessionManager
from viewrt.studio.scenes import Catalogue
from viewrt.studio.state import Studio


def make_studio(export, scene_list=None, synthetic=2, clock=None, **limits) -> Studio:
    kw = {} if clock is None else {"clock": clock}
    manager = SessionManager(export, "ort", Limits(**limits), {"threads": 1}, opener=vrt.open, **kw)
    catalogue = Catalogue(vrt.load_manifest(export).image_size, synthetic, scene_list)
    return Studio(manager, catalogue, backend_choices(export))
