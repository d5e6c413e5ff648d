"""Backends behind one runner interface (base.Backend), as a registry.

``BACKENDS``: each backend class, imported lazily by name so that ``import viewrt.runtime``
works where onnxruntime's GPU build, OpenVINO or TensorRT are absent. ``CONFIGS``: the one
vocabulary of named configurations (backend + device + options) that ``open()``, ``viewrt
infer``, ``viewrt bench`` and the tests use. A new backend is one module plus one line in
each table.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from viewrt.errors import ViewrtError


@dataclass(frozen=True)
class BackendEntry:
    module: str
    cls: str
    needs: str  # the package(s) it imports, for messages
    description: str


@dataclass(frozen=True)
class Config:
    """A named runtime configuration: a backend with fixed options."""

    backend: str
    options: dict = field(default_factory=dict)
    description: str = ""


BACKENDS: dict[str, BackendEntry] = {
    "ort": BackendEntry(
        "viewrt.runtime.backends.ort",
        "OrtBackend",
        "onnxruntime",
        "ONNX Runtime (CPU; CUDA/TensorRT EPs by device)",
    ),
    "trt": BackendEntry(
        "viewrt.runtime.backends.trt",
        "TrtBackend",
        "tensorrt, cuda-python",
        "native TensorRT engines (viewrt build)",
    ),
    "openvino": BackendEntry(
        "viewrt.runtime.backends.openvino",
        "OpenVinoBackend",
        "openvino (pip install '.[openvino]')",
        "OpenVINO CPU plugin (fused attention; bf16 where the CPU has it)",
    ),
}

CONFIGS: dict[str, Config] = {
    "ort": Config(
        "ort",
        {"device": "cpu"},
        "viewrt runtime, ONNX Runtime CPU (fused MultiHeadAttention decoder where the export has it)",
    ),
    "ort-plain": Config(
        "ort",
        {"device": "cpu", "fused_attention": False},
        "viewrt runtime, ONNX Runtime CPU, the plain decoder (MatMul -> Softmax -> MatMul attention)",
    ),
    "ort-cuda": Config("ort", {"device": "cuda:0"}, "viewrt runtime, ONNX Runtime CUDA EP"),
    "ort-trt": Config("ort", {"device": "tensorrt:0"}, "viewrt runtime, ONNX Runtime TensorRT EP"),
    "trt": Config("trt", {"device": "cuda:0"}, "viewrt runtime, native TensorRT engines"),
    "openvino": Config(
        "openvino", {}, "viewrt runtime, OpenVINO CPU, its default precision for this CPU"
    ),
    "openvino-f32": Config(
        "openvino", {"inference_precision": "f32"}, "viewrt runtime, OpenVINO CPU, f32"
    ),
}


def backend_class(name: str):
    """The Backend subclass registered as ``name``.

    Raises: ViewrtError for an unknown name, or when its packages are not installed.
    """
    if name not in BACKENDS:
        raise ViewrtError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    e = BACKENDS[name]
    try:
        return getattr(importlib.import_module(e.module), e.cls)
    except ModuleNotFoundError as err:
        raise ViewrtError(
            f"backend {name!r} needs {e.needs}, which is not installed ({err.name})"
        ) from None


def resolve(name: str, **options) -> tuple[str, dict]:
    """``(backend, options)`` for a backend or configuration name; explicit options (not
    None) override the configuration's.

    Raises: ViewrtError for an unknown name.
    """
    if name in CONFIGS:
        c = CONFIGS[name]
        return c.backend, {**c.options, **{k: v for k, v in options.items() if v is not None}}
    if name in BACKENDS:
        return name, {k: v for k, v in options.items() if v is not None}
    raise ViewrtError(
        f"unknown backend {name!r}; expected one of {', '.join(dict.fromkeys([*CONFIGS, *BACKENDS]))}"
    )


def create(name: str, manifest, **options):
    """Make an (inactive) backend for a backend or configuration name.

    Raises: ViewrtError for an unknown name, missing packages, or an option the backend
        does not take.
    """
    backend, opts = resolve(name, **options)
    t = opts.get("threads")
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
        raise ViewrtError(
            f"threads must be a positive integer or None, got {type(t).__name__} {t!r}"
        )
    if "device" in opts and not isinstance(opts["device"], str):
        raise ViewrtError(
            f"device must be a string such as 'cpu' or 'cuda:0', got {type(opts['device']).__name__}"
        )
    cls = backend_class(backend)
    unknown = set(opts) - set(cls.options)
    if unknown:
        raise ViewrtError(
            f"backend {backend!r} takes no option {', '.join(sorted(unknown))} (it takes {', '.join(cls.options) or 'none'})"
        )
    return cls(manifest, **opts)
