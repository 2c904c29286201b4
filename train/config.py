"""Training configuration: the fields every model uses, plus the model's own settings.

    TrainConfig.for_model("sasrec", dataset="ml-1m")             # SASRec's own lr, batch, ...
    TrainConfig.for_model("sasrec", dataset="ml-1m", max_len=50)  # an explicit value always wins
    TrainConfig(model="sasrec", max_len=50).options               # SASRecConfig(max_len=50, ...)

``TrainConfig`` holds what every model and task reads. A model's own settings (SASRec's
``max_len``, NeuMF's ``negatives``, ...) live in its sub-config: a ``ModelConfig`` dataclass
registered with the model (``@register_model(..., config=SASRecConfig)``) that validates
itself, held as ``config.options`` (and readable as ``config.max_len``). Both are given flat,
as keyword arguments and as CLI flags that mirror the field names (``--max-len 50``); a
setting the model does not have is refused, naming the ones it has.

``TrainConfig.for_model`` fills every field the caller did not give from the model's
registered defaults first, then from the dataclass defaults (the generic ones, tuned for the
matrix-factorization models). JSON nests the sub-config under ``"options"``; ``from_saved``
also reads the flat dict of every model's settings that checkpoints stored before.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    pass


class UnknownSettingError(ConfigError):
    """A key that is neither a common field nor a setting of the chosen model."""


@dataclass(frozen=True)
class ModelConfig:
    """A model's own training settings: a subclass per model adds fields and checks them in
    ``__post_init__``. A model without settings of its own uses this class itself."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class ClosedFormConfig(ModelConfig):
    """Settings of a model fitted in closed form (a neighbourhood model), not by epochs: the
    tasks build it empty, call ``model.fit(users, items, ratings, options)`` once on the
    training rows and keep ``model.model_args()``, which rebuilds it from its checkpoint."""


# the model-specific keys of the flat config every checkpoint stored before the sub-configs
FLAT_MODEL_SETTINGS = frozenset({"reg", "negatives", "loss", "pretrain_epochs", "mlp_dim",
                                 "max_len", "layers", "heads", "dropout", "output_embedding"})


@dataclass(frozen=True, init=False)
class TrainConfig:
    model: str = "two_tower"
    # the training/evaluation protocol; "" = the model's own (a model may register others,
    # e.g. two_tower also trains under retrieval_random, RecBole's general ML-1M protocol)
    task: str = ""
    dataset: str = "ml-100k"
    dim: int = 64
    epochs: int = 40
    batch_size: int = 1024
    lr: float = 0.01
    # L2 on the rows a batch touches; a full-softmax MF overfits ML-100k fast without it
    weight_decay: float = 1e-4
    # stop when the validation metric has not improved for this many epochs
    patience: int = 4
    seed: int = 0
    # learning rate over training, per step: "constant", or "cosine" (decays to 0 at the last
    # of ``epochs``; with a fixed budget of epochs it ends in a well-annealed minimum)
    lr_schedule: str = "constant"
    # "cpu" or "cuda"; only tasks that support it read it (sequential does)
    device: str = "cpu"
    # the model's own settings: an instance of the sub-config class registered with it
    options: ModelConfig = ModelConfig()

    def __init__(self, *, options: ModelConfig | dict | None = None, **settings):
        """Common fields by name; the model's own settings flat by name
        (``TrainConfig(model="sasrec", max_len=50)``), or as ``options`` (its sub-config or a
        dict of it; flat names given beside it win)."""
        common = {f.name: f.default for f in fields(self) if f.name != "options"}
        for name, default in common.items():
            object.__setattr__(self, name, settings.pop(name, default))
        model_config = self._model_config_class()
        if isinstance(options, ModelConfig) and type(options) is not model_config:
            raise ConfigError(f"model {self.model!r} takes {model_config.__name__} options, "
                              f"got {type(options).__name__}")
        own = {**(asdict(options) if isinstance(options, ModelConfig) else options or {}), **settings}
        unknown = sorted(set(own) - set(model_config.names()))
        if unknown:
            raise UnknownSettingError(self._unknown_message(unknown, model_config))
        object.__setattr__(self, "options", model_config(**own))
        self._validate()

    def _model_config_class(self) -> type[ModelConfig]:
        from recdeploy.train.models import MODELS
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; valid: {', '.join(sorted(MODELS))}")
        return MODELS[self.model].config

    def _unknown_message(self, unknown: list[str], model_config: type[ModelConfig]) -> str:
        from recdeploy.train.models import MODELS
        owners = {name: [m for m, e in sorted(MODELS.items()) if name in e.config.names()]
                  for name in unknown}
        whose = "; ".join(f"{name} is a setting of {', '.join(models)}"
                          for name, models in owners.items() if models)
        valid = sorted([f.name for f in fields(self) if f.name != "options"] + list(model_config.names()))
        return (f"unknown config keys {unknown} for model {self.model!r}"
                f"{f' ({whose})' if whose else ''}; valid: {valid}")

    def _validate(self) -> None:
        from recdeploy.train.data import dataset_names
        from recdeploy.train.models import MODELS
        if self.task and self.task not in MODELS[self.model].tasks:
            raise ConfigError(f"model {self.model!r} does not train under task {self.task!r}; "
                              f"valid: {', '.join(MODELS[self.model].tasks)}")
        if self.dataset not in dataset_names():
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid: {', '.join(dataset_names())}")
        for name in ("dim", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")

    def __getattr__(self, name: str):
        # only reached when ordinary lookup fails: a model's own setting reads through
        options = self.__dict__.get("options")
        if options is not None and name in options.names():
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__} for model {self.__dict__.get('model')!r} "
                             f"has no field {name!r}")

    @classmethod
    def for_model(cls, model: str, **given) -> TrainConfig:
        """The config for ``model``: given values, else the model's defaults, else the generic ones."""
        from recdeploy.train.models import MODELS
        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r}; valid: {', '.join(sorted(MODELS))}")
        options = given.pop("options", None)
        if options is not None:
            given = {**(asdict(options) if isinstance(options, ModelConfig) else options), **given}
        return cls(**{**MODELS[model].default_config, **given, "model": model})

    @property
    def resolved_task(self) -> str:
        from recdeploy.train.models import MODELS
        return self.task or MODELS[self.model].task

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_saved(cls, data: dict) -> TrainConfig:
        """A config as a checkpoint card stores it. Cards written before the per-model
        sub-configs hold one flat dict with every model's settings; the other models'
        settings never applied to that run and are dropped."""
        if "options" in data:
            return cls.from_dict(data)
        from recdeploy.train.models import MODELS
        model = data.get("model", cls.model)
        own = MODELS[model].config.names() if model in MODELS else ()
        return cls.from_dict({k: v for k, v in data.items()
                              if k not in FLAT_MODEL_SETTINGS or k in own})
