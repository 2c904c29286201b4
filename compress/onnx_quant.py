"""ONNX-side methods: dynamic INT8, static (calibrated) INT8, FP16.

    compress(Path("scorer.onnx"), DynamicInt8Config(), out=Path("int8.onnx"))
    compress(Path("scorer.onnx"), StaticInt8Config(), data=task_data, out=Path("qdq.onnx"))
    compress(Path("scorer.onnx"), Fp16Config(), out=Path("fp16.onnx"))

Static INT8 calibrates on real requests (``TaskData.requests``: user indices from the
dataset), never on random inputs: a scorer's activations depend on which rows are gathered.
The default QDQ form with symmetric int8 is what TensorRT builds INT8 engines from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recdeploy.compress.api import CalibrationError, TaskData, register_method
from recdeploy.compress.config import DynamicInt8Config, Fp16Config, StaticInt8Config


@register_method(DynamicInt8Config)
def quantize_dynamic_int8(path: Path, config: DynamicInt8Config, data: TaskData | None, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(path), str(out), per_channel=config.per_channel,
                     reduce_range=config.reduce_range,
                     weight_type=QuantType.QInt8 if config.weight_type == "int8" else QuantType.QUInt8)
    return out


def calibration_batches(requests: list[dict[str, np.ndarray]], size: int) -> list[dict[str, np.ndarray]]:
    """The first ``size`` rows of the real requests, in the batches they came in."""
    batches, taken = [], 0
    for request in requests:
        rows = len(next(iter(request.values()))) if request else 0
        if rows == 0 or taken >= size:
            continue
        keep = min(rows, size - taken)
        batches.append({name: value[:keep] for name, value in request.items()})
        taken += keep
    if not batches:
        raise CalibrationError("the calibration set is empty: static INT8 needs real requests "
                               "(TaskData.requests, e.g. user indices from the dataset)")
    return batches


class RequestReader:
    """onnxruntime.quantization.CalibrationDataReader over a list of real requests."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._batches = batches
        self._iter = iter(batches)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter(self._batches)


@register_method(StaticInt8Config)
def quantize_static_int8(path: Path, config: StaticInt8Config, data: TaskData | None, out: Path) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = calibration_batches(data.requests if data is not None else [], config.calibration_size)
    reader = type("Reader", (RequestReader, CalibrationDataReader), {})(batches)
    act = QuantType.QInt8 if config.activation_type == "int8" else QuantType.QUInt8
    symmetric = config.activation_type == "int8"
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[config.calibration_method]
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(path), str(out), reader,
                    quant_format=QuantFormat.QDQ if config.quant_format == "qdq" else QuantFormat.QOperator,
                    activation_type=act, weight_type=QuantType.QInt8, per_channel=config.per_channel,
                    calibrate_method=method,
                    # TensorRT takes symmetric int8 only (zero point 0)
                    extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    return out


@register_method(Fp16Config)
def convert_fp16(path: Path, config: Fp16Config, data: TaskData | None, out: Path) -> Path:
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=config.keep_io_types)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out
