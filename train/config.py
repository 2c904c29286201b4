"""Training configuration: a dataclass that validates itself and round-trips to JSON.

CLI flags mirror the field names (``--dim 64`` sets ``dim``). ``TrainConfig.for_model`` fills
every field the caller did not give from the model's registered defaults first, then from
the dataclass defaults below (the generic ones, tuned for the matrix-factorization models):

    TrainConfig.for_model("sasrec", dataset="ml-1m")          # SASRec's own lr, batch, ...
    TrainConfig.for_model("sasrec", dataset="ml-1m", lr=1e-3) # an explicit value always wins
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


LOSSES = ("bce", "sampled_softmax")
LR_SCHEDULES = ("constant", "cosine")
OUTPUT_EMBEDDINGS = ("shared", "separate")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
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
    # stop when validation NDCG@10 has not improved for this many epochs
    patience: int = 4
    seed: int = 0
    # rating / retrieval_random tasks: L2 per example on the rows a batch touches (SGD-style)
    reg: float = 0.05
    # retrieval_random task, NeuMF: sampled negatives per positive for its BCE loss, or the
    # batch's shared negatives for the sampled softmax
    negatives: int = 4
    # retrieval_random task, pairwise models (NeuMF): "bce" (the paper's pointwise loss) or
    # "sampled_softmax" (softmax over the positive and ``negatives`` uniform items shared by
    # the batch); the towers always train with the exact full softmax
    loss: str = "bce"
    # retrieval_random task, NeuMF: epochs of GMF-branch pretraining on the exact softmax before
    # the joint training (the NeuMF paper pretrains its branches); early-stopped like the rest
    pretrain_epochs: int = 0
    # NeuMF: the MLP branch's embedding width (0: the same as dim); its layers run per pair
    mlp_dim: int = 0
    # learning rate over training: "constant", or "cosine" (decays to 0 at the last of
    # ``epochs``; with a fixed budget of epochs it ends in a well-annealed minimum);
    # read by the sequential task
    lr_schedule: str = "constant"
    # sequential models (sasrec): history window, transformer blocks, heads, dropout
    max_len: int = 200
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    # sasrec: score with the input item embedding ("shared", the paper's default) or with an
    # output table of its own ("separate"); see recdeploy.train.models.sasrec
    output_embedding: str = "shared"
    # "cpu" or "cuda"; only tasks that support it read it (sequential does)
    device: str = "cpu"

    def __post_init__(self):
        from recdeploy.train.data import DATASETS
        from recdeploy.train.models import MODELS
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; valid: {', '.join(sorted(MODELS))}")
        if self.task and self.task not in MODELS[self.model].tasks:
            raise ConfigError(f"model {self.model!r} does not train under task {self.task!r}; "
                              f"valid: {', '.join(MODELS[self.model].tasks)}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        for name in ("dim", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_len < 1 or self.layers < 1 or self.heads < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"need max_len, layers, heads >= 1 and 0 <= dropout < 1, got "
                              f"{self.max_len}, {self.layers}, {self.heads}, {self.dropout}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.reg < 0:
            raise ConfigError(f"reg must be >= 0, got {self.reg}")
        if self.pretrain_epochs < 0 or self.mlp_dim < 0:
            raise ConfigError(f"pretrain_epochs and mlp_dim must be >= 0, got "
                              f"{self.pretrain_epochs}, {self.mlp_dim}")
        if self.negatives < 1:
            raise ConfigError(f"negatives must be >= 1, got {self.negatives}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        if self.output_embedding not in OUTPUT_EMBEDDINGS:
            raise ConfigError(f"unknown output_embedding {self.output_embedding!r}; valid: "
                              f"{', '.join(OUTPUT_EMBEDDINGS)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")

    @classmethod
    def for_model(cls, model: str, **given) -> "TrainConfig":
        """The config for ``model``: given values, else the model's defaults, else the generic ones."""
        from recdeploy.train.models import MODELS
        if model not in MODELS:
            raise ConfigError(f"unknown model {model!r}; valid: {', '.join(sorted(MODELS))}")
        return cls.from_dict({**MODELS[model].default_config, **given, "model": model})

    @property
    def resolved_task(self) -> str:
        from recdeploy.train.models import MODELS
        return self.task or MODELS[self.model].task

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))
