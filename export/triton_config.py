"""Triton model configs as ``model_config_pb2.ModelConfig`` protobufs, built by pure functions.

    config = build_model_config(ModelSpec(...))        # nothing touches the disk here
    check_ensemble(ensemble_spec, {spec.name: spec for spec in steps})
    text = config_text(config)                        # what repository.write_* puts on disk

Never string templates: the protobuf rejects a misspelt field, and tests parse the written
file back into a ModelConfig.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

DTYPES = {"INT32", "INT64", "FP16", "FP32", "BOOL", "BYTES", "INT8", "UINT8"}
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ConfigSpecError(ValueError):
    pass


class EnsembleWiringError(ValueError):
    pass


def validate_model_name(name: str) -> str:
    """Model names become folder names: no path separators, no '..', nothing exotic."""
    if not MODEL_NAME.match(name) or ".." in name:
        raise ConfigSpecError(f"invalid model name {name!r}: use letters, digits, '_', '.', '-' "
                              "(no path separators), starting with a letter or digit")
    return name


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str                 # Triton type without the TYPE_ prefix: INT64, FP32, ...
    dims: tuple[int, ...]      # without the batch dimension when max_batch_size > 0

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigSpecError(f"tensor {self.name!r}: unknown dtype {self.dtype!r}; valid: {sorted(DTYPES)}")
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise ConfigSpecError(f"tensor {self.name!r}: dims must be positive or -1, got {self.dims}")


@dataclass(frozen=True)
class ModelSpec:
    """One non-ensemble model. Exactly one of backend ("python") / platform ("onnxruntime_onnx")."""
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 256
    backend: str = ""
    platform: str = ""
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    dynamic_batching: bool = True
    max_queue_delay_us: int = 0
    parameters: tuple[tuple[str, str], ...] = ()
    # the file in the version folder, when not the platform's default (model.onnx, model.pt)
    default_model_filename: str = ""

    def __post_init__(self):
        validate_model_name(self.name)
        if bool(self.backend) == bool(self.platform):
            raise ConfigSpecError(f"model {self.name!r}: set exactly one of backend / platform")
        if self.max_batch_size < 0 or self.instance_count < 1:
            raise ConfigSpecError(f"model {self.name!r}: max_batch_size >= 0 and instance_count >= 1")
        if self.default_model_filename and not MODEL_NAME.match(self.default_model_filename):
            raise ConfigSpecError(f"model {self.name!r}: default_model_filename "
                                  f"{self.default_model_filename!r} must be a plain file name")


@dataclass(frozen=True)
class EnsembleStep:
    model_name: str
    input_map: dict[str, str]    # the model's input name -> ensemble tensor name
    output_map: dict[str, str]   # the model's output name -> ensemble tensor name


@dataclass(frozen=True)
class EnsembleSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[EnsembleStep, ...]
    max_batch_size: int = 256

    def __post_init__(self):
        validate_model_name(self.name)


def _tensor(message, spec: TensorSpec):
    message.name = spec.name
    message.data_type = getattr(pb, f"TYPE_{spec.dtype}")
    message.dims.extend(spec.dims)


def build_model_config(spec: ModelSpec) -> pb.ModelConfig:
    config = pb.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    if spec.backend:
        config.backend = spec.backend
    else:
        config.platform = spec.platform
    if spec.default_model_filename:
        config.default_model_filename = spec.default_model_filename
    for tensor in spec.inputs:
        _tensor(config.input.add(), tensor)
    for tensor in spec.outputs:
        _tensor(config.output.add(), tensor)
    group = config.instance_group.add()
    group.count = spec.instance_count
    group.kind = getattr(pb.ModelInstanceGroup, spec.instance_kind)
    if spec.dynamic_batching and spec.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    for key, value in spec.parameters:
        config.parameters[key].string_value = value
    return config


def build_ensemble_config(spec: EnsembleSpec) -> pb.ModelConfig:
    config = pb.ModelConfig(name=spec.name, platform="ensemble", max_batch_size=spec.max_batch_size)
    for tensor in spec.inputs:
        _tensor(config.input.add(), tensor)
    for tensor in spec.outputs:
        _tensor(config.output.add(), tensor)
    for step in spec.steps:
        message = config.ensemble_scheduling.step.add()
        message.model_name = step.model_name
        message.model_version = -1
        message.input_map.update(step.input_map)
        message.output_map.update(step.output_map)
    return config


def check_ensemble(spec: EnsembleSpec, models: dict[str, ModelSpec]) -> None:
    """Every step input is an ensemble input or an earlier step's output; every ensemble
    output is produced; every step names a known model and only its real tensors; batch
    sizes fit. Raises EnsembleWiringError saying which tensor or step is wrong."""
    available = {t.name for t in spec.inputs}
    produced_by: dict[str, str] = {}
    for position, step in enumerate(spec.steps):
        model = models.get(step.model_name)
        where = f"ensemble {spec.name!r} step {position} ({step.model_name})"
        if model is None:
            raise EnsembleWiringError(f"{where}: no such model; known: {sorted(models)}")
        if spec.max_batch_size > model.max_batch_size:
            raise EnsembleWiringError(f"{where}: ensemble max_batch_size {spec.max_batch_size} "
                                      f"exceeds the model's {model.max_batch_size}")
        model_inputs = {t.name for t in model.inputs}
        model_outputs = {t.name for t in model.outputs}
        if set(step.input_map) != model_inputs:
            raise EnsembleWiringError(f"{where}: maps inputs {sorted(step.input_map)} but the "
                                      f"model takes {sorted(model_inputs)}")
        for model_input, tensor in step.input_map.items():
            if tensor not in available:
                raise EnsembleWiringError(f"{where}: input {model_input!r} reads {tensor!r}, which "
                                          "is neither an ensemble input nor an earlier output")
        for model_output, tensor in step.output_map.items():
            if model_output not in model_outputs:
                raise EnsembleWiringError(f"{where}: the model has no output {model_output!r}; "
                                          f"it has {sorted(model_outputs)}")
            if tensor in produced_by or tensor in {t.name for t in spec.inputs}:
                raise EnsembleWiringError(f"{where}: tensor {tensor!r} is written twice")
            produced_by[tensor] = step.model_name
            available.add(tensor)
    missing = [t.name for t in spec.outputs if t.name not in produced_by]
    if missing:
        raise EnsembleWiringError(f"ensemble {spec.name!r}: outputs {missing} are produced by no step")


def config_text(config: pb.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_config_text(text: str) -> pb.ModelConfig:
    return text_format.Parse(text, pb.ModelConfig())
