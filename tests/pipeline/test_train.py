import copy
import json
import os
import signal
import subprocess
import sys
import typing
from pathlib import Path

import click
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch.nn.utils import prune
from torch.optim.optimizer import register_optimizer_step_pre_hook

from digits.cli import cli
from pipeline.compression.pruning import effective_weight
from pipeline.config import ParamError, parse_group
from pipeline.model.network import Activation, load_checkpoint
from pipeline.training.loop import data_loss, evaluate, fit, penalty, take_subset
from pipeline.training.optim import lr_lambda, make_optimizer
from pipeline.training.params import OPTIMIZERS, SCHEDULES, TrainParams
from tests.conftest import make_digits
from tests.pipeline.conftest import tiny_model, write_prepared

ACTIVATIONS = typing.get_args(Activation)
FAST = {"epochs": 4, "batch_size": 32, "lr": 0.01, "schedule": "constant"}


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_digits(n, seed)
    return x.reshape(n, 784), y.astype(np.int64)


pytestmark = pytest.mark.usefixtures("one_thread")


def train_loss(net, train, params: TrainParams) -> float:
    """The training loss (as configured) over the whole split, in eval mode."""
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(train[0]).float())
        return data_loss(logits, torch.from_numpy(train[1]), params).item()


def trains(data, params: TrainParams, **model) -> None:
    train, dev, transform = data
    net = tiny_model(transform, **model)
    before = train_loss(net, train, params)
    history = fit(net, train, dev, params)
    after = train_loss(net, train, params)
    assert len(history) == params.epochs
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_trains(data, activation):
    trains(data, TrainParams(**FAST, optimizer="adam"), activation=activation)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains(data, optimizer):
    lr = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05}.get(optimizer, 0.01)
    trains(data, TrainParams(**{**FAST, "lr": lr}, optimizer=optimizer, momentum=0.5))


# torch's own optimizer for each name, with every hyperparameter set to a non-default value.
HYPER = {"lr": 0.05, "momentum": 0.8, "betas": (0.8, 0.95), "weight_decay": 0.02}
TORCH_OPTIMIZERS = {
    "sgd": lambda w: torch.optim.SGD(w, lr=0.05, weight_decay=0.02),
    "momentum": lambda w: torch.optim.SGD(w, lr=0.05, momentum=0.8, weight_decay=0.02),
    "nesterov": lambda w: torch.optim.SGD(
        w, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02
    ),
    "adagrad": lambda w: torch.optim.Adagrad(w, lr=0.05, weight_decay=0.02),
    "rmsprop": lambda w: torch.optim.RMSprop(w, lr=0.05, momentum=0.8, weight_decay=0.02),
    "adam": lambda w: torch.optim.Adam(w, lr=0.05, betas=(0.8, 0.95), weight_decay=0.02),
    "adamw": lambda w: torch.optim.AdamW(w, lr=0.05, betas=(0.8, 0.95), weight_decay=0.02),
}


