"""Structured pruning with torch-pruning's DepGraph, then a short fine-tune.

    pruned = compress(model, PruneConfig(ratio=0.5), data=family.task_data(model, ds))

torch-pruning finds the coupled channels (a Linear's outputs and the next layer's inputs)
by tracing. Couplings it cannot see, such as the two-tower's dot product tying dimension d of
the user table to dimension d of the item table, come from the model family as
``customized_pruners`` and an ``Importance`` — torch-pruning's own extension points.
"""
from __future__ import annotations

import copy

import torch

from recdeploy.compress.api import MissingDataError, TaskData, register_method
from recdeploy.compress.config import CompressionConfigError, PruneConfig
from recdeploy.compress.families import family_of

DEFAULT_FINETUNE_LR = 0.01   # the fine-tune's lr when neither the config nor the family gives one


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def torch_pruning_importance(kind: str):
    import torch_pruning as tp
    return tp.importance.TaylorImportance() if kind == "taylor" else tp.importance.MagnitudeImportance(p=2)


@register_method(PruneConfig)
def prune(model: torch.nn.Module, config: PruneConfig, data: TaskData | None = None) -> torch.nn.Module:
    """A pruned (and, with data, fine-tuned) copy; the input model is left as it was."""
    import torch_pruning as tp

    family = family_of(model)
    if config.importance == "taylor" and (data is None or data.loss is None):
        raise MissingDataError("Taylor importance needs gradients on real data: pass data= "
                               "(family.task_data(model, ds))")
    if config.finetune_epochs and (data is None or data.finetune is None):
        raise MissingDataError(f"finetune_epochs={config.finetune_epochs} needs data= to train on; "
                               "pass it or set finetune_epochs=0")
    if config.distill and not (data is not None and data.distills):
        raise CompressionConfigError(f"distillation is not supported for {type(model).__name__}'s "
                                     "fine-tune; use prune without -kd")
    teacher = model
    model = copy.deepcopy(model).train()
    spec = family.prune_spec(model, config.importance)
    importance = spec.importance or torch_pruning_importance(config.importance)
    kwargs = {"root_module_types": spec.root_module_types} if spec.root_module_types else {}
    if spec.unwrapped_parameters:
        kwargs["unwrapped_parameters"] = spec.unwrapped_parameters
    pruner = tp.pruner.MetaPruner(model, spec.example_inputs, importance=importance,
                                  pruning_ratio=config.ratio, ignored_layers=spec.ignored_layers,
                                  customized_pruners=spec.customized_pruners, **kwargs)
    groups = list(pruner.DG.get_all_groups(ignored_layers=spec.ignored_layers,
                                           root_module_types=pruner.root_module_types))
    if not groups:
        raise CompressionConfigError(f"{type(model).__name__} has nothing torch-pruning can prune")
    before = count_parameters(model)
    if config.importance == "taylor":
        assert data is not None and data.loss is not None  # checked above
        model.zero_grad()
        data.loss(model).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    if count_parameters(model) >= before:
        raise CompressionConfigError(f"ratio {config.ratio} removed nothing from "
                                     f"{type(model).__name__} (too few channels to prune)")
    if config.finetune_epochs:
        assert data is not None and data.finetune is not None  # checked above
        lr = config.finetune_lr or data.train_lr or DEFAULT_FINETUNE_LR
        extra = {"teacher": teacher, "distill": config.distill} if config.distill else {}
        model = data.finetune(model, config.finetune_epochs, lr, config.seed, **extra)
    return model.eval()
