"""The training loop every task and every fine-tune runs: epochs, early stopping on a
validation metric with the best weights restored, a progress bar, an optional per-step
learning-rate schedule.

    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    fitted = fit(model, optimizer, rng, epochs=40,
                 batches=shuffled_batches(len(users), 1024),              # rng -> batches of rows
                 batch_loss=lambda rows: F.cross_entropy(model.score_all(users[rows]), items[rows]),
                 validate=lambda m: valid_ndcg(m), patience=4)            # model -> metric
    fitted.best_epoch, fitted.best_metric                                 # the model holds that epoch

A task keeps its split, loss, metrics and baselines and hands the loop three functions: the
batches of one epoch (drawn from ``rng``, so the order is seeded), the loss of one batch, and
the validation metric of the model. Everything else about epochs is here, once.

Under ``recdeploy train --nproc N`` (a process group is up) the same loop runs on every rank:
each takes its share of every global batch, gradients are all-reduced before each step, the
epoch loss is summed over ranks, rank 0 validates and every rank takes its decision (see
train/distributed.py for why the steps equal the one-process run's).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recdeploy.train.config import LR_SCHEDULES, ConfigError
from recdeploy.train.distributed import broadcast_model, current, from_main, shard, sum_over_ranks, sync_gradients


class EarlyStopping:
    """Keeps a copy of the weights of the best validation epoch; says stop after ``patience``
    epochs without improvement (``None``: never stop early, still keep the best)."""

    def __init__(self, patience: int | None, higher_is_better: bool = True):
        self.patience, self.sign = patience, 1.0 if higher_is_better else -1.0
        self.best: float | None = None
        self.best_state: dict[str, Any] | None = None
        self.best_epoch, self.stale = 0, 0

    def update(self, model: torch.nn.Module, metric: float, epoch: int) -> bool:
        """Record one epoch's validation metric; True when training should stop."""
        if self.best is None or self.sign * metric > self.sign * self.best:
            self.best, self.best_epoch, self.stale = metric, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.best_state is None:
            raise RuntimeError("no epoch was validated: nothing to restore")
        model.load_state_dict(self.best_state)
        return model.eval()


@dataclass(frozen=True)
class FitResult:
    epochs_run: int                  # the last epoch trained
    best_epoch: int                  # the epoch whose weights the model holds (0: as given)
    best_metric: float | None        # its validation metric; None without validation


def shuffled_batches(n_rows: int, batch_size: int) -> Callable[[np.random.Generator], list[torch.Tensor]]:
    """Each epoch: the rows 0..n_rows-1 in a fresh seeded order, cut into batches."""
    def draw(rng: np.random.Generator) -> list[torch.Tensor]:
        return list(torch.from_numpy(rng.permutation(n_rows)).split(batch_size))
    return draw


def lr_schedule(optimizer, kind: str, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: constant, or cosine from the set lr down to 0 at total_steps."""
    if kind not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {kind!r}; valid: {', '.join(LR_SCHEDULES)}")
    if kind == "cosine":
        def factor(step):
            return (0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps))))
    else:
        def factor(step):
            return (1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(model: torch.nn.Module, optimizer, batches: Sequence, batch_loss: Callable,
                schedule=None) -> float:
    """One pass: per batch, loss, backward, step (and the schedule's step). batch_loss(batch)
    returns the loss, or (loss, examples it averages over) when that is not len(batch).
    Returns the mean loss per example (over every rank's examples in a process group)."""
    model.train()
    group = current()
    total, count = 0.0, 0
    for batch in batches:
        part = shard(batch, group)
        optimizer.zero_grad(set_to_none=True)
        examples = 0
        if not group.parallel or len(part):  # a last batch smaller than the ranks leaves some none
            loss = batch_loss(part)
            loss, examples = loss if isinstance(loss, tuple) else (loss, len(part))
            loss.backward()
            total += loss.item() * examples
        sync_gradients(model, examples, group)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        count += examples
    total_all, count_all = sum_over_ranks([total, float(count)], group)
    return total_all / max(1.0, count_all)


def fit(model: torch.nn.Module, optimizer, rng: np.random.Generator, *, epochs: int,
        batches: Callable[[np.random.Generator], Sequence], batch_loss: Callable,
        validate: Callable[[torch.nn.Module], float] | None = None, patience: int | None = None,
        higher_is_better: bool = True, validate_start: bool = False, schedule: str = "constant",
        progress: bool = False, desc: str = "train", metric_name: str = "val") -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs; afterwards it holds the best validation
    epoch's weights, in eval mode.

    batches(rng) -> the batches of one epoch; batch_loss(batch) -> loss (see ``train_epoch``);
    validate(model) -> the metric early stopping watches (called in eval mode after every
    epoch; None: no validation, the last epoch is kept, as a refit with a known epoch count
    wants). validate_start: the model as given counts as epoch 0, so a fine-tune (or the joint
    phase after a pretraining) never ends worse on validation than it started. schedule:
    "cosine" anneals the lr per step to 0 at the last step of ``epochs``.
    """
    group = current()
    broadcast_model(model, group)

    def validated(model: torch.nn.Module) -> float:
        assert validate is not None
        return from_main(validate(model) if group.is_main else None, group)

    stopper = EarlyStopping(patience, higher_is_better) if validate is not None else None
    if stopper is not None and validate is not None and validate_start:
        model.eval()
        stopper.update(model, validated(model), 0)
    scheduler, epoch = None, 0
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress or not group.is_main, unit="epoch")
    for epoch in bar:
        epoch_batches = batches(rng)
        if scheduler is None and schedule != "constant":
            scheduler = lr_schedule(optimizer, schedule, epochs * len(epoch_batches))
        loss = train_epoch(model, optimizer, epoch_batches, batch_loss, scheduler)
        model.eval()
        if stopper is None or validate is None:
            bar.set_postfix(loss=f"{loss:.4f}")
            continue
        metric = validated(model)
        bar.set_postfix({"loss": f"{loss:.4f}", metric_name: f"{metric:.4f}"})
        if stopper.update(model, metric, epoch):
            break
    if stopper is None:
        broadcast_model(model, group)
        return FitResult(epochs_run=epoch, best_epoch=epoch, best_metric=None)
    stopper.restore(model)
    broadcast_model(model, group)
    return FitResult(epochs_run=epoch, best_epoch=stopper.best_epoch, best_metric=stopper.best)
