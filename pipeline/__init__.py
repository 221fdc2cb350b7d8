"""digits pipeline: the code that turns raw MNIST into a verified ONNX model."""

import os

# OpenMP threads that busy-wait starve each other on a small shared machine (measured 700 ms vs
# 20 ms per training batch on 2 loaded cores). torch reads this once, when it loads, and every
# stage module imports this package before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
