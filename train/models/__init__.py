"""The model registry: ``@register_model("name")`` on a builder, ``build_model(name, ...)``.

    from recdeploy.train.models import build_model, MODELS
    model = build_model("two_tower", n_users=943, n_items=1682, dim=64)
"""
from __future__ import annotations

from typing import Callable

import torch

MODELS: dict[str, Callable[..., torch.nn.Module]] = {}


class UnknownModelError(ValueError):
    pass


def register_model(name: str):
    def decorator(builder):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = builder
        return builder
    return decorator


def build_model(name: str, **kwargs) -> torch.nn.Module:
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


# importing the modules registers them
from recdeploy.train.models import two_tower  # noqa: E402,F401
