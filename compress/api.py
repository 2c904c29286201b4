"""``compress(target, config)``: one entry point, dispatching on the config's type.

    from recdeploy.compress import compress, preset
    pruned = compress(model, preset("prune-50"), data=family.task_data(model, ds))
    int8 = compress(Path("model.onnx"), preset("int8-dynamic"), out=Path("int8.onnx"))

Model-stage configs take a torch model (the trained model, or for row-wise tables either the
trained model or its served scorer) and return a torch module; ONNX-stage configs take an
ONNX file and write ``out``. Handlers register with ``@register_method(ConfigType)``; what is
model-specific (which layers couple, how to fine-tune, which requests are real) lives in a
``ModelFamily`` (``recdeploy.compress.families``), so a new model family is one new module.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recdeploy.compress.config import CompressionConfig, CompressionConfigError, UnknownMethodError

HANDLERS: dict[type, Callable] = {}


class CalibrationError(CompressionConfigError):
    """Static quantization without real requests to calibrate on."""


class MissingDataError(CompressionConfigError):
    """A method that needs data (fine-tuning, Taylor importance, calibration) got none."""


@dataclass
class TaskData:
    """What data-hungry methods need, prepared by a model family from a dataset.

    requests: real served-model inputs ({input name: array}), one dict per batch; the static
        INT8 calibrator reads them.
    finetune(model, epochs, lr, seed) -> model: the family's own training objective; where
        ``distills``, also finetune(..., teacher=model, distill=weight).
    loss(model) -> scalar tensor on a real batch: gradients for Taylor importance.
    evaluate(score) -> metrics: the family's quality protocol; score(inputs dict) -> outputs.
    train_lr: the run's own learning rate, the fine-tune's default where the family sets it.
    """
    requests: list[dict[str, np.ndarray]] = field(default_factory=list)
    finetune: Callable[..., Any] | None = None
    loss: Callable[..., Any] | None = None
    evaluate: Callable[..., dict] | None = None
    train_lr: float | None = None
    distills: bool = False        # finetune(..., teacher=, distill=) is supported


def register_method(config_type: type[CompressionConfig]):
    def decorator(handler):
        if config_type in HANDLERS:
            raise ValueError(f"a handler for {config_type.__name__} is registered twice")
        HANDLERS[config_type] = handler
        return handler
    return decorator


def _load_handlers() -> None:
    # importing the modules registers their handlers
    from recdeploy.compress import onnx_quant, pruning, rowwise  # noqa: F401


def compress(target, config: CompressionConfig, *, data: TaskData | None = None,
             out: Path | None = None):
    """Apply one config. Returns a torch module (model stage) or the written ONNX path."""
    _load_handlers()
    handler = HANDLERS.get(type(config))
    if handler is None:
        raise UnknownMethodError(f"no compression handler for {type(config).__name__}; "
                                 f"valid: {', '.join(t.__name__ for t in HANDLERS)}")
    if config.stage == "onnx":
        if not isinstance(target, (str, Path)):
            raise CompressionConfigError(f"{config.method} acts on an exported ONNX file; "
                                         f"got {type(target).__name__} (export it first)")
        if out is None:
            raise CompressionConfigError(f"{config.method} writes a new ONNX file: pass out=")
        return handler(Path(target), config, data=data, out=Path(out))
    if isinstance(target, (str, Path)):
        raise CompressionConfigError(f"{config.method} acts on the torch model, not on an ONNX "
                                     f"file ({target})")
    return handler(target, config, data=data)
