"""digits pipeline: the code that turns raw MNIST into a verified ONNX model.

`pipeline/stages/` holds one module per DVC stage (each is `digits <stage>` in dvc.yaml),
`pipeline/tools/` the commands outside the DAG (gradcheck, lr-find); the modules beside them
are the library the stages share (network, training loop, optimizers, compression, transform,
params, metrics). Stages import the library, never each other.
"""

import os

# OpenMP threads that busy-wait starve each other on a small shared machine (measured 700 ms vs
# 20 ms per training batch on 2 loaded cores). torch reads this once, when it loads, and every
# stage module imports this package before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
