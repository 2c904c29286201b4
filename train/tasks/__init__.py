"""Training protocols: ``@register_task("name")`` on ``run(config, ds, progress) -> TrainResult``.

A task owns its split, loss, early stopping, metrics and baseline, so each model family is
evaluated the way its literature does (leave-one-out full ranking, random 8:1:1, RMSE, AUC).
Every module in this package is imported on first use.
"""
from __future__ import annotations

import copy
import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

TASKS: dict[str, Callable] = {}


class UnknownTaskError(ValueError):
    pass


@dataclass(frozen=True)
class TrainResult:
    """What any task returns; ``card()`` is what the checkpoint stores beside the weights."""
    model: torch.nn.Module
    model_args: dict              # keyword arguments that rebuild the model: build_model(name, **model_args)
    metrics: dict                 # {"valid": {...}, "test": {...}}
    baselines: dict               # {"most_popular": {"test": {...}}}
    protocol: dict                # {"split": ..., "protocol": ..., "filtering": ...}
    epochs_run: int = 0
    best_epoch: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def card(self, config, ds) -> dict:
        return {"model": config.model, "task": config.resolved_task, "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(),
                "n_users": ds.n_users, "n_items": ds.n_items, "model_args": self.model_args,
                **self.protocol, "metrics": self.metrics, "baselines": self.baselines,
                "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "train_seconds": round(self.seconds, 1), **self.extra}


class EarlyStopping:
    """Keeps the weights of the best validation epoch; says stop after ``patience`` epochs
    without improvement. Every task's loop uses it, so they all stop the same way."""

    def __init__(self, patience: int, higher_is_better: bool = True):
        self.patience, self.sign = patience, 1.0 if higher_is_better else -1.0
        self.best: float | None = None
        self.best_state, self.best_epoch, self.stale = None, 0, 0

    def update(self, model: torch.nn.Module, metric: float, epoch: int) -> bool:
        """Record one epoch's validation metric; True when training should stop."""
        if self.best is None or self.sign * metric > self.sign * self.best:
            self.best, self.best_epoch, self.stale = metric, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: torch.nn.Module) -> torch.nn.Module:
        model.load_state_dict(self.best_state)
        return model.eval()


def run_epoch(model: torch.nn.Module, optimizer, n_rows: int, batch_size: int, rng,
              batch_loss) -> float:
    """One pass over n_rows in a seeded random order; batch_loss(row indices) -> loss tensor.
    Returns the mean loss per row."""
    model.train()
    order = torch.from_numpy(rng.permutation(n_rows))
    total = 0.0
    for start in range(0, n_rows, batch_size):
        batch = order[start:start + batch_size]
        loss = batch_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / n_rows


def register_task(name: str):
    def decorator(run):
        if name in TASKS:
            raise ValueError(f"task {name!r} registered twice")
        TASKS[name] = run
        return run
    return decorator


def run_task(config, ds, progress: bool = True) -> TrainResult:
    task = config.resolved_task
    if task not in TASKS:
        raise UnknownTaskError(f"model {config.model!r} needs task {task!r}; known: {sorted(TASKS)}")
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    result = TASKS[task](config, ds, progress)
    return result if result.seconds else _with_seconds(result, time.perf_counter() - started)


def _with_seconds(result: TrainResult, seconds: float) -> TrainResult:
    from dataclasses import replace
    return replace(result, seconds=seconds)


for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
