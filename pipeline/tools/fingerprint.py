"""`digits fingerprint`: where two training runs part, step by step, under each kernel choice.

Trains the params' network with the params' train recipe (augmentations included) for a few
hundred steps on fixed random data and prints a hash of every weight after each of the first
steps and then every `--every` steps; with `--onnx`, also a hash of an ONNX file's outputs on
fixed inputs. `--matrix` runs itself once per kernel choice (ATen capability, MKL's CBWR mode,
oneDNN's ISA cap, torch threads), with portable mode on and off, and prints the first step at
which each run parts from the first one. `--wrap` puts a command in front of every run, e.g.
`--wrap "qemu-x86_64 -cpu Haswell"` to run on an emulated CPU of another kind and vendor (qemu-user
runs the interpreter, not the venv's symlink: pass that environment's site-packages in PYTHONPATH).
Reads params and the ONNX file; writes nothing but temporary params files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import torch

from digits.contract import INPUT, OUTPUTS, PIXELS
from pipeline.config import BaseParams, begin_stage, load_group, read_params
from pipeline.model.network import MLP, ModelParams, NetSpec
from pipeline.options import params_option
from pipeline.portable import ENTERED_FROM, ENVIRONMENT
from pipeline.training.loop import augment_batch, data_loss
from pipeline.training.optim import make_optimizer, make_scheduler
from pipeline.training.params import TrainParams

# The kernel choices --matrix tries, as environment for the run.
CHOICES: list[dict[str, str]] = [
    {},  # as the machine picks
    {"ATEN_CPU_CAPABILITY": "avx2"},
    {"ATEN_CPU_CAPABILITY": "avx512"},
    {"ATEN_CPU_CAPABILITY": "default"},
    *[
        {"MKL_CBWR": mode}
        for mode in ("COMPATIBLE", "AVX2", "AVX512", "COMPATIBLE,STRICT", "AVX2,STRICT")
    ],
    {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    {"DIGITS_FINGERPRINT_MKLDNN": "0"},  # read below: torch.backends.mkldnn.enabled = False
    {"OMP_NUM_THREADS": "1"},
    {"OMP_NUM_THREADS": "4"},
]
DATA_SIZE = 4096
MKLDNN_OFF = "DIGITS_FINGERPRINT_MKLDNN=0"


def weights_hash(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer, in state-dict order."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def train_fingerprints(
    model_params: ModelParams, params: TrainParams, steps: int, every: int, seed: int
) -> dict[int, str]:
    """Weight hashes after steps 1–3, every `every` steps and the last, of a run on fixed data."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(DATA_SIZE, PIXELS, generator=gen) * 255).round()  # (N, 784) pixels
    y = torch.randint(0, 10, (DATA_SIZE,), generator=gen)
    torch.manual_seed(seed)
    model = MLP(NetSpec.from_params(model_params, PIXELS)).train()
    optimizer = make_optimizer(model.parameters(), params)
    scheduler = make_scheduler(optimizer, params, DATA_SIZE // params.batch_size, params.epochs)
    prints = {0: weights_hash(model)}
    for step in range(1, steps + 1):
        idx = torch.randint(0, DATA_SIZE, (params.batch_size,), generator=gen)
        xb = augment_batch(x[idx], y[idx], params, gen) if params.augment else x[idx]
        loss = data_loss(model(xb), y[idx], params)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step <= 3 or step % every == 0 or step == steps:
            prints[step] = weights_hash(model)
    return prints


def onnx_fingerprint(path: Path, seed: int) -> str:
    """Hash of an ONNX file's outputs (ONNX Runtime, CPU) on 1,000 fixed random images, with 1
    and with 2 intra-op threads: one hash when they agree, both when they do not."""
    import onnxruntime as ort

    x = np.random.default_rng(seed).integers(0, 256, (1000, PIXELS)).astype(np.float32)
    hashes = []
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs = session.run(list(OUTPUTS), {INPUT: x})
        hashes.append(hashlib.sha256(b"".join(o.tobytes() for o in outputs)).hexdigest()[:12])
    return hashes[0] if hashes[0] == hashes[1] else "/".join(hashes)


def run_choice(
    params_file: Path, env: dict[str, str], portable: bool, options: list[str], wrap: list[str]
) -> dict:
    """One child `digits fingerprint --json` under a kernel choice; its answer."""
    params = read_params(params_file)
    params.setdefault("base", {})["portable"] = portable
    with tempfile.TemporaryDirectory() as tmp:
        child_params = Path(tmp) / "params.yaml"
        child_params.write_text(json.dumps(params))  # JSON is YAML
        command = [*wrap, sys.executable, "-m", "digits", "fingerprint", "--json"]
        command += ["--params", str(child_params), *options]
        # The environment this process had before portable mode set its own, plus the choice.
        start = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT} | ENTERED_FROM
        done = subprocess.run(
            command, env={**start, **env}, capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise click.ClickException(f"a fingerprint run failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout)


def parting_step(reference: dict, other: dict) -> str:
    """The first step whose hash differs from the reference's ('-' when none does)."""
    for step, value in reference["steps"].items():
        if other["steps"].get(step) != value:
            return step
    return "-" if other.get("onnx") == reference.get("onnx") else "onnx"


def matrix(params_file: Path, options: list[str], wrap: list[str]) -> list[dict]:
    """Every kernel choice, portable and not: its final hash and where it parts from the first."""
    rows, references = [], {}
    for env in CHOICES:
        named = " ".join(f"{k}={v}" for k, v in env.items()) or "as the machine picks"
        row: dict = {"choice": named.replace(MKLDNN_OFF, "torch.backends.mkldnn off")}
        for portable in (True, False):
            answer = run_choice(params_file, env, portable, options, wrap)
            reference = references.setdefault(portable, answer)
            key = "portable" if portable else "plain"
            row[key] = {
                "parts_at": parting_step(reference, answer),
                "final": list(answer["steps"].values())[-1],
                "onnx": answer.get("onnx"),
                "kernels": answer["kernels"],
            }
        rows.append(row)
    return rows


@click.command("fingerprint")
@params_option
@click.option("--steps", default=200, show_default=True, type=click.IntRange(1))
@click.option("--every", default=50, show_default=True, type=click.IntRange(1))
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--matrix", "as_matrix", is_flag=True, help="Run every kernel choice and compare.")
@click.option("--wrap", default="", help="A command to put in front of every --matrix run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fingerprint_command(
    params_file: Path, steps: int, every: int, onnx: Path | None, as_matrix: bool, wrap: str,
    as_json: bool,
) -> None:  # fmt: skip
    """Fingerprint a short training run (and an ONNX file's outputs) to find where runs part."""
    base = load_group(BaseParams, "base", params_file)
    if as_matrix:
        options = ["--steps", str(steps), "--every", str(every)]
        options += ["--onnx", str(onnx.resolve())] if onnx else []
        rows = matrix(params_file, options, shlex.split(wrap))
        click.echo(json.dumps(rows, indent=2) if as_json else render(rows))
        return
    if os.environ.get("DIGITS_FINGERPRINT_MKLDNN") == "0":
        torch.backends.mkldnn.enabled = False
    begin_stage(base)
    model_params = load_group(ModelParams, "model", params_file)
    prints = train_fingerprints(
        model_params, load_group(TrainParams, "train", params_file), steps, every, base.seed
    )
    answer: dict = {
        "kernels": f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads",
        "steps": {str(step): value for step, value in prints.items()},
    }
    if onnx is not None:
        answer["onnx"] = onnx_fingerprint(onnx, base.seed)
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo(f"kernels: {answer['kernels']}")
    for step, value in answer["steps"].items():
        click.echo(f"step {step:>5}  {value}")
    if "onnx" in answer:
        click.echo(f"onnx        {answer['onnx']}")


def render(rows: list[dict]) -> str:
    """The matrix as text: per choice, where it parts from the first run, portable or not."""
    lines = [f"{'kernel choice':<30} {'portable: parts at, final':<32} plain: parts at, final"]
    for row in rows:
        cells = [f"{row[k]['parts_at']:>5}  {row[k]['final']}" for k in ("portable", "plain")]
        lines.append(f"{row['choice']:<30} {cells[0]:<32} {cells[1]}")
    return "\n".join(lines)
