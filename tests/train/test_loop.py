"""The shared training loop: epochs, early stopping, best weights, schedule, batches."""
import numpy as np
import pytest
import torch

from recdeploy.train.config import ConfigError
from recdeploy.train.loop import fit, lr_schedule, shuffled_batches, train_epoch


class Scripted:
    """A one-weight model whose 'validation metric' is read off a script, epoch by epoch."""

    def __init__(self, metrics):
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.metrics, self.calls = list(metrics), 0
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def batch_loss(self, rows):
        return (self.model(torch.ones(len(rows), 1)) - 10.0).pow(2).mean()

    def validate(self, model):
        self.calls += 1
        return self.metrics[self.calls - 1]


def weight(model) -> float:
    return model.weight.item()


def test_stops_after_patience_and_restores_the_best_epoch():
    run = Scripted([0.1, 0.3, 0.2, 0.25, 0.9])
    entering = []                                   # the weight entering each epoch

    def batches(rng):
        entering.append(weight(run.model))
        return [torch.arange(4)]

    fitted = fit(run.model, run.optimizer, np.random.default_rng(0), epochs=5, batches=batches,
                 batch_loss=run.batch_loss, validate=run.validate, patience=2)
    # epochs 3 and 4 did not beat epoch 2: stop before epoch 5; the model holds epoch 2
    assert (fitted.epochs_run, fitted.best_epoch, fitted.best_metric) == (4, 2, 0.3)
    assert run.calls == 4 and not run.model.training
    assert weight(run.model) == pytest.approx(entering[2])      # epoch 2's weights


def test_lower_is_better_and_no_patience_runs_every_epoch():
    run = Scripted([0.9, 0.8, 0.85, 0.95, 0.99])
    fitted = fit(run.model, run.optimizer, np.random.default_rng(0), epochs=5,
                 batches=lambda rng: [torch.arange(4)], batch_loss=run.batch_loss,
                 validate=run.validate, patience=None, higher_is_better=False)
    assert (fitted.epochs_run, fitted.best_epoch, fitted.best_metric) == (5, 2, 0.8)


def test_the_model_as_given_counts_as_epoch_zero():
    run = Scripted([0.5, 0.4, 0.3])                     # the start beats every trained epoch
    with torch.no_grad():
        run.model.weight.fill_(1.5)
    fitted = fit(run.model, run.optimizer, np.random.default_rng(0), epochs=2,
                 batches=lambda rng: [torch.arange(4)], batch_loss=run.batch_loss,
                 validate=run.validate, validate_start=True)
    assert (fitted.epochs_run, fitted.best_epoch) == (2, 0) and weight(run.model) == 1.5


def test_without_validation_the_last_epoch_is_kept():
    run = Scripted([])
    start = weight(run.model)
    fitted = fit(run.model, run.optimizer, np.random.default_rng(0), epochs=3,
                 batches=lambda rng: [torch.arange(4)], batch_loss=run.batch_loss)
    assert (fitted.epochs_run, fitted.best_epoch, fitted.best_metric) == (3, 3, None)
    # three SGD steps on (w - 10)^2 at lr 0.1: w - 10 shrinks by 1 - 0.1 * 2 each step
    assert weight(run.model) == pytest.approx(10 + (start - 10) * 0.8 ** 3, rel=1e-5)


def test_cosine_schedule_steps_per_batch_down_to_zero_at_the_last_step():
    run = Scripted([])
    seen = []

    def loss(rows):
        seen.append(run.optimizer.param_groups[0]["lr"])
        return run.batch_loss(rows)

    fit(run.model, run.optimizer, np.random.default_rng(0), epochs=2,
        batches=shuffled_batches(10, 2), batch_loss=loss, schedule="cosine")
    assert len(seen) == 10 and seen[0] == pytest.approx(0.1)
    assert seen[5] == pytest.approx(0.05) and run.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="unknown lr_schedule 'step'; valid: constant, cosine"):
        lr_schedule(run.optimizer, "step", 10)


def test_epoch_loss_is_weighted_by_the_examples_each_batch_averages():
    model = torch.nn.Linear(1, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    losses = {0: (torch.tensor(1.0, requires_grad=True), 1), 1: (torch.tensor(4.0, requires_grad=True), 3)}
    assert train_epoch(model, optimizer, [0, 1], lambda b: losses[b]) == pytest.approx((1 + 12) / 4)


def test_shuffled_batches_are_seeded_and_cover_every_row_once():
    draw = shuffled_batches(10, 4)
    first = draw(np.random.default_rng(3))
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    assert all(torch.equal(a, b) for a, b in zip(first, draw(np.random.default_rng(3))))
