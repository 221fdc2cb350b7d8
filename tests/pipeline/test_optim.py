import math

import pytest
import torch

from pipeline.optim import OPTIMIZERS, make_optimizer, make_scheduler
from pipeline.training import TrainParams

STEPS, EPOCHS, LR = 4, 6, 0.1  # steps per epoch, epochs, base lr


def lr_sequence(params: TrainParams, steps: int = STEPS, epochs: int = EPOCHS) -> list[float]:
    """The lr used by each optimizer step of a run, read back from the real optimizer."""
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = make_optimizer([weight], params)
    scheduler = make_scheduler(optimizer, params, steps, epochs)
    lrs = []
    for _ in range(steps * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def torch_sequence(optimizer: torch.optim.Optimizer, scheduler, n: int) -> list[float]:
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def sgd(lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=lr)


@pytest.mark.parametrize(
    ("schedule", "formula"),
    [
        ("constant", lambda t: LR),
        ("step", lambda t: LR * 0.5 ** math.floor(t / 2)),
        ("exponential", lambda t: LR * 0.5**t),
        ("inverse_time", lambda t: LR / (1 + 0.5 * t)),
        ("polynomial", lambda t: LR * (1 - t / EPOCHS) ** 2),
        ("cosine", lambda t: LR / 2 * (1 + math.cos(math.pi * t / EPOCHS))),
    ],
)
def test_schedule_follows_its_formula_at_every_step(schedule, formula):
    params = TrainParams(lr=LR, schedule=schedule, step_epochs=2, gamma=0.5, decay=0.5, power=2)
    expected = [formula(step / STEPS) for step in range(STEPS * EPOCHS)]
    assert lr_sequence(params) == pytest.approx(expected, rel=1e-12)


def test_schedules_agree_with_torch_builtin_schedulers():
    n = STEPS * EPOCHS
    cases = {
        "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2 * STEPS, gamma=0.5),
        "polynomial": lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=n, power=2),
        "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=n),
    }
    for schedule, make in cases.items():
        params = TrainParams(lr=LR, schedule=schedule, step_epochs=2, gamma=0.5, power=2)
        optimizer = sgd()
        oracle = torch_sequence(optimizer, make(optimizer), n)
        assert lr_sequence(params) == pytest.approx(oracle, rel=1e-9, abs=1e-15), schedule
    # exponential: torch's per-epoch ExponentialLR agrees at every epoch boundary
    optimizer = sgd()
    oracle = torch_sequence(optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.5), 6)
    ours = lr_sequence(TrainParams(lr=LR, schedule="exponential", gamma=0.5))[::STEPS]
    assert ours == pytest.approx(oracle, rel=1e-12)


def test_one_cycle_rises_by_cosine_to_the_peak_then_anneals_to_the_floor():
    params = TrainParams(
        lr=LR, schedule="one_cycle", pct_start=0.25, div_factor=10, final_div_factor=100
    )
    lrs = lr_sequence(params, steps=10, epochs=4)  # 40 steps, peak at step 10
    low, floor = LR / 10, LR / 10 / 100
    expected = [
        low + (LR - low) * (1 - math.cos(math.pi * s / 10)) / 2
        if s < 10
        else floor + (LR - floor) * (1 + math.cos(math.pi * (s - 10) / 30)) / 2
        for s in range(40)
    ]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(low) and max(lrs) == pytest.approx(LR)


def test_warmup_ramps_linearly_then_hands_over_to_the_schedule():
    params = TrainParams(lr=LR, schedule="inverse_time", decay=0.5, warmup=2.0)
    lrs = lr_sequence(params)
    for step, lr in enumerate(lrs):
        t = step / STEPS
        assert lr == pytest.approx(LR / (1 + 0.5 * t) * min(1.0, (step + 1) / (2 * STEPS)))
    assert lrs[0] == pytest.approx(LR / 8)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_make_optimizer_builds_the_named_torch_optimizer(name):
    params = TrainParams(optimizer=name, lr=0.01, momentum=0.8, weight_decay=0.001)
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(2))], params)
    kinds = {
        "sgd": torch.optim.SGD,
        "momentum": torch.optim.SGD,
        "nesterov": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
        "rmsprop": torch.optim.RMSprop,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
    }
    assert type(optimizer) is kinds[name]
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.001
    if name in ("momentum", "nesterov"):
        assert group["momentum"] == 0.8 and group["nesterov"] == (name == "nesterov")
    if name == "sgd":
        assert group["momentum"] == 0
