import pytest
import torch

from pipeline.training.optim import make_optimizer, make_scheduler
from pipeline.training.params import OPTIMIZERS, TrainParams

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


S = torch.optim.lr_scheduler
# torch's own scheduler for each of ours: (optimizer, steps per epoch, total steps) -> scheduler.
# Ours is stepped per batch at fractional epoch t = step / steps_per_epoch; torch's per-epoch
# ones are given the per-batch equivalent (step size in batches, gamma ** (1 / steps)).
TORCH_SCHEDULES = {
    "constant": lambda o, k, n: S.ConstantLR(o, factor=1.0, total_iters=n),
    "step": lambda o, k, n: S.StepLR(o, step_size=2 * k, gamma=0.5),
    "exponential": lambda o, k, n: S.ExponentialLR(o, gamma=0.5 ** (1 / k)),
    "polynomial": lambda o, k, n: S.PolynomialLR(o, total_iters=n, power=2),
    "cosine": lambda o, k, n: S.CosineAnnealingLR(o, T_max=n),
}
SCHEDULE_PARAMS = {"step_epochs": 2, "gamma": 0.5, "decay": 0.5, "power": 2}


@pytest.mark.parametrize("steps", [1, STEPS])
@pytest.mark.parametrize("schedule", TORCH_SCHEDULES)
def test_schedule_matches_torchs_builtin_scheduler_at_every_step(schedule, steps):
    params = TrainParams(lr=LR, schedule=schedule, **SCHEDULE_PARAMS)
    optimizer = sgd()
    n = steps * EPOCHS
    oracle = torch_sequence(optimizer, TORCH_SCHEDULES[schedule](optimizer, steps, n), n)
    assert lr_sequence(params, steps=steps) == pytest.approx(oracle, rel=1e-9)
    assert len(set(oracle)) > (schedule != "constant")  # the oracle really moves


def test_inverse_time_follows_its_formula_at_every_step():
    # torch has no inverse-time decay, so the formula is the only oracle here.
    params = TrainParams(lr=LR, schedule="inverse_time", **SCHEDULE_PARAMS)
    expected = [LR / (1 + 0.5 * step / STEPS) for step in range(STEPS * EPOCHS)]
    assert lr_sequence(params) == pytest.approx(expected, rel=1e-12)


def one_cycle_params() -> TrainParams:
    return TrainParams(
        lr=LR, schedule="one_cycle", pct_start=0.25, div_factor=10, final_div_factor=100
    )


def torch_one_cycle(n: int, pct_start: float, total: int | None = None) -> list[float]:
    """torch's OneCycleLR (cosine, two phases, no momentum cycling) over n steps."""
    optimizer = sgd()
    scheduler = S.OneCycleLR(
        optimizer,
        max_lr=LR,
        total_steps=total or n,
        pct_start=pct_start,
        anneal_strategy="cos",
        div_factor=10,
        final_div_factor=100,
        three_phase=False,
        cycle_momentum=False,
    )
    return torch_sequence(optimizer, scheduler, n)


def test_one_cycle_is_torchs_one_cycle_one_step_later():
    # torch's OneCycleLR peaks at step pct_start * n - 1 and reaches the floor at the last step,
    # n - 1; ours peaks at step pct_start * n and would reach the floor at step n, one past the
    # end. Ours is exactly torch's over n + 1 steps with the peak one step later.
    lrs = lr_sequence(one_cycle_params(), steps=10, epochs=4)  # 40 steps
    shifted = torch_one_cycle(40, pct_start=(0.25 * 40 + 1) / 41, total=41)
    assert lrs == pytest.approx(shifted, rel=1e-9)
    plain = torch_one_cycle(40, pct_start=0.25)
    assert (plain.index(max(plain)), lrs.index(max(lrs))) == (9, 10)
    assert lrs[0] == pytest.approx(plain[0]) and plain[0] == pytest.approx(LR / 10)
    assert plain[-1] == pytest.approx(LR / 10 / 100) and lrs[-1] > plain[-1]


@pytest.mark.parametrize(
    ("schedule", "then"),
    [
        ("constant", lambda o: S.ConstantLR(o, factor=1.0, total_iters=1)),
        ("exponential", lambda o: S.ExponentialLR(o, gamma=0.5 ** (1 / STEPS))),
        ("step", lambda o: S.StepLR(o, step_size=2 * STEPS, gamma=0.5)),
    ],
)
def test_warmup_is_torchs_linear_warmup_times_the_schedule(schedule, then):
    # Ours warms up by (step + 1) / (warmup * steps_per_epoch): torch's LinearLR from
    # 1 / (warmup * steps) to 1 over warmup * steps - 1 steps, multiplied into the schedule.
    params = TrainParams(lr=LR, schedule=schedule, warmup=2.0, **SCHEDULE_PARAMS)
    optimizer = sgd()
    ramp = S.LinearLR(
        optimizer, start_factor=1 / (2 * STEPS), end_factor=1, total_iters=2 * STEPS - 1
    )
    scheduler = S.ChainedScheduler([ramp, then(optimizer)], optimizer=optimizer)
    oracle = torch_sequence(optimizer, scheduler, STEPS * EPOCHS)
    lrs = lr_sequence(params)
    assert lrs == pytest.approx(oracle, rel=1e-9)
    assert lrs[0] == pytest.approx(LR / 8)


def test_warmup_multiplies_inverse_time_decay():
    # No torch scheduler decays as 1 / (1 + decay * t), so the formula is the oracle here.
    params = TrainParams(lr=LR, schedule="inverse_time", decay=0.5, warmup=2.0)
    expected = [
        LR / (1 + 0.5 * step / STEPS) * min(1.0, (step + 1) / (2 * STEPS))
        for step in range(STEPS * EPOCHS)
    ]
    assert lr_sequence(params) == pytest.approx(expected, rel=1e-12)


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
