"""The deployable runtime: manifest reader, backends, KV cache, view-by-view renderer.

Imports numpy and a backend (onnxruntime, or tensorrt + cuda-python), never torch,
``viewrt.models`` or ``viewrt.export``.

    import viewrt.runtime as vrt
    with vrt.open("out/tiny") as r:
        vid = r.add_view(image, vrt.Camera(c2w, fxfycxcy))
        images = r.render([vrt.Camera(c2w_t, fxfycxcy_t)])
"""

from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.errors import ViewrtError
from viewrt.geometry import Camera, NormalizationFrame
from viewrt.runtime.renderer import Renderer
from viewrt.runtime.session import SESSIONS, open, session_class

__all__ = [
    "Camera",
    "Manifest",
    "NormalizationFrame",
    "Renderer",
    "ViewrtError",
    "load_manifest",
    "open",
    "SESSIONS",
    "session_class",
]
