"""ONNX export of the neural audio decoder (LARA-Gen) and its onnxruntime backend: not yet built."""
