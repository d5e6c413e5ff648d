"""The deployable runtime: manifest reader, backends, KV cache, view-by-view renderer,
frame-by-frame streaming session.

Imports numpy and a backend (onnxruntime, or tensorrt + cuda-python), never torch,
``viewrt.models`` or ``viewrt.export``.

    import viewrt.runtime as vrt
    with vrt.open("out/tiny") as r:
        vid = r.add_view(image, vrt.Camera(c2w, fxfycxcy))
        images = r.render([vrt.Camera(c2w_t, fxfycxcy_t)])
    with vrt.open("out/stream-tiny") as s:          # a token-window export (gct-stream)
        first = s.prefill(frames[:s.pinned])         # float32 [pinned, 3, S, S] in [0, 1]
        pred = s.add_frame(frame)                    # .pose_enc [9], .depth [S, S]
"""

from viewrt.contract.manifest import Manifest, load_manifest
from viewrt.errors import ViewrtError
from viewrt.geometry import Camera, NormalizationFrame
from viewrt.runtime.renderer import Renderer
from viewrt.runtime.session import SESSIONS, open, session_class
from viewrt.runtime.stream_session import FramePrediction, StreamSession

__all__ = [
    "Camera",
    "FramePrediction",
    "Manifest",
    "NormalizationFrame",
    "Renderer",
    "StreamSession",
    "ViewrtError",
    "load_manifest",
    "open",
    "SESSIONS",
    "session_class",
]
