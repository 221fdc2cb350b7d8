"""digits pipeline: the code that turns raw MNIST into a verified ONNX model.

`pipeline/stages/` holds one module per DVC stage (each is `digits <stage>` in dvc.yaml),
`pipeline/tools/` the commands outside the DAG (gradcheck, lr-find, ensemble, search, study,
fingerprint).
The library they share is grouped by concern: `training/`, `model/`, `compression/`,
`onnx_export/`, `analysis/`, `robustness_sets/`, `experiments/`, with the shared infrastructure
(`config`, `options`, `run_log`) beside them. Stages import the library, never each other; a
tool never imports another tool.
"""

import os

# OpenMP threads that busy-wait starve each other on a small shared machine (measured 700 ms vs
# 20 ms per training batch on 2 loaded cores). torch reads this once, when it loads, and every
# stage module imports this package before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
