"""digits pipeline: the code that turns raw MNIST into a verified ONNX model."""

__version__ = "0.1.0"
