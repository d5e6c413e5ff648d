"""Backends behind one runner interface (base.Backend): ONNX Runtime (ort.py) and native
TensorRT (trt.py), with CUDA memory helpers (cuda.py). Imported lazily by the renderer."""
