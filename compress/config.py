"""Compression configs: frozen dataclasses that validate themselves and round-trip to JSON.

    from recdeploy.compress.config import preset, PruneConfig
    config = preset("prune-50")                  # PruneConfig(ratio=0.5, ...)
    config = PruneConfig(ratio=0.75, importance="taylor")
    same = config_from_json(config.to_json())

A variant is a chain of configs applied in order, written ``prune-50+rowwise-int8``
(see ``parse_variant``). Model-side methods (pruning, row-wise tables) come before
ONNX-side ones (dynamic/static INT8, FP16).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


class CompressionConfigError(ValueError):
    """A config that cannot work (the message says what is valid)."""


class UnknownMethodError(CompressionConfigError):
    pass


def _check_choice(name: str, value, valid: tuple) -> None:
    if value not in valid:
        raise CompressionConfigError(f"{name} must be one of {', '.join(map(str, valid))}; got {value!r}")


@dataclass(frozen=True)
class CompressionConfig:
    """Base of every config; ``method`` is the JSON tag that selects the class."""
    method = ""          # class attribute, not a field
    stage = "model"      # "model": acts on the torch model; "onnx": acts on the exported file

    def to_dict(self) -> dict:
        return {"method": self.method, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class PruneConfig(CompressionConfig):
    """Structured pruning with torch-pruning (DepGraph), then a short fine-tune."""
    method = "prune"
    ratio: float = 0.5               # fraction of channels / embedding dims removed
    importance: str = "magnitude"    # "magnitude" (L2 of the group's weights) or "taylor" (|w * dL/dw|)
    # fewer epochs left a visible quality loss (docs/compression.md)
    finetune_epochs: int = 8
    # None: the run's own training lr where the family knows it (TaskData.train_lr), else
    # DEFAULT_FINETUNE_LR. A model trained at 1e-3 (ML-1M two-tower) is knocked off its optimum
    # by a fine-tune at 1e-2 in one epoch.
    finetune_lr: float | None = None
    # weight of distillation in the fine-tune: the pruned model also matches the unpruned one's
    # softmax over the catalogue (KL, temperature 1); 0: the labels only. ``prune-NN-kd``: 1.0
    # for 12 epochs, the mix that kept the quality best (docs/compression.md)
    distill: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.ratio < 1.0:
            raise CompressionConfigError(f"pruning ratio must be in (0, 1): the fraction removed; "
                                         f"got {self.ratio}")
        _check_choice("importance", self.importance, ("magnitude", "taylor"))
        if self.finetune_epochs < 0:
            raise CompressionConfigError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if not 0.0 <= self.distill <= 1.0:
            raise CompressionConfigError(f"distill is a loss weight in [0, 1], got {self.distill}")
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise CompressionConfigError(f"finetune_lr must be > 0, got {self.finetune_lr}")


@dataclass(frozen=True)
class RowwiseConfig(CompressionConfig):
    """Embedding tables / item catalogue stored as int8 or packed int4 with a per-row scale,
    dequantized inside the exported graph (Guan et al. 2019)."""
    method = "rowwise"
    bits: int = 8

    def __post_init__(self):
        _check_choice("bits", self.bits, (8, 4))


@dataclass(frozen=True)
class DynamicInt8Config(CompressionConfig):
    """ONNX Runtime ``quantize_dynamic``: int8 weights, activations quantized per call."""
    method = "int8-dynamic"
    stage = "onnx"
    per_channel: bool = False
    weight_type: str = "int8"        # "int8" or "uint8"
    # the CPU kernels for s8 activations lose precision on CPUs without VNNI; reduce_range avoids it
    reduce_range: bool = False

    def __post_init__(self):
        _check_choice("weight_type", self.weight_type, ("int8", "uint8"))


@dataclass(frozen=True)
class StaticInt8Config(CompressionConfig):
    """ONNX Runtime ``quantize_static``, calibrated on real requests.

    The default is the QDQ form TensorRT consumes: symmetric signed int8 activations and weights.
    """
    method = "int8-static"
    stage = "onnx"
    calibration_size: int = 256      # real requests (users) fed through the calibrator
    calibration_method: str = "minmax"   # "minmax", "percentile" or "entropy"
    quant_format: str = "qdq"        # "qdq" (TensorRT, ORT) or "qoperator" (ORT CPU only)
    activation_type: str = "int8"
    per_channel: bool = True

    def __post_init__(self):
        if self.calibration_size < 1:
            raise CompressionConfigError(f"calibration_size must be >= 1, got {self.calibration_size}")
        _check_choice("calibration_method", self.calibration_method, ("minmax", "percentile", "entropy"))
        _check_choice("quant_format", self.quant_format, ("qdq", "qoperator"))
        _check_choice("activation_type", self.activation_type, ("int8", "uint8"))


@dataclass(frozen=True)
class Fp16Config(CompressionConfig):
    """onnxconverter-common ``convert_float_to_float16``; inputs/outputs stay FP32 by default."""
    method = "fp16"
    stage = "onnx"
    keep_io_types: bool = True


CONFIG_TYPES: dict[str, type[CompressionConfig]] = {
    cls.method: cls for cls in (PruneConfig, RowwiseConfig, DynamicInt8Config, StaticInt8Config,
                                Fp16Config)}

PRESETS: dict[str, CompressionConfig] = {
    "prune-25": PruneConfig(ratio=0.25),
    "prune-50": PruneConfig(ratio=0.5),
    "prune-75": PruneConfig(ratio=0.75),
    "prune-50-taylor": PruneConfig(ratio=0.5, importance="taylor"),
    "rowwise-int8": RowwiseConfig(bits=8),
    "rowwise-int4": RowwiseConfig(bits=4),
    "int8-dynamic": DynamicInt8Config(),
    "cpu-int8": DynamicInt8Config(),
    "int8-static": StaticInt8Config(),
    "int8-static-cpu": StaticInt8Config(activation_type="uint8", per_channel=False),
    "fp16": Fp16Config(),
    "gpu-fp16": Fp16Config(),
}


def preset(name: str) -> CompressionConfig:
    """A named preset; ``prune-NN`` (any NN) prunes NN % of the channels, ``prune-NN-kd`` also
    distills the unpruned model into the pruned one while fine-tuning."""
    import re

    ratio = re.fullmatch(r"prune-(\d+)(-kd)?", name)
    if name not in PRESETS and ratio:
        if ratio.group(2):
            return PruneConfig(ratio=int(ratio.group(1)) / 100, distill=1.0, finetune_epochs=12)
        return PruneConfig(ratio=int(ratio.group(1)) / 100)
    if name not in PRESETS:
        raise UnknownMethodError(f"unknown compression method {name!r}; valid: {', '.join(PRESETS)} "
                                 "(chain them with '+', e.g. prune-50+rowwise-int8)")
    return PRESETS[name]


def config_from_dict(data: dict) -> CompressionConfig:
    data = dict(data)
    method = data.pop("method", None)
    if method not in CONFIG_TYPES:
        raise UnknownMethodError(f"unknown compression method {method!r} in config; "
                                 f"valid: {', '.join(CONFIG_TYPES)}")
    cls = CONFIG_TYPES[method]
    known = {f.name for f in fields(cls)}
    if set(data) - known:
        raise CompressionConfigError(f"unknown keys {sorted(set(data) - known)} for {method!r}; "
                                     f"valid: {sorted(known)}")
    return cls(**data)


def config_from_json(text: str) -> CompressionConfig:
    return config_from_dict(json.loads(text))


@dataclass(frozen=True)
class Variant:
    """A named chain of configs: model-stage configs first, then ONNX-stage ones."""
    name: str
    configs: tuple[CompressionConfig, ...]

    def __post_init__(self):
        if not self.configs:
            raise CompressionConfigError(f"variant {self.name!r} has no compression method")
        stages = [c.stage for c in self.configs]
        if stages != sorted(stages, key=("model", "onnx").index):
            raise CompressionConfigError(
                f"variant {self.name!r}: model-side methods (prune, rowwise) must come before "
                f"ONNX-side ones (int8-dynamic, int8-static, fp16)")
        if stages.count("onnx") > 1:
            raise CompressionConfigError(f"variant {self.name!r} applies more than one ONNX-side "
                                         "method; they do not stack")
        if sum(isinstance(c, RowwiseConfig) for c in self.configs) > 1:
            raise CompressionConfigError(f"variant {self.name!r} quantizes the tables twice")
        model_side = [c for c in self.configs if c.stage == "model"]
        if any(isinstance(c, RowwiseConfig) for c in model_side[:-1]):
            raise CompressionConfigError(f"variant {self.name!r}: rowwise must be the last "
                                         "model-side method (it produces the served scorer)")
        if any(isinstance(c, RowwiseConfig) for c in self.configs) and stages.count("onnx"):
            raise CompressionConfigError(f"variant {self.name!r}: row-wise tables are already "
                                         "quantized; ONNX-side quantization on top is not supported")

    @property
    def slug(self) -> str:
        """The Triton-safe suffix for scorer_<slug> / recommend_<slug>."""
        return "".join(ch if ch.isalnum() else "_" for ch in self.name).strip("_").lower()

    def to_dict(self) -> dict:
        return {"name": self.name, "configs": [c.to_dict() for c in self.configs]}


def parse_variant(spec: str) -> Variant:
    """'prune-50+rowwise-int8' -> Variant of the two presets, in that order."""
    names = [part.strip() for part in spec.split("+")]
    if not all(names):
        raise CompressionConfigError(f"empty method in {spec!r}")
    return Variant(name=spec.strip(), configs=tuple(preset(n) for n in names))


def parse_methods(text: str) -> list[Variant]:
    """'prune-50,int8-dynamic,prune-50+rowwise-int8' -> three variants."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise CompressionConfigError(f"no compression method in {text!r}; valid: {', '.join(PRESETS)}")
    return [parse_variant(s) for s in specs]
