"""ONNX export of the encoder and the cache-consuming decoder, validation against PyTorch,
the TensorRT 10.3 operator check, and TensorRT engine building (needs torch and onnx)."""
