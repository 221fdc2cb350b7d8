"""`digits gradcheck`: autograd gradients vs two-sided finite differences, per parameter tensor.

Runs in float64 on a small MLP (BN and dropout off) whose objective is the training loss plus the
L1 and L2 terms. Kinks (relu family, maxout ties, |W| at 0) break finite differences, so the data
seed is advanced until every pre-activation, maxout gap and weight lies at least `margin` from
its kink: a step of eps then never crosses one. Reads and writes no files.
Run: `digits gradcheck` (every activation) or `digits gradcheck -a relu -a maxout`.
"""

from __future__ import annotations

import typing

import click
import torch

from digits.contract import PIXELS, SIDE
from pipeline.model.network import MLP, Activation, Maxout, ModelParams, NetSpec
from pipeline.training.loop import data_loss, penalty
from pipeline.training.params import TrainParams

KINKED = ("relu", "noisy_relu", "leaky_relu", "prelu", "maxout")


def small_net(
    activation: str, seed: int, features: int = 6
) -> tuple[MLP, torch.Tensor, torch.Tensor]:
    """A float64 784->6->5->4->10 MLP without BN or dropout, with 8 random inputs and labels."""
    gen = torch.Generator().manual_seed(seed)
    spec = NetSpec.from_params(
        ModelParams(hidden=(5, 4), activation=activation, batchnorm=False, dropout=0.0), features
    )
    torch.manual_seed(seed)
    model = MLP(spec).double().eval()
    model.preprocess.matrix.copy_(
        torch.randn(PIXELS, features, generator=gen, dtype=torch.float64) / SIDE
    )
    if activation == "prelu":  # a negative-side slope that is neither 0 nor 1 tests it properly
        for block in model.blocks:
            block.act.weight.data.uniform_(0.1, 0.4, generator=gen)
    x = torch.rand(8, PIXELS, generator=gen, dtype=torch.float64) * 2 - 1  # (8, 784), mean-free-ish
    y = torch.randint(0, 10, (8,), generator=gen)
    return model, x, y


def kink_margin(model: MLP, x: torch.Tensor) -> float:
    """Smallest distance of any pre-activation, maxout gap or weight from its kink."""
    gaps = [min(linear.weight.abs().min().item() for linear in model.linears())]
    h = model.preprocess(x)
    for block in model.blocks:
        z = block.linear(h)  # (N, width*pieces)
        if isinstance(block.act, Maxout):
            top2 = z.unflatten(1, (-1, block.act.pieces)).topk(2, dim=2).values  # (N, width, 2)
            gaps.append((top2[..., 0] - top2[..., 1]).min().item())
        elif model.spec.activation in KINKED:
            gaps.append(z.abs().min().item())
        h = block.act(z)
    return min(gaps)


def objective(model: MLP, x: torch.Tensor, y: torch.Tensor, l1: float, l2: float) -> torch.Tensor:
    """Mean cross-entropy plus l1 * sum |W| + l2/2 * sum W^2."""
    return data_loss(model(x), y, TrainParams()) + penalty(model, l1, l2)


def relative_errors(activation: str, l1: float, l2: float, eps: float, margin: float) -> dict:
    """{parameter name: |approx - autograd| / (|approx| + |autograd|)} for one activation."""
    seed = 0
    model, x, y = small_net(activation, seed)
    while kink_margin(model, x) < margin:
        seed += 1
        model, x, y = small_net(activation, seed)
    model.zero_grad()
    objective(model, x, y, l1, l2).backward()
    errors = {}
    with torch.no_grad():
        for name, theta in model.named_parameters():
            approx = torch.zeros_like(theta)
            flat, approx_flat = theta.view(-1), approx.view(-1)
            for i in range(flat.numel()):
                saved = flat[i].item()
                flat[i] = saved + eps
                plus = objective(model, x, y, l1, l2).item()
                flat[i] = saved - eps
                minus = objective(model, x, y, l1, l2).item()
                flat[i] = saved
                approx_flat[i] = (plus - minus) / (2 * eps)
            diff = (approx - theta.grad).norm().item()
            errors[name] = diff / (approx.norm().item() + theta.grad.norm().item())
    return errors


@click.command("gradcheck")
@click.option(
    "-a",
    "--activation",
    "activations",
    multiple=True,
    type=click.Choice(typing.get_args(Activation)),
    help="Activation(s) to check (default: all).",
)
@click.option("--l1", default=1e-3, show_default=True, help="L1 coefficient in the objective.")
@click.option("--l2", default=1e-2, show_default=True, help="L2 coefficient in the objective.")
@click.option("--eps", default=1e-6, show_default=True, help="Finite-difference step.")
@click.option(
    "--tolerance", default=1e-6, show_default=True, help="Largest relative error that passes."
)
def gradcheck_command(
    activations: tuple[str, ...], l1: float, l2: float, eps: float, tolerance: float
) -> None:
    """Compare autograd with finite differences in float64; print the error per parameter tensor."""
    worst = 0.0
    for activation in activations or typing.get_args(Activation):
        errors = relative_errors(activation, l1, l2, eps, margin=1e3 * eps)
        for name, error in errors.items():
            click.echo(f"{activation:<11} {name:<24} {error:.2e}")
        worst = max(worst, *errors.values())
    click.echo(f"worst relative error {worst:.2e} (tolerance {tolerance:.0e})")
    if not worst < tolerance:
        raise click.ClickException(f"gradient check failed: {worst:.2e} >= {tolerance:.0e}")
