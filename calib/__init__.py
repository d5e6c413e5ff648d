"""Calibration data and explicit quantization: INT8/FP8 Q/DQ graphs for TensorRT, OpenVINO
and ONNX Runtime, with an accuracy report and a TensorRT rule check (docs/calib.md).

- data.py: calibration feeds from posed views of scenes, through the fp32 runtime;
- quantize.py: ONNX Runtime ``quantize_static`` (QDQ, symmetric, per-channel weights) into
  a new export folder whose manifest records the quantization;
- export/qdq_check.py (used here): TensorRT's explicit-quantization rules, checked statically;
- export/trt_qdq.py: what ``viewrt build`` does for Q/DQ graphs (strongly typed, FP8 >= sm 8.9);
- report.py: PSNR/SSIM vs fp32 and ground truth by number of views, per-layer K/V error;
- memcheck.py, speed.py: the memory estimate against peak RSS, and the CPU speed probe;
- the commands ``viewrt calib``, ``viewrt calib-report``, ``viewrt estimate`` are in viewrt/cli/calib.py.

Uses onnx and onnxruntime (and matplotlib for the report's plot); never imported by the
runtime.
"""
