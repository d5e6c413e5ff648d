"""A studio over an export (tests/studio): the ORT backend on one thread, synthetic scenes
and an optional scene list."""

from __future__ import annotations

from viewrt.runtime import load_manifest
from viewrt.serve.session import Limits, SessionManager
from viewrt.studio.scenes import Catalogue
from viewrt.studio.state import Studio


def make_studio(export, scene_list=None, synthetic=2, clock=None, **limits) -> Studio:
    kw = {} if clock is None else {"clock": clock}
    manager = SessionManager(export, "ort", Limits(**limits), {"threads": 1}, **kw)
    return Studio(manager, Catalogue(load_manifest(export).image_size, synthetic, scene_list))
