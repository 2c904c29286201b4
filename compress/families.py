"""Model families: what compression needs to know about one kind of model.

    @register_family
    class NeuMFFamily(ModelFamily):
        name = "neumf"; model_types = (NeuMF,)
        ...

A family says how to build the served module, which requests are real, how quality is
measured (its task's own protocol), how pruning groups couple (customized torch-pruning
pruners for layers DepGraph cannot trace, e.g. a dot product coupling two tables), how to
fine-tune. Serving a variant is export's job (``recdeploy export --variants``).
Models with ordinary Linear/MLP layers need only the defaults for pruning.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recdeploy.compress.api import TaskData
from recdeploy.compress.config import CompressionConfigError


class UnknownFamilyError(CompressionConfigError):
    pass


@dataclass
class PruneSpec:
    """Arguments for torch-pruning's MetaPruner that this family's models need."""
    example_inputs: object
    customized_pruners: dict = field(default_factory=dict)
    root_module_types: list | None = None     # None: torch-pruning's default (conv, linear, lstm)
    ignored_layers: list = field(default_factory=list)
    importance: object | None = None          # a tp.importance.Importance; None: torch-pruning's own
    # (parameter, pruned dim) for parameters of modules torch-pruning does not know (EmbeddingBag)
    unwrapped_parameters: list = field(default_factory=list)


class ModelFamily:
    name = ""
    model_types: tuple[type, ...] = ()
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    primary_metric = ""          # the key of evaluate()'s dict the quality budget applies to

    def served_module(self, model):
        """The module exported to ONNX (e.g. the scorer with a frozen item catalogue)."""
        raise NotImplementedError(f"{self.name}: no served module")

    def task_data(self, model, ds, n_requests: int = 256, seed: int = 0, weight_decay: float = ...,
                  batch_size: int = ..., task: str = "", lr: float | None = None) -> TaskData:
        """TaskData (real requests, fine-tune, loss, evaluate) for this model on ds, under the
        run's own protocol: ``task``, ``seed`` and the training ``lr`` come from its card.
        ``weight_decay`` and ``batch_size`` are the fine-tune's; each family has its own defaults."""
        raise NotImplementedError(f"{self.name}: no task data")

    def prune_spec(self, model, importance: str) -> PruneSpec:
        raise CompressionConfigError(f"model family {self.name!r} does not support pruning yet")

    def rowwise_module(self, model, bits: int):
        raise CompressionConfigError(f"model family {self.name!r} has no row-wise quantized tables")

    def example_requests(self, ds, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        raise NotImplementedError(f"{self.name}: no example requests")


FAMILIES: dict[str, ModelFamily] = {}


def register_family(cls: type[ModelFamily]) -> type[ModelFamily]:
    if cls.name in FAMILIES:
        raise ValueError(f"model family {cls.name!r} registered twice")
    FAMILIES[cls.name] = cls()
    return cls


def _load_families() -> None:
    from recdeploy.compress import criteo_mlp, dcn_v2, dcn_v2_context, two_tower  # noqa: F401


def family_named(name: str) -> ModelFamily:
    _load_families()
    if name not in FAMILIES:
        raise UnknownFamilyError(f"no compression support for model {name!r}; supported: "
                                 f"{', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def family_of(model) -> ModelFamily:
    _load_families()
    for family in FAMILIES.values():
        if isinstance(model, family.model_types):
            return family
    raise UnknownFamilyError(f"no compression support for {type(model).__name__}; supported: "
                             f"{', '.join(t.__name__ for f in FAMILIES.values() for t in f.model_types)}")
