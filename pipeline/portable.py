"""Portable mode (params `base.portable`, on in params.yaml): the kernel choices under which a
stage writes the same bytes on any x86-64 CPU, whatever its vendor, vector width or core count.

Where runs part, found with `digits fingerprint` (docs/reproducibility.md), and what pins each:
- ATen's vectorized kernels differ by capability (AVX-512, AVX2, scalar), and some AVX2 ones
  (grid_sample in float32) differ between a real CPU and an exactly emulated one of the same ISA:
  `ATEN_CPU_CAPABILITY=default` runs the scalar kernels everywhere.
- MKL picks its BLAS code path by CPU vendor and ISA: `MKL_CBWR=COMPATIBLE` (Intel's Conditional
  Numerical Reproducibility) runs one path on Intel and AMD alike.
- MKL's vector math `sqrt` (what `torch.sqrt` calls) is not correctly rounded and differs by CPU:
  the optimizers use torch's fused kernels, whose square root is the exact instruction
  (pipeline.training.optim).
- Parallel reductions split by thread count: every stage runs `base.threads` torch threads,
  however many cores the machine has.
- numpy's own loops and its OpenBLAS dispatch by CPU too: baseline loops, one OpenBLAS kernel set.
All of these are read once, when torch or numpy loads, so `enter` sets them before the stage
module (and with it numpy and torch) is imported; `check` refuses a run whose torch loaded
without them.

ONNX Runtime's CPU kernels (MLAS) give the same outputs with AVX2+FMA and with AVX-512, but not on
CPUs without AVX2 (checked under emulation); `check` warns there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    # numpy's baseline (x86-64-v2) loops only: its AVX-512 float64 exp and log (softmax,
    # cross-entropy) round differently from the AVX2 machines' libm ones. numpy 2.4's names.
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    # OpenBLAS (numpy's SVD and eigh: network pictures, whitening) picks kernels by CPU and
    # splits work by thread: one kernel set every x86-64-v2 CPU runs, one thread.
    "OPENBLAS_CORETYPE": "Nehalem",
    "OPENBLAS_NUM_THREADS": "1",
}
ORT_FEATURES = ("avx2", "fma")  # below these, MLAS's float kernels round differently
# What `enter` replaced: the process's own settings, for tools that start runs of other kinds.
ENTERED_FROM: dict[str, str] = {}


def switched_on(params_file: Path) -> bool:
    """Whether params `base.portable` is on (off unless the file says true; a missing or bad
    file reads as off, and the stage's own params loading then names the problem)."""
    import yaml

    try:
        loaded: Any = yaml.safe_load(params_file.read_text())
    except (OSError, yaml.YAMLError):
        return False
    base = loaded.get("base") if isinstance(loaded, dict) else None
    return isinstance(base, dict) and base.get("portable") is True


def enter(params_file: Path) -> None:
    """Set the portable environment for this process, if params ask for it and neither numpy nor
    torch has loaded yet (`check` catches torch's case)."""
    if not {"torch", "numpy"} & sys.modules.keys() and switched_on(params_file):
        ENTERED_FROM.update({k: os.environ[k] for k in ENVIRONMENT if k in os.environ})
        os.environ.update(ENVIRONMENT)


def check(threads: int) -> None:
    """Run torch with `threads` threads; refuse if torch loaded without the portable kernels."""
    import click
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    unset = [key for key, value in ENVIRONMENT.items() if os.environ.get(key) != value]
    if capability != "DEFAULT" or unset:
        raise click.ClickException(
            f"portable mode needs {', '.join(unset) or 'its kernel settings'} set before numpy "
            f"and torch load (torch runs {capability} kernels): run the stage as a `digits` "
            "command, or set params base.portable: false"
        )
    torch.set_num_threads(threads)
    missing = [flag for flag in ORT_FEATURES if flag not in cpu_flags()]
    if missing and cpu_flags():
        click.echo(
            f"warning: this CPU lacks {', '.join(missing)}: ONNX Runtime's outputs here differ in "
            "the last bits from AVX2 machines, and so may the ONNX-based metrics",
            err=True,
        )


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()
