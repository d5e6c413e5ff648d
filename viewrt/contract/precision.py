"""The precision table: one row per precision, read by export, calib, the backends and
TensorRT builds. Adding a precision is one row here (plus calib/ for quantized ones)."""

from __future__ import annotations

from dataclasses import dataclass

from viewrt.errors import ViewrtError


@dataclass(frozen=True)
class Precision:
    """How one precision is stored, validated and built.

    Attributes:
        name: the manifest's ``precision`` value.
        kv_dtype: numpy dtype name of the K/V cache (encoder outputs, decoder past inputs).
        itemsize: bytes per K/V element.
        atol_kv: max abs error of K/V against PyTorch fp32 at export validation.
        kv_atol_scaled: the K/V tolerance is ``atol_kv * max(1, max|K|)`` (fp16 storage
            rounds relative to magnitude: a K of 8 rounds by up to 0.004).
        atol_images: max abs error of rendered images against PyTorch fp32.
        exported: made by ``viewrt export`` directly (False: made by ``viewrt calib``).
        quantized: the graphs carry explicit QuantizeLinear/DequantizeLinear pairs.
        trt_strongly_typed: build with NetworkDefinitionCreationFlag.STRONGLY_TYPED (the
            graph's own types decide; TensorRT 11 builds nothing else).
        trt_builder_flags: BuilderFlag names set on TensorRT 10 for a weakly typed build.
        ort_trt_fp16: ONNX Runtime TensorRT EP ``trt_fp16_enable`` (False for typed graphs,
            which must not be down-cast).
        openvino_hint: OpenVINO INFERENCE_PRECISION_HINT that keeps the graph's numerics
            (None: the plugin's default).
        min_compute_capability: smallest CUDA compute capability that runs it on TensorRT.
        weight_itemsize: bytes per matmul weight in the graph (fp32 4, fp16 2, int8/fp8 1).
        atol_images_bf16: max abs error of rendered images against PyTorch fp32 when a
            backend computes this export in bf16 and keeps its K/V cache in bf16 (OpenVINO's
            CPU plugin in bf16, its default with AVX512-BF16 or AMX), or keeps the cache in
            bf16 while computing in f32; None: no backend runs this export so.
    """

    name: str
    kv_dtype: str
    itemsize: int
    atol_kv: float
    kv_atol_scaled: bool
    atol_images: float
    exported: bool
    quantized: bool
    trt_strongly_typed: bool
    trt_builder_flags: tuple[str, ...]
    ort_trt_fp16: bool
    openvino_hint: str | None
    min_compute_capability: tuple[int, int] = (0, 0)
    weight_itemsize: int = 4
    atol_images_bf16: float | None = None

    def kv_tolerance(self, peak_abs: float) -> float:
        """The K/V tolerance for a tensor whose largest magnitude is ``peak_abs``."""
        return self.atol_kv * max(1.0, float(peak_abs)) if self.kv_atol_scaled else self.atol_kv


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        # fp32 everywhere; TensorRT: no precision flags, TF32 cleared by the build.
        # bf16 (OpenVINO): 2e-2. The bf16 cache alone (f32 compute) measured at most 1.1e-3
        # (tiny) and 7.1e-4 (small) over 3 runs of the runtime tests' scripted sequences
        # (`pytest -s tests/runtime/test_openvino_bf16_cache.py -k scripted` prints it; AMD
        # EPYC without AVX-512, OpenVINO 2026.4.1). bf16 compute with the bf16 cache, on an
        # AVX512-BF16 EPYC (2026-12-03, same command, 7 runs): 0.0079-0.0101 on tiny and
        # 0.0088-0.0101 on small, so the former 1e-2 failed about one run in ten; PyTorch's
        # own bf16 autocast is 1.05e-2 from its fp32 on `small` (docs/bench/cpu/summary.md).
        # A bf16 significand near 1.0 steps by 2**-8 = 3.9e-3: 2e-2 is five steps.
        Precision(
            "fp32",
            "float32",
            4,
            1e-4,
            False,
            1e-4,
            True,
            False,
            False,
            (),
            False,
            "f32",
            atol_images_bf16=2e-2,
        ),
        # fp16 matmuls and cache, fp32 residual stream/norms/softmax (explicit casts in the
        # graph): built strongly typed so TensorRT keeps the fp32 islands.
        Precision(
            "fp16",
            "float16",
            2,
            1e-2,
            True,
            1e-2,
            True,
            False,
            True,
            (),
            False,
            "f32",
            weight_itemsize=2,
        ),
        # Explicit Q/DQ graphs from calib/: fp32 cache and IO, int8 or fp8 matmuls.
        Precision(
            "int8",
            "float32",
            4,
            5e-2,
            True,
            5e-2,
            False,
            True,
            True,
            (),
            False,
            None,
            (6, 1),
            weight_itemsize=1,
        ),
        Precision(
            "fp8",
            "float32",
            4,
            1e-1,
            True,
            1e-1,
            False,
            True,
            True,
            (),
            False,
            None,
            (8, 9),
            weight_itemsize=1,
        ),
    )
}


@dataclass(frozen=True)
class KVCache:
    """How the K/V cache is stored: one row per manifest ``kv_dtype``.

    Attributes:
        dtype: the manifest's ``kv_dtype`` (numpy name): the writer's K/V outputs, the
            reader's K/V inputs and the runtime's cache buffers.
        itemsize: bytes per cached element.
        scaled: an 8-bit cache with scales: a QuantizeLinear at each writer output and a
            DequantizeLinear at each reader input, per-head scales in both graphs and in the
            manifest (``quantization.kv_cache``); made by ``viewrt calib --kv``.
        atol_images: max abs error of rendered images (values in [0, 1]) against the same
            graphs with a float32 cache, on fresh random views at every step of a scripted
            sequence (0: the cache is the graphs' own dtype, the precision row's tolerance holds).
        min_psnr_db: the same comparison as PSNR (dB), the bound for the whole render.
    """

    dtype: str
    itemsize: int
    scaled: bool
    atol_images: float = 0.0
    min_psnr_db: float = 0.0


KV_CACHES: dict[str, KVCache] = {
    c.dtype: c
    for c in (
        KVCache("float32", 4, False),
        KVCache("float16", 2, False),
        # int8 with per-(layer, K/V, head) absmax scales: the rounding step is at most
        # amax_head / 127 (0.4% of the head's range) on every cached element. Measured on the
        # tiny preset's random weights (tests/calib/test_kv_cache.py): images within 0.003 of
        # the float32 cache on ONNX Runtime and OpenVINO, 64-74 dB; the bound leaves ~7x room.
        KVCache("int8", 1, True, atol_images=2e-2, min_psnr_db=45.0),
    )
}


def get_kv_cache(dtype: str) -> KVCache:
    """The row of a cache dtype. Raises ViewrtError naming the known ones."""
    if dtype not in KV_CACHES:
        raise ViewrtError(f"K/V cache dtype {dtype!r}; expected one of {', '.join(KV_CACHES)}")
    return KV_CACHES[dtype]


EXPORT_PRECISIONS = tuple(n for n, p in PRECISIONS.items() if p.exported)
QUANTIZED_PRECISIONS = tuple(n for n, p in PRECISIONS.items() if p.quantized)


def get_precision(name: str) -> Precision:
    """The row of a precision name. Raises ViewrtError naming the known ones."""
    if name not in PRECISIONS:
        raise ViewrtError(f"unknown precision {name!r}; expected one of {', '.join(PRECISIONS)}")
    return PRECISIONS[name]
