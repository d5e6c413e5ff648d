"""FAKE TensorRT: a test double of the ``tensorrt`` Python module. It is NOT TensorRT.

It implements only the documented API surface that viewrt calls (export/trt_build.py and
runtime/backends/trt.py), so the tests in tests/test_trt_fake.py can run the build path and the
backend's binding logic on a CPU machine and catch API misuse: wrong names or signatures,
truthiness tests of objects, unchecked ``None`` / ``False`` returns, enum members that do not
exist in a given version. It proves that we call the API as documented, never that TensorRT
computes the right numbers: it computes nothing, its "plans" are marked as fake and are
rejected by real TensorRT (and its version string ends in ``+fake``), and passing tests that
use it are never counted as TensorRT running.

Facts modelled, with their sources (NVIDIA docs and the TensorRT Python binding sources):

- ``len(network)`` is the layer count (``.def("__len__", &INetworkDefinition::getNbLayers)``
  in NVIDIA/TensorRT python/src/infer/pyGraph.cpp), so a fresh network is falsy.
- Factories return ``None`` on failure: ``Builder.create_network``,
  ``create_builder_config``, ``build_serialized_network``, ``Runtime.deserialize_cuda_engine``,
  ``ICudaEngine.create_execution_context`` (Python API reference, Core/Builder.html,
  Core/Runtime.html, Core/Engine.html at docs.nvidia.com/deeplearning/tensorrt).
- ``OnnxParser.parse_from_file(path) -> bool``; errors through ``num_errors`` /
  ``get_error(i)`` with ``desc()``, ``code()``, ``node_name()``, ``node_operator()``
  (parsers/Onnx/pyOnnx.html).
- ``IBuilderConfig.set_flag / clear_flag / get_flag``, ``set_memory_pool_limit``,
  ``add_optimization_profile -> int`` (index, -1 when invalid), ``create_timing_cache(bytes)``,
  ``set_timing_cache(cache, ignore_mismatch) -> bool``, ``get_timing_cache()``
  (C++ IBuilderConfig member list; python Core/BuilderConfig.html). ``BuilderFlag.TF32`` is on
  by default ("Enabled by default", BuilderFlag kTF32 in NvInfer.h).
- ``IOptimizationProfile.set_shape(input, min, opt, max)`` (pyCore.cpp binds it through a
  lambda that raises ValueError on invalid dimensions).
- ``NetworkDefinitionCreationFlag``: 10.x has EXPLICIT_BATCH (deprecated, ignored) and
  STRONGLY_TYPED (pass ``1 << int(STRONGLY_TYPED)`` to ``create_network``); 11.x keeps only
  STRONGLY_TYPED, "deprecated ... always enabled ... retained for API compatibility but is
  ignored" (docs 11.0.0 python-api Core/Builder.html).
- ``BuilderFlag.FP16/INT8/FP8/BF16/INT4/FP4/OBEY_PRECISION_CONSTRAINTS/
  PREFER_PRECISION_CONSTRAINTS`` are removed in 11.x ("Removed Python APIs and Replacements",
  tensorrt-10x-to-11x-python-api-reference.html); here they raise AttributeError on 11.
  Precision flags are rejected for strongly typed networks (the build returns None).
- ``ICudaEngine.num_io_tensors``, ``get_tensor_name(i)``, ``get_tensor_mode``,
  ``get_tensor_dtype``, ``get_tensor_shape`` (-1 for dynamic dims),
  ``device_memory_size_v2`` (``device_memory_size`` is removed in 11; Engine.html).
- ``IExecutionContext.set_input_shape -> bool``, ``set_tensor_address -> bool`` ("The pointer
  must have at least 256-byte alignment", NvInferRuntime.h setTensorAddress),
  ``get_tensor_shape(name)`` (outputs resolved once input shapes are set),
  ``execute_async_v3(stream_handle) -> bool``.

Use :func:`make` to build a module for one version ("10.3" or "11.1") and :func:`install` to
put it (and the fake CUDA runtime of :mod:`fake_tensorrt.cudart`) in ``sys.modules``.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path

FAKE_PLAN_MAGIC = b"FAKE-TENSORRT-PLAN: NOT AN ENGINE; made by tests/fake_tensorrt\n"
VERSIONS = ("10.3", "11.1")

_ONNX_DTYPES = {1: "FLOAT", 10: "HALF", 16: "BF16", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 2: "UINT8"}
_FAKE_DEVICE_MEMORY = 1 << 20  # a placeholder, not a measurement


def make(version: str = "10.3") -> types.ModuleType:
    """A fresh fake ``tensorrt`` module for TensorRT ``version`` ("10.3" or "11.1")."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt", f"FAKE tensorrt {version} (test double, computes nothing)")
    trt.__version__ = f"{version}.0+fake"
    trt.__file__ = __file__
    trt.IS_FAKE = True

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=1):
            self.min_severity = min_severity
            self.messages: list[str] = []

        def log(self, severity, msg):
            self.messages.append(msg)

    DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4,
                                         "UINT8": 5, "FP8": 6, "BF16": 7, "INT64": 8, "INT4": 9})
    TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    if major >= 11:
        NetFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
        builder_flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6,
                         "SPARSE_WEIGHTS": 7}
    else:
        NetFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
        builder_flags = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4,
                         "DISABLE_TIMING_CACHE": 5, "TF32": 6, "SPARSE_WEIGHTS": 7,
                         "OBEY_PRECISION_CONSTRAINTS": 9, "PREFER_PRECISION_CONSTRAINTS": 10, "FP8": 15,
                         "BF16": 17}
    BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
    precision_flags = {n for n in ("FP16", "INT8", "FP8", "BF16") if n in builder_flags}

    class ITensor:
        def __init__(self, name, shape, dtype, dim_names):
            self.name, self.shape, self.dtype, self.dim_names = name, tuple(shape), dtype, tuple(dim_names)

    class INetworkDefinition:
        def __init__(self, flags):
            self.strongly_typed = major >= 11 or bool(flags & (1 << int(NetFlag.STRONGLY_TYPED)))
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []
            self.num_layers = 0

        def __len__(self):  # the layer count, as pyGraph.cpp binds it
            return self.num_layers

        @property
        def num_inputs(self):
            return len(self.inputs)

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_input(self, index):
            return self.inputs[index] if 0 <= index < len(self.inputs) else None

        def get_output(self, index):
            return self.outputs[index] if 0 <= index < len(self.outputs) else None

        def get_flag(self, flag):
            return flag == NetFlag.STRONGLY_TYPED and self.strongly_typed

    class ParserError:
        def __init__(self, desc, node_name="", node_operator=""):
            self._desc, self._name, self._op = desc, node_name, node_operator

        def desc(self):
            return self._desc

        def code(self):
            return 0

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._op

    class OnnxParser:
        def __init__(self, network, logger):
            if not isinstance(network, INetworkDefinition):
                raise TypeError("OnnxParser(network, logger): network must be an INetworkDefinition")
            self.network, self.logger, self.errors = network, logger, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

        def clear_errors(self):
            self.errors = []

        def parse_from_file(self, model):
            import onnx

            if not isinstance(model, str):
                raise TypeError("parse_from_file(model: str)")
            if not Path(model).is_file():
                self.errors.append(ParserError(f"failed to open file: {model}"))
                return False
            proto = onnx.load(model, load_external_data=False)
            for node in proto.graph.node:
                if node.domain not in ("", "ai.onnx"):
                    self.errors.append(ParserError(f"no importer registered for op: {node.op_type}", node.name, node.op_type))
            if self.errors:
                return False

            def tensor(v):
                dims = v.type.tensor_type.shape.dim
                shape = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
                names = [d.dim_param if d.HasField("dim_param") else None for d in dims]
                return ITensor(v.name, shape, DataType[_ONNX_DTYPES[v.type.tensor_type.elem_type]], names)

            inits = {i.name for i in proto.graph.initializer}
            self.network.inputs = [tensor(v) for v in proto.graph.input if v.name not in inits]
            self.network.outputs = [tensor(v) for v in proto.graph.output]
            self.network.num_layers = len(proto.graph.node)
            return True

    class IOptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - the binding's keyword names
            lo, mid, hi = (tuple(int(d) for d in s) for s in (min, opt, max))
            if not (len(lo) == len(mid) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, mid, hi))):
                raise ValueError("Shape provided for set_shape is invalid")
            self.shapes[input] = (lo, mid, hi)

        def get_shape(self, input):  # noqa: A002
            return [list(s) for s in self.shapes.get(input, ())]

    class IHostMemory(bytearray):
        @property
        def nbytes(self):
            return len(self)

        @property
        def dtype(self):
            return DataType.UINT8

    class ITimingCache:
        def __init__(self, blob: bytes):
            self.blob = bytes(blob)

        def serialize(self):
            return IHostMemory(b"FAKE-TIMING-CACHE" + self.blob[17:])

    class IBuilderConfig:
        def __init__(self):
            self.flags = {BuilderFlag.TF32}  # TF32 is on by default
            self.pools, self.profiles, self.timing_cache = {}, [], None

        def set_flag(self, flag):
            self.flags.add(BuilderFlag(flag))

        def clear_flag(self, flag):
            self.flags.discard(BuilderFlag(flag))

        def get_flag(self, flag):
            return BuilderFlag(flag) in self.flags

        def set_memory_pool_limit(self, pool, pool_size):
            self.pools[MemoryPoolType(pool)] = int(pool_size)

        def add_optimization_profile(self, profile):
            if not isinstance(profile, IOptimizationProfile) or not profile.shapes:
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self):
            return len(self.profiles)

        def create_timing_cache(self, serialized_timing_cache):
            blob = bytes(serialized_timing_cache)
            if blob and not blob.startswith(b"FAKE-TIMING-CACHE"):
                return None  # not a timing cache of this "TensorRT"
            return ITimingCache(blob or b"FAKE-TIMING-CACHE")

        def set_timing_cache(self, cache, ignore_mismatch):
            if not isinstance(cache, ITimingCache):
                return False
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            known = sum(1 << int(f) for f in NetFlag)
            if flags & ~known:
                return None
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            if len(network) == 0 or network.num_outputs == 0:
                self.logger.log(Logger.ERROR, "network has no layers or no outputs")
                return None
            if network.strongly_typed and any(BuilderFlag[n] in config.flags for n in precision_flags):
                self.logger.log(Logger.ERROR, "precision flags are not allowed for strongly typed networks")
                return None
            shapes = config.profiles[0].shapes if config.profiles else {}
            for t in network.inputs:
                if any(d < 0 for d in t.shape) and t.name not in shapes:
                    self.logger.log(Logger.ERROR, f"input {t.name} is dynamic and has no profile")
                    return None
            half = network.strongly_typed is False and "FP16" in builder_flags and BuilderFlag.FP16 in config.flags
            record = {
                "fake": True, "version": trt.__version__, "strongly_typed": network.strongly_typed,
                "tf32": BuilderFlag.TF32 in config.flags, "fp16_flag": half,
                "io": [[t.name, "input", t.dtype.name, list(t.shape), list(t.dim_names)] for t in network.inputs]
                + [[t.name, "output", t.dtype.name, list(t.shape), list(t.dim_names)] for t in network.outputs],
                "profiles": {k: [list(s) for s in v] for k, v in shapes.items()},
            }
            return IHostMemory(FAKE_PLAN_MAGIC + json.dumps(record).encode())

    class IExecutionContext:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            io = self.engine._io.get(name)
            if io is None or io["mode"] != "input":
                return False
            shape = tuple(int(d) for d in shape)
            lo, _, hi = self.engine._profiles.get(name, (io["shape"],) * 3)
            if len(shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = shape
            return True

        def set_tensor_address(self, name, memory):
            if name not in self.engine._io or int(memory) % 256:
                return False
            self.addresses[name] = int(memory)
            return True

        def get_tensor_shape(self, name):
            io = self.engine._io[name]
            if io["mode"] == "input":
                return self.shapes.get(name, tuple(io["shape"]))
            dims = {}
            for iname, shape in self.shapes.items():
                for n, d in zip(self.engine._io[iname]["dim_names"], shape):
                    if n:
                        dims[n] = d
            return tuple(dims.get(n, -1) if s < 0 else s for s, n in zip(io["shape"], io["dim_names"]))

        def execute_async_v3(self, stream_handle):
            inputs = [n for n, io in self.engine._io.items() if io["mode"] == "input"]
            if any(n not in self.shapes for n in inputs if -1 in self.engine._io[n]["shape"]):
                return False
            return all(n in self.addresses for n in self.engine._io)  # computes nothing

    class ICudaEngine:
        def __init__(self, record):
            self._record = record
            self._io = {n: {"mode": m, "dtype": DataType[d], "shape": s, "dim_names": dn}
                        for n, m, d, s, dn in record["io"]}
            self._profiles = {k: tuple(tuple(s) for s in v) for k, v in record["profiles"].items()}
            self.device_memory_size_v2 = _FAKE_DEVICE_MEMORY
            if major < 11:
                self.device_memory_size = _FAKE_DEVICE_MEMORY

        @property
        def num_io_tensors(self):
            return len(self._io)

        def get_tensor_name(self, index):
            return list(self._io)[index]

        def get_tensor_mode(self, name):
            io = self._io.get(name)
            return TensorIOMode.NONE if io is None else getattr(TensorIOMode, io["mode"].upper())

        def get_tensor_dtype(self, name):
            return self._io[name]["dtype"]

        def get_tensor_shape(self, name):
            return tuple(self._io[name]["shape"])

        def create_execution_context(self):
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            if not data.startswith(FAKE_PLAN_MAGIC):
                return None
            record = json.loads(data[len(FAKE_PLAN_MAGIC):])
            if record["version"] != trt.__version__:
                return None
            return ICudaEngine(record)

    for name, obj in dict(locals()).items():
        if isinstance(obj, type) and name not in ("NetFlag",):
            setattr(trt, name, obj)
    trt.NetworkDefinitionCreationFlag = NetFlag
    trt.float32, trt.float16 = DataType.FLOAT, DataType.HALF
    return trt


def install(monkeypatch, version: str = "10.3", gpu: bool = True, cuda_error: str | None = None):
    """Put a fake ``tensorrt`` (and a fake CUDA runtime) in ``sys.modules`` for one test.

    Returns the fake tensorrt module. ``monkeypatch`` undoes it after the test.
    """
    from . import cudart

    trt = make(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cudart.install(monkeypatch, count=1 if gpu else 0, error=cuda_error)
    return trt
