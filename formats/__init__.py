"""Container format and ONNX I/O; nothing here knows how tensors are quantized."""
