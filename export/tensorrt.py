"""TensorRT plans from the exported ONNX scorers (GPU only; gated where TensorRT is absent).

    plan = build_plan(Path("model_repository/scorer/1/model.onnx"), out / "model.plan",
                      PlanConfig(precision="fp16", max_batch=256))
    check_plan_parity(plan, onnx_path, {"USER_INDEX": users})      # TensorRT vs ONNX Runtime

Written against TensorRT 10's documented Python API (Builder, OnnxParser, IBuilderConfig,
IInt8EntropyCalibrator2, Runtime.deserialize_cuda_engine, execute_async_v3). No machine in this
project's CI has an NVIDIA GPU with TensorRT, so every entry point first calls
``require_tensorrt()``, which raises TensorRTUnavailable saying what is missing; tests skip on
it. The stock NGC container serves the plan with ``platform: "tensorrt_plan"``; the pip
tritonserver used locally has no TensorRT backend.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing: the plan cannot be built or run here."""


class PlanParityError(ValueError):
    pass


@dataclass(frozen=True)
class PlanConfig:
    precision: str = "fp16"
    max_batch: int = 256
    opt_batch: int = 32
    workspace_mib: int = 1024
    # INT8 reads/writes this calibration cache so later builds skip the calibration pass
    calibration_cache: Path | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got {self.opt_batch}, {self.max_batch}")


def require_tensorrt():
    """Import tensorrt and check for a CUDA device; raise TensorRTUnavailable otherwise."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise TensorRTUnavailable("TensorRT is not installed (pip install 'recdeploy[gpu]' on a "
                                  f"machine with an NVIDIA GPU): {err}") from None
    try:
        import torch
        if not torch.cuda.is_available():
            raise TensorRTUnavailable("TensorRT is installed but no CUDA GPU is visible")
    except ImportError:
        raise TensorRTUnavailable("torch is needed for the GPU buffers") from None
    return trt


def _calibrator(trt, batches: list[dict[str, np.ndarray]], cache: Path | None):
    """An IInt8EntropyCalibrator2 over real requests (the same user indices the export saw)."""
    import torch

    if not batches:
        raise ValueError("INT8 calibration needs at least one batch of real inputs")

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches, self.position, self.device = batches, 0, {}

        def get_batch_size(self):
            return len(next(iter(self.batches[0].values())))

        def get_batch(self, names):
            if self.position >= len(self.batches):
                return None
            batch = self.batches[self.position]
            self.position += 1
            self.device = {name: torch.from_numpy(batch[name]).cuda() for name in names}
            return [int(self.device[name].data_ptr()) for name in names]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache is not None and cache.is_file() else None

        def write_calibration_cache(self, data):
            if cache is not None:
                cache.write_bytes(bytes(data))

    return Calibrator()


def build_plan(onnx_path: Path, plan_path: Path, config: PlanConfig = PlanConfig(),
               calibration: Iterable[dict[str, np.ndarray]] = ()) -> Path:
    """ONNX -> serialized TensorRT engine with a dynamic batch profile [1, opt, max]."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT could not parse {onnx_path}: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (config.opt_batch, *rest), (config.max_batch, *rest))
    builder_config.add_optimization_profile(profile)
    if config.precision in ("fp16", "int8"):
        builder_config.set_flag(trt.BuilderFlag.FP16)
    if config.precision == "int8":
        builder_config.set_flag(trt.BuilderFlag.INT8)
        builder_config.int8_calibrator = _calibrator(trt, list(calibration), config.calibration_cache)
        builder_config.set_calibration_profile(profile)
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise ValueError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    plan_path = Path(plan_path)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(plan))
    return plan_path


def run_plan(plan_path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a plan once on the GPU (torch tensors as device buffers)."""
    trt = require_tensorrt()
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
    context = engine.create_execution_context()
    buffers = {}
    for name, array in inputs.items():
        buffers[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        context.set_input_shape(name, tuple(array.shape))
        context.set_tensor_address(name, buffers[name].data_ptr())
    outputs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            dtype = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
            outputs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            context.set_tensor_address(name, outputs[name].data_ptr())
    stream = torch.cuda.Stream()
    context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}


def check_plan_parity(plan_path: Path, onnx_path: Path, inputs: dict[str, np.ndarray],
                      atol: float = 1e-2, rtol: float = 1e-2) -> float:
    """TensorRT vs ONNX Runtime on the same real inputs; returns the max |diff| or raises."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))
    got = run_plan(plan_path, inputs)
    worst = 0.0
    for name, reference in expected.items():
        diff = np.abs(got[name].astype(np.float64) - reference)
        worst = max(worst, float(diff.max(initial=0.0)))
        if np.any(diff > atol + rtol * np.abs(reference)):
            raise PlanParityError(f"TensorRT output {name!r} differs from ONNX Runtime by {worst:.3g}")
    return worst
