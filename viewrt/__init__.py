"""viewrt: deploy KV-cached view-synthesis transformers (Efficient-LVSM) to the edge.

Subpackages: ``viewrt.models`` (PyTorch references), ``viewrt.export`` (ONNX, TensorRT),
``viewrt.calib`` (quantization), ``viewrt.runtime`` (torch-free renderer). This root
package holds the CLI, the error type and the numpy geometry shared by all layers.
"""

__version__ = "0.1.0"
