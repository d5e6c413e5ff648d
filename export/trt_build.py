"""Build TensorRT engines from the exported ONNX graphs, on the target (TensorRT 10.x or 11.x).

Engines are tied to the GPU architecture and the TensorRT version, so they are built on the
device that runs them, and each build records both. ``tensorrt`` is imported only through
:mod:`viewrt.devices` (the one TensorRT import and GPU probe): this module imports, and its
arithmetic runs, where TensorRT is absent.

Typing and precision (the same engine numerics on 10.x and 11.x):

- A graph that carries fp16 types itself (an ``--precision fp16`` export: fp16 weights and
  I/O with fp32 islands for norms, softmax and the residual stream) is built strongly typed,
  with no precision flag: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x (it exists
  in 10.3), always on 11.x (where the flag is deprecated and ignored). Weak typing plus
  ``BuilderFlag.FP16`` would let TensorRT compute the fp32 islands in fp16.
- An fp32 graph built as ``fp32`` is strongly typed as well: fp32 everywhere.
- ``BuilderFlag.FP16`` is used only to down-cast an fp32 graph on 10.x (weakly typed);
  11.x has no such flag, so there fp16 must be in the graph.
- ``BuilderFlag.TF32`` (on by default in TensorRT) is cleared unless ``tf32=True``, so fp32
  engines run fp32 matmuls on Ampere and later (Orin included).

Each build records the effective precision, the typing mode, the builder flags and
``device_memory_size_v2`` (the activation memory of a context at the profile's maximum).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import onnx

from viewrt import devices
from viewrt.contract.estimate import MIB, device_row, estimate
from viewrt.contract.manifest import Manifest
from viewrt.contract.precision import PRECISIONS, get_precision
from viewrt.errors import ViewrtError
from viewrt.export.trt_ops import check_trt_compatible
from viewrt.export.trt_qdq import qdq_plan

Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]  # (min, opt, max)

_PRECISIONS = tuple(
    PRECISIONS
)  # the contract's precision table (int8/fp8: Q/DQ graphs from viewrt calib)


_log = logging.getLogger("viewrt.build")


def _say(msg: str) -> None:
    _log.info("[trt] %s", msg)


# ---------------------------------------------------------------------------- availability


def trt_available() -> tuple[bool, str]:
    """Tell whether engines can be built here (probed once per process, see viewrt.devices).

    Returns:
        ``(True, "TensorRT <version> on <gpu> ...")``, or ``(False, reason)`` when ``tensorrt``
        does not import, no CUDA GPU is usable (the CUDA error is named), or TensorRT cannot
        create a builder.
    """
    status = devices.tensorrt_status()
    return status.ok, status.reason


def trt_version() -> str:
    """Return the installed TensorRT version, e.g. ``"10.3.0.30"``.

    Raises:
        ViewrtError: TensorRT is not installed.
    """
    return str(devices.import_tensorrt().__version__)


def trt_major() -> int:
    """Return the installed TensorRT major version (10 or 11).

    Raises:
        ViewrtError: TensorRT is not installed.
    """
    return int(trt_version().split(".")[0])


# ---------------------------------------------------------------------------- build


def graph_has_fp16(onnx_path: str | Path) -> bool:
    """True when the graph carries fp16 itself: fp16 weights, I/O, or casts to fp16."""
    f16 = onnx.TensorProto.FLOAT16
    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    if any(t.data_type == f16 for t in g.initializer):
        return True
    if any(v.type.tensor_type.elem_type == f16 for v in [*g.input, *g.output, *g.value_info]):
        return True
    return any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in node.attribute)
        for node in g.node
    )


def _check_profile(name: str, net_shape: Shape, profile: Profile) -> None:
    if len(profile) != 3:
        raise ViewrtError(f"profile for input '{name}': expected (min, opt, max), got {profile}")
    for label, shape in zip(("min", "opt", "max"), profile):
        if len(shape) != len(net_shape):
            raise ViewrtError(
                f"profile for input '{name}': {label} shape {tuple(shape)} has rank {len(shape)}, "
                f"the network input {net_shape} has rank {len(net_shape)}"
            )
    for axis, (d, lo, mid, hi) in enumerate(zip(net_shape, *profile)):
        if not 1 <= lo <= mid <= hi:
            raise ViewrtError(
                f"profile for input '{name}', axis {axis}: expected 1 <= min <= opt <= max, "
                f"got {lo}, {mid}, {hi}"
            )
        if d >= 0 and not d == lo == mid == hi:
            raise ViewrtError(
                f"profile for input '{name}', axis {axis}: the dimension is static ({d}), "
                f"got {lo}, {mid}, {hi}"
            )


def _set_profile(network, profile, profiles: dict[str, Profile]) -> dict[str, dict]:
    """Fill one optimization profile; return it as JSON-able {name: {min, opt, max}}."""
    inputs = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        inputs[tensor.name] = tuple(int(d) for d in tensor.shape)
    unknown = sorted(set(profiles) - set(inputs))
    if unknown:
        raise ViewrtError(f"profiles name inputs {unknown}; the network has {sorted(inputs)}")

    used = {}
    for name, net_shape in inputs.items():
        if name not in profiles:
            if any(d < 0 for d in net_shape):
                raise ViewrtError(
                    f"input '{name}' has dynamic shape {net_shape} but no profile was given"
                )
            continue
        _check_profile(name, net_shape, profiles[name])
        lo, mid, hi = (tuple(int(d) for d in s) for s in profiles[name])
        profile.set_shape(name, lo, mid, hi)
        used[name] = {"min": list(lo), "opt": list(mid), "max": list(hi)}
    return used


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = ""
        node_name = getattr(err, "node_name", None)  # TensorRT >= 10
        if node_name is not None and node_name():
            where = f" at node '{node_name()}' ({err.node_operator()})"
        lines.append(f"{err.desc()}{where}")
    return "; ".join(lines) or "no error description"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def typing_plan(major: int, precision: str, graph_has_fp16: bool) -> dict:
    """Decide how a graph is built: typing mode, builder precision flag, effective precision.

    Args:
        major: TensorRT major version (10 or 11).
        precision: ``"fp32"`` or ``"fp16"`` (what is asked for).
        graph_has_fp16: the graph carries fp16 types itself (see :func:`graph_has_fp16`).

    Returns:
        ``{"typing": "strong"|"weak", "fp16_flag": bool, "precision": effective precision}``.

    Raises:
        ViewrtError: fp32 asked of an fp16-typed graph, or fp16 of an fp32 graph on 11.x.
    """
    if precision not in _PRECISIONS:
        raise ViewrtError(f"precision: expected one of {_PRECISIONS}, got '{precision}'")
    row = get_precision(precision)
    if row.quantized:  # explicit Q/DQ: the graph's own types decide, on 10.x and 11.x alike
        return {"typing": "strong", "fp16_flag": False, "precision": precision}
    if graph_has_fp16:
        if precision == "fp32":
            raise ViewrtError(
                "the graph carries fp16 types; an fp32 engine needs an fp32 export (--precision fp32)"
            )
        return {"typing": "strong", "fp16_flag": False, "precision": "fp16"}
    if precision == "fp32":
        return {"typing": "strong", "fp16_flag": False, "precision": "fp32"}
    if major >= 11:
        raise ViewrtError(
            f"an fp32 graph cannot become fp16 on TensorRT {major}.x, which builds strongly typed networks "
            "only and has no FP16 builder flag: export with --precision fp16"
        )
    return {
        "typing": "weak",
        "fp16_flag": True,
        "precision": "fp16 (builder down-cast of an fp32 graph)",
    }


def _engine_io(trt, engine) -> list[dict]:
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = engine.get_tensor_dtype(name)
        tensors.append({
            "name": name,
            "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
            "dtype": devices.TRT_DTYPES.get(dtype.name, dtype.name.lower()),
            "shape": [int(d) for d in engine.get_tensor_shape(name)],
        })  # fmt: skip
    return tensors


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    profiles: dict[str, Profile],
    precision: str = "fp32",
    timing_cache: Path | None = None,
    workspace_bytes: int | None = None,
    tf32: bool = False,
) -> dict:
    """Build one serialized TensorRT engine from an ONNX file.

    Args:
        onnx_path: The ``.onnx`` file; parsed from its path so external weights are found.
        engine_path: Where to write the engine (parent folders are created).
        profiles: ``{input_name: (min, opt, max)}`` for one optimization profile. Every input
            with a dynamic dimension must be listed; static inputs may be left out.
        precision: ``"fp32"`` or ``"fp16"``; how each is built is :func:`typing_plan`'s
            (module docstring).
        timing_cache: A timing-cache file to read (if it exists) and update after the build,
            so later builds on the same GPU skip tactic timing. None: no cache file.
        workspace_bytes: Limit of the builder's workspace pool; None: TensorRT's default.
        tf32: Allow TF32 matmuls for fp32 tensors (cleared by default: true fp32).

    Returns:
        ``{"file", "sha256", "size_bytes", "precision" (effective), "requested_precision",
        "typing": "strong"|"weak", "builder_flags": {"fp16", "tf32"},
        "device_memory_bytes" (device_memory_size_v2), "io": [...] (as :func:`engine_io`),
        "profiles", "tensorrt", "gpu", "compute_capability", "build_seconds"}`` where ``file``
        is the engine's file name and ``profiles`` is ``{input: {"min", "opt", "max"}}``.

    Raises:
        ViewrtError: TensorRT or a GPU is missing, the file does not exist or does not parse,
            a profile does not fit the network, the precision does not fit the graph (see
            :func:`typing_plan`), or the build fails. No engine file is written then.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if precision not in _PRECISIONS:
        raise ViewrtError(f"precision: expected one of {_PRECISIONS}, got '{precision}'")
    if not onnx_path.is_file():
        raise ViewrtError(f"ONNX file '{onnx_path}': not found")
    status = devices.tensorrt_status()
    if not status.ok:
        raise ViewrtError(f"cannot build '{engine_path.name}': {status.reason}")
    trt = devices.import_tensorrt()
    plan = typing_plan(status.major, precision, graph_has_fp16(onnx_path))
    gpu, cc = status.gpu.name, status.gpu.compute_capability

    _say(f"parsing {onnx_path} (TensorRT {status.version}, {gpu}, sm {cc})")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    if builder is None:
        raise ViewrtError("TensorRT could not create a builder")
    # Q/DQ graphs (viewrt calib): the rule check, FP8 only on sm >= 8.9; they build strongly typed
    qdq_plan(onnx_path, precision, cc)
    network, parser = _parse(trt, builder, logger, onnx_path, plan, status.major)
    config = _configure(trt, builder, plan, workspace_bytes, tf32)
    used = _add_profile(builder, config, network, profiles)
    _use_timing_cache(config, timing_cache)

    _say(
        f"building {engine_path.name} ({plan['precision']}, {plan['typing']}ly typed, TF32 "
        f"{'on' if tf32 else 'off'}); this takes minutes"
    )
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise ViewrtError(f"TensorRT failed to build '{engine_path.name}'; see its log above")
    data = bytes(memoryview(serialized))
    device_memory, io = _read_back(trt, logger, data, engine_path.name)

    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(engine_path, data)
    if timing_cache is not None:
        tc = config.get_timing_cache()
        if tc is not None:
            _write_atomic(Path(timing_cache), bytes(memoryview(tc.serialize())))
    _say(
        f"wrote {engine_path} ({len(data) / 2**20:.1f} MiB, {device_memory / 2**20:.1f} MiB of "
        f"activations) in {seconds:.0f} s"
    )
    return {
        "file": engine_path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "precision": plan["precision"],
        "requested_precision": precision,
        "typing": plan["typing"],
        "builder_flags": {"fp16": plan["fp16_flag"], "tf32": bool(tf32)},
        "device_memory_bytes": device_memory,
        "io": io,
        "profiles": used,
        "tensorrt": status.version,
        "gpu": gpu,
        "compute_capability": cc,
        "build_seconds": round(seconds, 1),
    }


