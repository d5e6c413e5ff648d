"""Calibration data and explicit quantization (INT8/FP8 Q/DQ graphs): not built yet.

The plan (shared/reference/tensorrt.md): ONNX Runtime's ``quantize_static`` with symmetric
QDQ (what TensorRT accepts) or ModelOpt, calibrated on synthetic scenes from
``viewrt.data``; results reported as PSNR against fp32 and ground truth.
"""
