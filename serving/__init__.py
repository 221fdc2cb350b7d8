"""digits serving: runs models/digits.onnx on ONNX Runtime; never imports torch or pipeline."""
