"""fit, the one training loop: epochs and batches, history rows, early stopping, the probe,
augmentation, evaluation, and the resume file (pipeline/training/loop.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook

from pipeline.config import ParamError
from pipeline.training.loop import (
    RunState,
    data_loss,
    evaluate,
    fit,
    load_state,
    run_config,
    save_state,
    track_best,
)
from pipeline.training.optim import make_optimizer, make_scheduler
from pipeline.training.params import TrainParams
from tests.pipeline.conftest import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"epochs": 3, "batch_size": 64, "lr": 0.01, "optimizer": "adam", "schedule": "constant"}


class Forwards:
    """Every forward of a model in one mode (training by default): its batch and its logits."""

    def __init__(self, model: torch.nn.Module, training: bool = True) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.training = training
        model.register_forward_hook(self.keep)

    def keep(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if module.training == self.training:
            self.batches.append((args[0].detach().clone(), output.detach().clone()))


def row_index(x: np.ndarray) -> dict[bytes, int]:
    """Which training row a batch row is, by its pixels (the fixture's rows are distinct)."""
    index = {row.astype(np.float32).tobytes(): i for i, row in enumerate(x)}
    assert len(index) == len(x)
    return index


def test_each_epoch_feeds_every_training_image_once_in_a_fresh_order(data):
    train, dev, transform = data
    net = tiny_model(transform)
    forwards = Forwards(net)
    fit(net, train, dev, TrainParams(**FAST))
    index, n = row_index(train[0]), len(train[1])
    per_epoch = -(-n // FAST["batch_size"])
    assert len(forwards.batches) == FAST["epochs"] * per_epoch
    orders = []
    for epoch in range(FAST["epochs"]):
        batches = forwards.batches[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert [len(xb) for xb, _ in batches[:-1]] == [FAST["batch_size"]] * (per_epoch - 1)
        order = [index[row.numpy().tobytes()] for xb, _ in batches for row in xb]
        assert sorted(order) == list(range(n))  # unaugmented: the training rows, each once
        orders.append(order)
    assert len({tuple(order) for order in orders}) == len(orders)  # a fresh order each epoch


def test_augmentation_changes_the_training_images_only_when_on_and_never_the_dev_ones(data):
    train, dev, transform = data
    index = row_index(train[0])
    on = {"augment_shift": 1.0, "augment_degrees": 5.0, "augment_noise": 0.5}
    for augment in (False, True):
        net = tiny_model(transform)
        forwards, evaluated = Forwards(net), Forwards(net, training=False)
        fit(net, train, dev, TrainParams(**{**FAST, "epochs": 1}, augment=augment, **on))
        rows = [row.numpy().tobytes() for xb, _ in forwards.batches for row in xb]
        known = sum(row in index for row in rows)
        assert known == (0 if augment else len(train[1])), (augment, known)
        # The dev figures each epoch are computed on the dev pixels as they are.
        dev_inputs = torch.cat([xb for xb, _ in evaluated.batches])
        assert torch.equal(dev_inputs, torch.from_numpy(dev[0]).float())


def test_history_train_figures_are_the_mean_loss_and_accuracy_of_the_epochs_own_forwards(data):
    train, dev, transform = data
    net = tiny_model(transform, dropout=0.3)  # dropout: the train figures are not eval figures
    forwards = Forwards(net)
    params = TrainParams(**{**FAST, "label_smoothing": 0.1})
    history = fit(net, train, dev, params)
    index, labels = row_index(train[0]), torch.from_numpy(train[1])
    per_epoch = len(forwards.batches) // params.epochs
    for epoch, row in enumerate(history):
        loss_sum, correct = 0.0, 0
        for xb, logits in forwards.batches[epoch * per_epoch : (epoch + 1) * per_epoch]:
            y = labels[[index[r.numpy().tobytes()] for r in xb]]
            loss_sum += data_loss(logits, y, params).item() * len(y)
            correct += (logits.argmax(dim=1) == y).sum().item()
        assert row["train_loss"] == pytest.approx(loss_sum / len(labels), rel=1e-5)
        assert row["train_accuracy"] == correct / len(labels)


def test_fit_runs_the_epochs_asked_logs_each_row_once_and_leaves_the_model_in_eval_mode(data):
    train, dev, transform = data
    logged = []
    net = tiny_model(transform)
    history = fit(net, train, dev, TrainParams(**FAST), epochs=2, log=logged.append)
    assert [row["epoch"] for row in history] == [1, 2]  # `epochs` overrides params.epochs
    assert logged == history
    assert not net.training
    figures = evaluate(net, dev)  # no early stopping: the model is the last epoch's
    assert (figures["loss"], figures["accuracy"]) == (
        history[-1]["dev_loss"],
        history[-1]["dev_accuracy"],
    )


def test_the_probe_starts_with_each_epoch_and_its_figures_go_into_that_epochs_row(data):
    train, dev, transform = data
    net = tiny_model(transform)
    calls = []

    def probe(model):
        start = model.head.weight.detach().clone()
        calls.append("start")

        def finish() -> dict:
            calls.append("finish")
            return {"moved": (model.head.weight - start).abs().max().item()}

        return finish

    history = fit(net, train, dev, TrainParams(**FAST), probe=probe)
    assert calls == ["start", "finish"] * FAST["epochs"]
    assert all(row["diagnostics"]["moved"] > 0 for row in history)  # measured across the epoch


def test_evaluate_gives_torchs_mean_cross_entropy_and_the_accuracy_in_eval_mode(data):
    _, dev, transform = data
    net = tiny_model(transform, dropout=0.5, batchnorm=True)
    net.train()
    figures = evaluate(net, dev)
    net.eval()  # the oracle: dropout off, batchnorm on its running statistics
    with torch.no_grad():
        logits = net(torch.from_numpy(dev[0]).float()).double()
    y = torch.from_numpy(dev[1])
    assert set(figures) == {"loss", "accuracy"}
    assert figures["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert figures["accuracy"] == (logits.argmax(dim=1) == y).double().mean().item()
    assert evaluate(net, dev) == figures  # deterministic: no dropout noise


@pytest.mark.parametrize(
    ("monitor", "values", "stopped_at", "best_epoch"),
    [
        ("dev_loss", [1.0, 0.8, 0.9, 0.85, 0.7], 4, 2),  # lower is better
        ("dev_accuracy", [0.5, 0.7, 0.7, 0.6, 0.9], 4, 2),  # a tie is no improvement
        ("dev_accuracy", [0.5, 0.7, 0.6, 0.8, 0.75], None, 4),  # improving in time resets it
    ],
)
def test_early_stopping_stops_once_patience_epochs_bring_no_strict_improvement(
    data, monitor, values, stopped_at, best_epoch
):
    _, _, transform = data
    net = tiny_model(transform)
    params = TrainParams(early_stopping=monitor, patience=2)
    run, stop = RunState(), None
    for epoch, value in enumerate(values, start=1):
        with torch.no_grad():
            net.head.bias.fill_(epoch)  # tells the epochs' weights apart
        if track_best(net, run, {"epoch": epoch, monitor: value}, params):
            stop = epoch
            break  # as fit does
    assert stop == stopped_at
    assert run.best_epoch == best_epoch and run.best == values[best_epoch - 1]
    assert torch.equal(run.best_weights["head.bias"], torch.full((10,), float(best_epoch)))


@pytest.mark.parametrize("monitor", ["dev_loss", "dev_accuracy"])
def test_early_stopping_ends_patience_epochs_after_the_best_and_restores_its_weights(data, monitor):
    train, dev, transform = data
    # A far too high lr: dev figures stop improving after a few epochs.
    params = TrainParams(**{**FAST, "epochs": 30, "lr": 0.05}, early_stopping=monitor, patience=2)
    net = tiny_model(transform)
    history = fit(net, train, dev, params)
    values = [row[monitor] for row in history]
    best = values.index(min(values) if monitor == "dev_loss" else max(values)) + 1
    assert len(history) == min(params.epochs, best + params.patience)
    assert len(history) < params.epochs  # this run does stop early
    assert evaluate(net, dev)["loss"] == pytest.approx(history[best - 1]["dev_loss"], rel=1e-6)


def steps_taken(net, train, params: TrainParams, seed: int, n: int):
    """Optimizer, scheduler and shuffle generator after n training steps, as fit builds them."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(net.parameters(), params)
    scheduler = make_scheduler(optimizer, params, 5, params.epochs)
    x, y = torch.from_numpy(train[0][:40]).float(), torch.from_numpy(train[1][:40])
    for _ in range(n):
        optimizer.zero_grad()
        data_loss(net(x), y, params).backward()
        optimizer.step()
        scheduler.step()
        torch.randperm(10, generator=gen)
    return optimizer, scheduler, gen


def test_the_resume_file_round_trips_weights_optimizer_schedule_rngs_and_progress(data, tmp_path):
    train, _, transform = data
    params = TrainParams(**{**FAST, "optimizer": "adamw", "schedule": "one_cycle"})
    net = tiny_model(transform, batchnorm=True)
    optimizer, scheduler, gen = steps_taken(net, train, params, seed=3, n=4)
    run = RunState(epoch=2, history=[{"epoch": 1}, {"epoch": 2}], best=0.5, best_epoch=1,
                   best_weights={k: v.clone() for k, v in net.state_dict().items()})  # fmt: skip
    config = run_config(net, params, params.epochs, seed=3)
    torch.manual_seed(11)
    save_state(tmp_path / "state.pt", config, net, optimizer, scheduler, gen, run)
    expected_draws = (torch.rand(3), torch.rand(3, generator=gen))

    fresh = tiny_model(transform, seed=9, batchnorm=True)
    optimizer2, scheduler2, gen2 = steps_taken(fresh, train, params, seed=5, n=1)
    torch.manual_seed(12)
    loaded = load_state(tmp_path / "state.pt", config, fresh, optimizer2, scheduler2, gen2)
    for key, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert scheduler2.state_dict() == scheduler.state_dict()
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    saved_moments = optimizer.state_dict()["state"].values()
    for saved, restored in zip(
        saved_moments, optimizer2.state_dict()["state"].values(), strict=True
    ):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(saved[name], restored[name]), name
    assert torch.equal(torch.rand(3), expected_draws[0])  # the global RNG where it was saved
    assert torch.equal(torch.rand(3, generator=gen2), expected_draws[1])  # and the shuffle's
    assert (loaded.epoch, loaded.history, loaded.best, loaded.best_epoch) == (
        2,
        run.history,
        0.5,
        1,
    )
    for key, value in run.best_weights.items():
        assert torch.equal(loaded.best_weights[key], value), key


def test_resuming_a_finished_run_trains_no_further_and_a_fresh_run_ignores_an_old_file(
    data, tmp_path
):
    train, dev, transform = data
    state, params = tmp_path / "state.pt", TrainParams(**FAST)
    finished = tiny_model(transform)
    history = fit(finished, train, dev, params, state_path=state)
    again = tiny_model(transform, seed=8)
    assert fit(again, train, dev, params, state_path=state, resume=True) == history
    for key, value in finished.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    # Without --resume the file is overwritten by a run from scratch, like one without a file.
    alone = fit(tiny_model(transform, seed=8), train, dev, params)
    assert fit(tiny_model(transform, seed=8), train, dev, params, state_path=state) == alone


def float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's float tensors (weights, BN statistics), by name."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_the_weight_average_ends_the_run_as_the_ema_of_the_weights_after_every_step(data):
    train, dev, transform = data
    decay, plain = 0.9, TrainParams(**{**FAST, "epochs": 2})
    steps: list[dict[str, torch.Tensor]] = []
    net = tiny_model(transform, batchnorm=True)
    hook = register_optimizer_step_post_hook(lambda *_: steps.append(float_state(net)))
    try:
        fit(net, train, dev, plain)
    finally:
        hook.remove()
    expected = steps[0]
    for state in steps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * v for k, v in state.items()}

    averaged = tiny_model(transform, batchnorm=True)
    history = fit(averaged, train, dev, TrainParams(**{**FAST, "epochs": 2, "ema": decay}))
    result = float_state(averaged)
    assert len(steps) > 2 and result.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(result[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(result["head.weight"], steps[-1]["head.weight"])  # not the last step
    assert history[-1]["dev_accuracy"] == evaluate(averaged, dev)["accuracy"]


def test_a_resumed_run_restores_its_weight_average(data, tmp_path):
    train, dev, transform = data
    state, params = tmp_path / "state.pt", TrainParams(**{**FAST, "ema": 0.9})
    finished = tiny_model(transform, batchnorm=True)
    history = fit(finished, train, dev, params, state_path=state)
    again = tiny_model(transform, seed=8, batchnorm=True)
    assert fit(again, train, dev, params, state_path=state, resume=True) == history
    for key, value in finished.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_the_weight_average_is_named_in_the_run_config_only_when_on(data):
    _, _, transform = data
    net = tiny_model(transform)
    assert '"ema"' not in run_config(net, TrainParams(**FAST), 3, seed=0)
    assert '"ema": 0.99' in run_config(net, TrainParams(**FAST, ema=0.99), 3, seed=0)
    with pytest.raises(ParamError, match=r"train\.ema must be in \[0, 1\)"):
        TrainParams(ema=1.0)