def three_steps(make) -> list[torch.Tensor]:
    """The weights of a fixed Linear(5, 3) after 3 steps of `make(parameters)` on fixed data."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    layer = torch.nn.Linear(5, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 5, generator=gen))
        layer.bias.copy_(torch.randn(3, generator=gen))
    optimizer = make(layer.parameters())
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in layer.parameters()]


def test_torch_optimizers_cover_every_optimizer_name():
    assert set(TORCH_OPTIMIZERS) == set(OPTIMIZERS)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_steps_like_torchs_own(optimizer):
    params = TrainParams(optimizer=optimizer, **HYPER)
    ours = three_steps(lambda parameters: make_optimizer(parameters, params))
    oracle = three_steps(TORCH_OPTIMIZERS[optimizer])
    start = three_steps(lambda parameters: torch.optim.SGD(parameters, lr=0.0))
    for got, expected, before in zip(ours, oracle, start, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
        assert (got - before).abs().max() > 1e-3  # the steps really moved the weights


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_trains(data, schedule):
    params = TrainParams(**{**FAST, "schedule": schedule}, optimizer="adam", warmup=1.0)
    train, dev, transform = data
    net = tiny_model(transform)
    before = train_loss(net, train, params)
    history = fit(net, train, dev, params)
    assert train_loss(net, train, params) < 0.7 * before
    # Each epoch starts at the lr the schedule gives its first batch (checked against torch's
    # schedulers in test_optim.py): fit really steps the schedule once per batch.
    steps = -(-len(train[1]) // params.batch_size)
    factor = lr_lambda(params, steps, params.epochs)
    expected = [params.lr * factor(epoch * steps) for epoch in range(params.epochs)]
    assert [row["lr"] for row in history] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "mse", "epochs": 8},
        {"label_smoothing": 0.1},
        {"clip_norm": 0.5},
        {"max_norm": 1.0},
        {"l1": 1e-4},
        # The fixture digits are random dot patterns: only a gentle affine keeps them readable.
        {"augment": True, "augment_shift": 0.3, "augment_degrees": 2.0, "augment_scale": 0.02},
    ],
)
def test_loss_variants_clipping_l1_and_augmentation_train(data, options):
    trains(data, TrainParams(**{**FAST, "optimizer": "adam", **options}))


def test_history_rows_carry_the_contracted_keys_and_dev_figures_match_evaluate(data):
    train, dev, transform = data
    net = tiny_model(transform)
    history = fit(net, train, dev, TrainParams(**{**FAST, "epochs": 1}))
    row = history[0]
    assert set(row) == {"epoch", "train_loss", "train_accuracy", "dev_loss", "dev_accuracy", "lr"}
    assert row["dev_loss"] == evaluate(net, dev)["loss"]
    assert row["dev_accuracy"] == evaluate(net, dev)["accuracy"]


def test_l1_penalty_drives_weights_towards_zero(data):
    train, dev, transform = data
    norms = []
    for l1 in (0.0, 1e-2):
        net = tiny_model(transform)
        fit(net, train, dev, TrainParams(**FAST, l1=l1, weight_decay=0.0))
        norms.append(sum(lin.weight.abs().sum().item() for lin in net.linears()))
    assert norms[1] < 0.7 * norms[0]


def test_same_seed_gives_the_same_history_and_weights(data):
    train, dev, transform = data
    params = TrainParams(**FAST, augment=True)
    runs = []
    for _ in range(2):
        net = tiny_model(transform, seed=3)
        runs.append((fit(net, train, dev, params, seed=5), net.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][key]), key
    other = fit(tiny_model(transform, seed=3), train, dev, params, seed=6)
    assert other != runs[0][0]


class Killed(Exception):
    pass


def kill_after(epoch: int):
    def log(row: dict) -> None:
        if row["epoch"] == epoch:
            raise Killed

    return log


@pytest.mark.parametrize("early_stopping", ["none", "dev_accuracy"])
def test_killed_run_resumes_to_exactly_the_uninterrupted_weights(data, tmp_path, early_stopping):
    train, dev, transform = data
    params = TrainParams(
        epochs=5, batch_size=32, lr=0.02, schedule="one_cycle", augment=True,
        early_stopping=early_stopping, patience=10,
    )  # fmt: skip
    whole = tiny_model(transform, batchnorm=True)
    expected = fit(whole, train, dev, params, seed=1)
    state = tmp_path / "state.pt"
    with pytest.raises(Killed):
        fit(tiny_model(transform, batchnorm=True), train, dev, params, seed=1,
            state_path=state, log=kill_after(2))  # fmt: skip
    torch.manual_seed(999)  # a fresh process would not share the killed run's RNG position
    resumed = tiny_model(transform, seed=7, batchnorm=True)
    history = fit(resumed, train, dev, params, seed=1, state_path=state, resume=True)
    assert history == expected
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


@pytest.mark.parametrize(
    "change",
    [{"params": TrainParams(**{**FAST, "lr": 0.5})}, {"hidden": (8,)}, {"seed": 3}, {"epochs": 9}],
)
def test_resume_refuses_a_state_written_with_another_config(data, tmp_path, change):
    train, dev, transform = data
    state = tmp_path / "state.pt"
    fit(tiny_model(transform), train, dev, TrainParams(**FAST), state_path=state)
    other = tiny_model(transform, hidden=change.get("hidden", (16,)))
    with pytest.raises(click.ClickException, match="cannot resume"):
        fit(other, train, dev, change.get("params", TrainParams(**FAST)), state_path=state,
            resume=True, seed=change.get("seed", 0), epochs=change.get("epochs"))  # fmt: skip


def test_fit_trains_a_pruned_model_and_keeps_pruned_weights_zero(data):
    train, dev, transform = data
    net = tiny_model(transform)
    for linear in net.linears():
        prune.l1_unstructured(linear, "weight", amount=0.5)
    before = evaluate(net, train)["loss"]
    masks = [linear.weight_mask.clone() for linear in net.linears()]
    originals = [linear.weight_orig.detach().clone() for linear in net.linears()]
    fit(net, train, dev, TrainParams(**FAST, l1=1e-4))
    for linear, mask, original in zip(net.linears(), masks, originals, strict=True):
        assert torch.equal(linear.weight_mask, mask)
        assert torch.all(linear.weight[mask == 0] == 0)
        assert not torch.equal(linear.weight_orig[mask == 1], original[mask == 1])
    assert evaluate(net, train)["loss"] < 0.5 * before


@pytest.mark.parametrize("pruned", [False, True])
def test_max_norm_bounds_each_hidden_units_incoming_weights_after_every_step(data, pruned):
    train, dev, transform = data
    net = tiny_model(transform, hidden=(16, 12))
    if pruned:
        for linear in net.linears():
            prune.l1_unstructured(linear, "weight", amount=0.5)
    seen = []  # before every training forward: the weights the previous step left
    net.register_forward_pre_hook(
        lambda m, args: seen.append(largest_row_norm(m) if m.training else None)
    )
    fit(net, train, dev, TrainParams(**{**FAST, "epochs": 2, "lr": 0.5}, max_norm=0.3))
    after_steps = [norm for norm in seen[1:] if norm is not None]  # seen[0]: the initial weights
    assert len(after_steps) > 10 and max(after_steps) <= 0.3 * (1 + 1e-5)
    assert largest_row_norm(net) == pytest.approx(0.3, rel=1e-5)  # the lr pushes them to the bound
    assert effective_weight(net.head).norm(dim=1).max().item() > 0.3  # the head is not constrained


def largest_row_norm(net) -> float:
    """The largest incoming-weight norm of any hidden unit, as the layer computes with it."""
    return max(effective_weight(b.linear).norm(dim=1).max().item() for b in net.blocks)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 0),
        ("lr", -1.0),
        ("optimizer", "lbfgs"),
        ("label_smoothing", 1.0),
        ("max_norm", 0.0),
        ("nope", 1),
    ],
)
def test_bad_train_params_are_rejected_naming_the_key(key, value):
    with pytest.raises(ParamError, match=f"train.{key}"):
        parse_group(TrainParams, "train", {key: value})


@pytest.mark.slow
def test_train_command_writes_checkpoint_metrics_and_dvclive_and_resumes(
    data, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path / "data/prepared", data)
    params = {
        "base": {"seed": 1},
        "model": {"hidden": [16]},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.01},
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(cli, ["train"])
    assert result.exit_code == 0, result.output
    assert "epoch 3:" in result.output
    report = json.loads(Path("reports/train.json").read_text())
    assert report["epochs"] == 3 and report["dev_accuracy"] > 0.9
    model, extra = load_checkpoint("models/mlp.pt")
    assert tuple(extra["model_params"]["hidden"]) == (16,)
    logits_acc = evaluate(model, data[1])["accuracy"]
    assert logits_acc == report["dev_accuracy"]
    lines = Path("dvclive/plots/metrics/dev/accuracy.tsv").read_text().splitlines()
    assert len(lines) == 4  # header + one row per epoch
    grads = Path("dvclive/plots/metrics/diagnostics/blocks.0/grad_norm.tsv").read_text()
    assert len(grads.splitlines()) == 4
    assert report["diagnosis"]["verdict"] == "healthy"
    diagnostics = json.loads(Path("reports/train/diagnostics.json").read_text())
    assert [row["epoch"] for row in diagnostics] == [1, 2, 3]
    assert set(diagnostics[0]["layers"]) == {"blocks.0", "head"}
    pictures = json.loads(Path("reports/train/pictures.json").read_text())
    assert np.array(pictures["first_layer"]).shape == (16, 28, 28)  # all 16 units of the layer
    assert np.array(pictures["pca"]).shape == (len(data[1][1]), 2)
    # --resume on a finished run changes nothing.
    weights = model.state_dict()
    result = CliRunner().invoke(cli, ["train", "--resume"])
    assert result.exit_code == 0, result.output
    again, _ = load_checkpoint("models/mlp.pt")
    for key, value in weights.items():
        assert torch.equal(value, again.state_dict()[key])


def test_train_command_reports_missing_data_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("base: {seed: 1}\n")
    result = CliRunner().invoke(cli, ["train", "--data", "nowhere"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not Path("models").exists()


@pytest.mark.slow
def test_digits_train_killed_mid_run_resumes_to_the_uninterrupted_checkpoint(data, tmp_path):
    write_prepared(tmp_path / "data/prepared", data)
    params = {"base": {"seed": 1}, "model": {"hidden": [16]}, "train": {"epochs": 40}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    train = [sys.executable, "-c", "from digits.cli import main; main()", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run([*train, "--out", "whole/mlp.pt"], cwd=tmp_path, env=env, check=True)
    assert whole.returncode == 0
    with subprocess.Popen(train, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) as run:
        for line in run.stdout:
            if line.startswith("epoch 3:"):
                run.send_signal(signal.SIGKILL)
                break
    assert run.returncode == -signal.SIGKILL and not (tmp_path / "models/mlp.pt").exists()
    resume = subprocess.run(
        [*train, "--resume"], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    )
    first = int(resume.stdout.split("epoch ", 1)[1].split(":")[0])
    assert first > 3, "the resumed run must continue, not start again"  # a restart matches too
    expected, _ = load_checkpoint(tmp_path / "whole/mlp.pt")
    resumed, _ = load_checkpoint(tmp_path / "models/mlp.pt")
    for key, value in expected.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_a_train_subset_is_a_seeded_share_in_order_and_the_whole_split_is_untouched():
    x, y = split(200, 3)
    assert take_subset((x, y), 1.0, seed=0)[0] is x  # the default: byte-identical training
    sx, sy = take_subset((x, y), 0.25, seed=0)
    assert len(sy) == 50
    rows = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in sx]
    assert rows == sorted(rows) and len(set(rows)) == 50  # distinct rows, original order
    np.testing.assert_array_equal(sy, y[rows])
    np.testing.assert_array_equal(take_subset((x, y), 0.25, seed=0)[0], sx)
    assert not np.array_equal(take_subset((x, y), 0.25, seed=1)[0], sx)
    with pytest.raises(ParamError, match=r"train.subset must be in \(0, 1\]"):
        parse_group(TrainParams, "train", {"subset": 0.0})


# One full-batch SGD step, no momentum, dropout or batchnorm: fit's first epoch is then exactly
# "loss at the initial weights, then w - lr * grad(objective)", which torch computes as an oracle.
ONE_STEP = {"epochs": 1, "batch_size": 1000, "optimizer": "sgd", "lr": 0.5,
            "schedule": "constant", "weight_decay": 0.0}  # fmt: skip


def plain_net(transform):
    return tiny_model(transform, seed=4, dropout=0.0, batchnorm=False)


def oracle_objective(net, train, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(data loss, objective) of a batch as the options define them, from torch's primitives."""
    x, y = torch.from_numpy(train[0]).float(), torch.from_numpy(train[1])
    logits = net(x)  # (N, 10)
    if options.get("loss") == "mse":  # softmax against one-hot, mean over all N×10 entries
        target = torch.nn.functional.one_hot(y, 10).float()
        loss = torch.nn.functional.mse_loss(logits.softmax(dim=1), target)
    else:
        smoothing = options.get("label_smoothing", 0.0)
        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=smoothing)
    objective = loss
    linear_weights = [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear)]
    objective = objective + options.get("l1", 0.0) * sum(W.abs().sum() for W in linear_weights)
    decay = options.get("weight_decay", 0.0)  # SGD's L2: every parameter, biases included
    return loss, objective + 0.5 * decay * sum(p.pow(2).sum() for p in net.parameters())