def _parse(trt, builder, logger, onnx_path: Path, plan: dict, major: int):
    """(network, parser) of the ONNX file; strongly typed where the plan says so."""
    # 10.x: strong typing is asked for by flag; 11.x: always strongly typed (the flag is ignored).
    strong = plan["typing"] == "strong" and major < 11
    network = builder.create_network(
        1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0
    )
    if network is None:  # never by truthiness: len(network) is its layer count, 0 when fresh
        raise ViewrtError("TensorRT could not create a network definition")
    parser = trt.OnnxParser(network, logger)
    if parser is None:
        raise ViewrtError("TensorRT could not create an ONNX parser")
    if not parser.parse_from_file(str(onnx_path)):
        raise ViewrtError(f"TensorRT cannot parse '{onnx_path.name}': {_parser_errors(parser)}")
    return network, parser  # the parser must outlive the build (it owns the weights)


def _configure(trt, builder, plan: dict, workspace_bytes: int | None, tf32: bool):
    """The builder config: workspace limit, TF32 and the FP16 flag as the plan says."""
    config = builder.create_builder_config()
    if config is None:
        raise ViewrtError("TensorRT could not create a builder config")
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; cleared for true fp32
    if plan["fp16_flag"]:
        config.set_flag(trt.BuilderFlag.FP16)  # only on 10.x, only to down-cast an fp32 graph
    return config


