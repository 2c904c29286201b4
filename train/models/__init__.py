"""The model registry: ``@register_model("name", task="...")`` on a builder.

    from recdeploy.train.models import build_model, MODELS
    model = build_model("two_tower", n_users=943, n_items=1682, dim=64)

Every module in this package is imported on first use, so a new model is one new file.
``task`` names the training/evaluation protocol in ``recdeploy.train.tasks`` that trains it;
``config`` is the model's own sub-config (a ``ModelConfig`` dataclass: its settings beyond
the fields every model shares, e.g. SASRec's ``max_len``); ``defaults`` are the model's own
training hyper-parameters (field -> value, common or its own), used by
``TrainConfig.for_model`` wherever the user gave no value, so every model trains well with
no flags (a SASRec wants a smaller learning rate than a matrix factorization).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from recdeploy.train.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., torch.nn.Module]
    task: str
    defaults: tuple[tuple[str, object], ...] = ()
    also: tuple[str, ...] = ()        # other tasks (protocols) the model can train under
    config: type[ModelConfig] = ModelConfig

    @property
    def tasks(self) -> tuple[str, ...]:
        return (self.task, *self.also)

    @property
    def default_config(self) -> dict:
        return dict(self.defaults)


MODELS: dict[str, ModelEntry] = {}


class UnknownModelError(ValueError):
    pass


def register_model(name: str, task: str, defaults: dict | None = None, also: tuple[str, ...] = (),
                   config: type[ModelConfig] = ModelConfig):
    common = {f.name for f in fields(TrainConfig)} - {"options", "model"}
    stray = set(defaults or {}) - common - set(config.names())
    if stray:
        raise ValueError(f"model {name!r}: defaults {sorted(stray)} are neither common fields nor "
                         f"settings of {config.__name__}")

    def decorator(builder):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelEntry(name, builder, task, tuple(sorted((defaults or {}).items())),
                                  tuple(also), config)
        return builder
    return decorator


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, **kwargs) -> torch.nn.Module:
    return model_entry(name).build(**kwargs)


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_all()
