"""ONNX Runtime's int8 GEMM kernel choice, shared by the ort backend and the bench's int8 peak
probe. A leaf module: it imports nothing of viewrt and not onnxruntime (callers pass their
``SessionOptions``).

ONNX Runtime's session config key ``session.x64quantprecision`` (include/onnxruntime/core/
session/onnxruntime_session_options_config_keys.h, kOrtSessionOptionsAvx2PrecisionMode): "x64
SSE4.1/AVX2/AVX512 (with no VNNI) has overflow problem with quantized matrix multiplication
with U8S8 ... turned on, use slower U8U8 matrix multiplications". On a CPU with VNNI the u8s8
kernel does not saturate and ONNX Runtime ignores the key. docs/calib.md ("Long caches") has
what it changed for the int8 export of `small`.
"""

from __future__ import annotations

EXACT_INT8_KEY = "session.x64quantprecision"


def exact_int8_kernel(opts) -> None:
    """Ask ONNX Runtime for its non-saturating int8 GEMM on x86 CPUs without VNNI.

    Args:
        opts: an ``onnxruntime.SessionOptions``; changed in place.
    """
    opts.add_session_config_entry(EXACT_INT8_KEY, "1")