def _add_profile(builder, config, network, profiles: dict[str, Profile]) -> dict[str, dict]:
    """Add the one optimization profile; returns it as recorded in the manifest."""
    profile = builder.create_optimization_profile()
    if profile is None:
        raise ViewrtError("TensorRT could not create an optimization profile")
    used = _set_profile(network, profile, profiles)
    if config.add_optimization_profile(profile) < 0:
        raise ViewrtError(f"TensorRT rejected the optimization profile {used}")
    return used


def _use_timing_cache(config, timing_cache: Path | None) -> None:
    """Load the timing cache file (an empty cache where it is absent or does not match)."""
    blob = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        _say(f"timing cache {timing_cache} does not match this GPU/TensorRT; starting empty")
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise ViewrtError("TensorRT could not create an empty timing cache")


def _read_back(trt, logger, data: bytes, name: str) -> tuple[int, list[dict]]:
    """(activation memory in bytes, IO as TensorRT resolved it) of a serialized engine."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(data) if runtime is not None else None
    if engine is None:
        raise ViewrtError(f"TensorRT cannot deserialize the engine it just built ('{name}')")
    return int(engine.device_memory_size_v2), _engine_io(trt, engine)


def engine_io(engine_path: str | Path) -> list[dict]:
    """Describe an engine's I/O tensors, to check them against the manifest.

    Args:
        engine_path: A serialized engine built on this GPU and TensorRT version.

    Returns:
        One ``{"name", "mode": "input"|"output", "dtype": e.g. "float16", "shape": [...]}``
        per I/O tensor, in engine order; dynamic dimensions are -1.

    Raises:
        ViewrtError: TensorRT is missing, the file does not exist, or it does not deserialize
            (built by another TensorRT version or for another GPU).
    """
    trt = devices.import_tensorrt()
    path = Path(engine_path)
    if not path.is_file():
        raise ViewrtError(f"engine file '{path}': not found")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(path.read_bytes()) if runtime is not None else None
    if engine is None:
        raise ViewrtError(
            f"engine '{path}' does not deserialize with TensorRT {trt.__version__} on this GPU; "
            "rebuild it here"
        )
    return _engine_io(trt, engine)


# ---------------------------------------------------------------------------- profiles


def profiles_for(
    manifest: Manifest,
    capacity: int | None = None,
    limits: dict[str, int] | None = None,
    opt: dict[str, int] | None = None,
) -> dict[str, dict[str, Profile]]:
    """Each graph's optimization profile: every input's (min, opt, max) shape, its dynamic
    dimensions from the manifest's ranges (:meth:`Manifest.dynamic_ranges`: the contract's
    one opt rule, the cache tuned for half full and every other dimension for its maximum),
    its static dimensions copied.

    Args:
        manifest: the export's manifest.
        capacity: cache entries the engines admit (1..the export's; default the export's).
        limits: ``{dim: max}`` of the other dynamic dimensions (e.g. targets per call).
        opt: ``{dim: value}`` overriding the opt rule.
    Returns:
        ``{graph: {input: (min, opt, max)}}`` with shapes as int tuples, for every graph.
    Raises:
        ViewrtError: a count out of range, or an unknown dimension name.
    """
    ranges = manifest.dynamic_ranges(capacity, limits, opt)
    result = {}
    for graph, info in manifest.graphs.items():
        result[graph] = {}
        for t in info.inputs:
            dims = [ranges[d] if isinstance(d, str) else (int(d),) * 3 for d in t.shape]
            result[graph][t.name] = tuple(tuple(col) for col in zip(*dims))
    return result


def build_all(
    out_dir: str | Path,
    manifest: Manifest,
    precision: str,
    capacity: int | None = None,
    limits: dict[str, int] | None = None,
    tf32: bool = False,
) -> dict:
    """Build one engine per graph next to the exported ONNX graphs.

    Prints the memory estimate first (the contract's one estimate, GPU row), checks each
    graph against TensorRT 10.3's op list and opset, then builds with one shared timing
    cache ``timing.cache`` in ``out_dir``.

    Args:
        out_dir: The export folder holding the manifest's ONNX files; engines go there too.
        manifest: The export manifest.
        precision: a precision of the table (see :func:`build_engine`).
        capacity: Most cache entries (views) the engines admit.
        limits: ``{dim: max}`` of the other dynamic dimensions (targets per call).
        tf32: Allow TF32 for fp32 tensors (see :func:`build_engine`).

    Returns:
        ``{graph: info}`` with ``info`` as returned by :func:`build_engine`.

    Raises:
        ViewrtError: See :func:`build_engine`, :func:`profiles_for` and
            :func:`viewrt.export.trt_ops.check_trt_compatible`.
    """
    out_dir = Path(out_dir)
    profiles = profiles_for(manifest, capacity, limits)
    geo = manifest.cache
    n = geo.capacity if capacity is None else capacity
    targets = max([1, *(limits or {}).values()])
    row = device_row(estimate(manifest, n, precision, targets, process_bytes=0), "gpu")
    _say(
        f"estimate for {n} {geo.entry}s, {targets} targets: KV cache "
        f"{row['kv_cache'] / MIB:.1f} MiB ({get_precision(precision).kv_dtype}), weights "
        f"{row['weights'] / MIB:.1f} MiB, activations {row['activations'] / MIB:.1f} MiB, "
        f"total {row['total'] / MIB:.1f} MiB"
    )
    for graph, info in manifest.graphs.items():
        check_trt_compatible(
            out_dir / info.file, opset_range=(17, 19 if precision == "fp8" else 18)
        )

    cache = out_dir / "timing.cache"
    return {
        g.name: build_engine(
            out_dir / g.file,
            out_dir / g.engine_file,
            profiles[g.name],
            precision,
            timing_cache=cache,
            tf32=tf32,
        )
        for g in manifest.contract.graphs
    }
