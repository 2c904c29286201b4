"""Training protocols: ``@register_task("name")`` on ``run(config, ds, progress) -> TrainResult``.

A task owns its split, loss, metrics and baseline, so each model family is evaluated the way
its literature does (leave-one-out full ranking, random 8:1:1, RMSE, AUC); the epochs run in
the shared loop (``recdeploy.train.loop.fit``). Every module in this package is imported on
first use.

Callers outside a task (compress's model families) reach a protocol through its public
object, never through the task's helpers:

    proto = protocol("retrieval_random", ds, seed=run_seed)   # the run's own split
    proto.evaluate(score, "test")                             # score: the task's score function
    proto.finetune(model, epochs=3, lr=1e-3)                  # its objective, in the shared loop
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import numpy as np
import torch

from recdeploy.train.config import ClosedFormConfig
from recdeploy.train.loop import EarlyStopping, fit, shuffled_batches  # noqa: F401 (EarlyStopping: re-exported)
from recdeploy.train.models import build_model

TASKS: dict[str, Callable] = {}
PROTOCOLS: dict[str, Callable] = {}


class UnknownTaskError(ValueError):
    pass


class FineTuneError(ValueError):
    """A fine-tune asked for something its task's objective does not have."""


class UnknownPartError(ValueError):
    pass


def check_part(part: str, parts: tuple[str, ...] = ("valid", "test")) -> str:
    """part, if it names one of the protocol's evaluation parts."""
    if part not in parts:
        raise UnknownPartError(f"part must be one of {', '.join(parts)}, got {part!r}")
    return part


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
        return {"model": config.model, "task": config.resolved_task, "dataset": ds.name,
                "dataset_fingerprint": ds.fingerprint(),
                "n_users": ds.n_users, "n_items": ds.n_items, "model_args": self.model_args,
                **self.protocol, "metrics": self.metrics, "baselines": self.baselines,
                "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "train_seconds": round(self.seconds, 1), **self.extra}


class TaskProtocol:
    """One task's split, objective and metrics as a public object.

    A subclass sets ``task``, ``primary_metric`` (the key ``evaluate``'s metrics report it
    under) and implements ``n_train`` (training rows), ``batch_loss(model, batch)`` (the
    objective on a batch of ``finetune_batches``), ``validation_metric(model)`` and
    ``evaluate(score, part)`` (its score function is the task's: documented on the subclass).
    """
    task = ""
    primary_metric = ""
    higher_is_better = True
    distills = False              # batch_loss(..., teacher=, distill=) is supported

    @property
    def n_train(self) -> int:
        raise NotImplementedError

    def batch_loss(self, model, batch, teacher=None, distill: float = 0.0):
        raise NotImplementedError

    def validation_metric(self, model) -> float:
        raise NotImplementedError

    def evaluate(self, score, part: str = "test"):
        raise NotImplementedError

    def finetune_batches(self, batch_size: int):
        """rng -> one epoch's batches for ``batch_loss``: the training rows, shuffled."""
        return shuffled_batches(self.n_train, batch_size)

    def finetune(self, model, *, epochs: int, lr: float, seed: int = 0, weight_decay: float = 0.0,
                 batch_size: int = 1024, patience: int | None = None, teacher=None,
                 distill: float = 0.0):
        """Continue training ``model`` on the task's objective (Adam), keeping the best
        validation epoch; the model as given is epoch 0, so it never comes back worse on
        validation. patience None: run every epoch. With a teacher, distill weighs matching
        its predictions against the labels (where ``distills``)."""
        if distill and not self.distills:
            raise FineTuneError(f"the {self.task} fine-tune cannot distill; use distill=0")
        if distill and teacher is None:
            raise FineTuneError("distill > 0 needs the teacher model")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        fit(model, optimizer, rng, epochs=epochs, batches=self.finetune_batches(batch_size),
            batch_loss=lambda batch: self.batch_loss(model, batch, teacher, distill),
            validate=self.validation_metric, patience=patience,
            higher_is_better=self.higher_is_better, validate_start=True)
        return model.eval()


def register_task(name: str):
    def decorator(run):
        if name in TASKS:
            raise ValueError(f"task {name!r} registered twice")
        TASKS[name] = run
        return run
    return decorator


def register_protocol(name: str):
    """On ``build(ds, seed) -> TaskProtocol``: the task's public protocol object."""
    def decorator(build):
        if name in PROTOCOLS:
            raise ValueError(f"protocol {name!r} registered twice")
        PROTOCOLS[name] = build
        return build
    return decorator


def protocol(task: str, ds, seed: int = 0) -> TaskProtocol:
    """The task's protocol on ds; seed: the run's, which draws a random split the same."""
    if task not in PROTOCOLS:
        raise UnknownTaskError(f"task {task!r} has no public protocol; tasks with one: "
                               f"{', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[task](ds, seed)


def is_closed_form(config) -> bool:
    """A model fitted once in closed form (neighbourhood models), not by epochs."""
    return isinstance(config.options, ClosedFormConfig)


class ClosedFormModel(Protocol):
    """What a model whose settings are a ClosedFormConfig provides besides nn.Module's."""
    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, options) -> object: ...
    def model_args(self) -> dict: ...


def fit_closed_form(config, ds, rows: np.ndarray) -> tuple[torch.nn.Module, dict]:
    """Build the model empty and fit it on ds's interaction ``rows``; -> (model, model_args)."""
    model = build_model(config.model, n_users=ds.n_users, n_items=ds.n_items)
    fitted = cast(ClosedFormModel, model)
    fitted.fit(ds.users[rows], ds.items[rows], ds.ratings[rows], config.options)
    return model.eval(), fitted.model_args()


def run_task(config, ds, progress: bool = True) -> TrainResult:
    task = config.resolved_task
    if task not in TASKS:
        raise UnknownTaskError(f"model {config.model!r} needs task {task!r}; known: {sorted(TASKS)}")
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    result = TASKS[task](config, ds, progress)
    return result if result.seconds else replace(result, seconds=time.perf_counter() - started)


for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