def sgd_step_by_hand(net, train, options: dict) -> tuple[float, dict[str, torch.Tensor]]:
    """The data loss at the net's weights and its weights after one SGD step on the objective."""
    net = copy.deepcopy(net)
    loss, objective = oracle_objective(net, train, options)
    objective.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= ONE_STEP["lr"] * p.grad
    return loss.item(), {k: v.detach() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(
    ("options", "ignored"),
    [
        ({}, None),
        ({"label_smoothing": 0.3}, {"label_smoothing": 0.0}),
        ({"loss": "mse"}, {"loss": "cross_entropy"}),
        ({"l1": 1e-2}, {"l1": 0.0}),
        ({"weight_decay": 0.1}, {"weight_decay": 0.0}),
    ],
    ids=["cross_entropy", "label_smoothing", "mse", "l1", "weight_decay"],
)
def test_fit_minimises_the_configured_loss_and_penalty_as_torch_computes_them(
    data, options, ignored
):
    train, dev, transform = data
    net = plain_net(transform)
    expected_loss, expected = sgd_step_by_hand(net, train, options)
    history = fit(net, train, dev, TrainParams(**{**ONE_STEP, **options}))
    # The recorded train loss is the data loss at the initial weights (penalties excluded).
    assert history[0]["train_loss"] == pytest.approx(expected_loss, rel=1e-6)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    if ignored is not None:  # the oracle tells the option apart: ignoring it would fail above
        _, without = sgd_step_by_hand(plain_net(transform), train, {**options, **ignored})
        gap = max((expected[k] - without[k]).abs().max().item() for k in expected)
        assert gap > 1e-4, gap


def test_label_smoothing_shifts_the_loss_towards_the_mean_log_loss_over_classes(data):
    train, _, transform = data
    net = plain_net(transform)
    with torch.no_grad():
        logits = net(torch.from_numpy(train[0]).float())
    y = torch.from_numpy(train[1])
    log_p = logits.log_softmax(dim=1)  # (N, 10)
    plain = -log_p.gather(1, y[:, None]).mean()
    uniform = -log_p.mean()  # the cross-entropy against the uniform target
    for s in (0.0, 0.1, 0.5):
        loss = data_loss(logits, y, TrainParams(label_smoothing=s))
        assert loss.item() == pytest.approx(((1 - s) * plain + s * uniform).item(), rel=1e-6)
        oracle = torch.nn.functional.cross_entropy(logits, y, label_smoothing=s)
        assert loss.item() == pytest.approx(oracle.item(), rel=1e-6)
    assert abs(uniform - plain) > 0.1  # so smoothing really moves the loss


def test_the_penalty_is_l1_and_half_l2_over_linear_weights_only_as_the_layers_use_them(data):
    _, _, transform = data
    net = tiny_model(transform, hidden=(16, 12), batchnorm=True)
    prune.l1_unstructured(net.blocks[0].linear, "weight", amount=0.5)
    used = [  # independent of penalty's own walk: every nn.Linear, masked where pruned
        m.weight_orig * m.weight_mask if prune.is_pruned(m) else m.weight
        for m in net.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    assert len(used) == 3
    l1, l2 = 0.01, 0.3
    expected = l1 * sum(W.abs().sum() for W in used) + 0.5 * l2 * sum(W.pow(2).sum() for W in used)
    assert penalty(net, l1, l2).item() == pytest.approx(expected.item(), rel=1e-6)
    assert penalty(net, 0.0, 0.0).item() == 0.0
    with torch.no_grad():  # biases and batchnorm are not penalised
        for name, p in net.named_parameters():
            if not name.endswith("weight") and not name.endswith("weight_orig") or "norm" in name:
                p.add_(5.0)
    assert penalty(net, l1, l2).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("clip_norm", [None, 0.05])
def test_clip_norm_rescales_the_global_gradient_to_at_most_its_bound_before_each_step(
    data, clip_norm
):
    train, dev, transform = data
    net = tiny_model(transform)
    raw: dict[torch.nn.Parameter, torch.Tensor] = {}  # each step's gradient before clipping
    steps: list[tuple[float, float]] = []  # (norm before clipping, norm the optimizer steps on)

    def keep_raw(p: torch.nn.Parameter) -> None:
        raw[p] = p.grad.detach().clone()

    def before_step(optimizer, args, kwargs) -> None:
        grads = [p for group in optimizer.param_groups for p in group["params"]]
        before = torch.linalg.vector_norm(torch.stack([raw[p].norm() for p in grads])).item()
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in grads])).item()
        scale = 1.0 if clip_norm is None else min(1.0, clip_norm / (before + 1e-6))
        for p in grads:  # torch's clip_grad_norm_: one factor for every gradient
            torch.testing.assert_close(p.grad, raw[p] * scale, rtol=1e-5, atol=1e-8)
        steps.append((before, after))

    hooks = [p.register_post_accumulate_grad_hook(keep_raw) for p in net.parameters()]
    hooks.append(register_optimizer_step_pre_hook(before_step))
    try:
        fit(net, train, dev, TrainParams(**{**FAST, "epochs": 2}, clip_norm=clip_norm))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(steps) == 2 * -(-len(train[1]) // FAST["batch_size"])
    assert sum(before > 0.05 for before, _ in steps) > len(steps) // 2  # the bound bites
    if clip_norm is not None:
        assert max(after for _, after in steps) <= clip_norm * (1 + 1e-5)
