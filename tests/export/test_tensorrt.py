"""TensorRT is gated: it builds only on an NVIDIA GPU with TensorRT, which CI lacks."""
import numpy as np
import pytest

from recdeploy.export.tensorrt import PlanConfig, TensorRTUnavailable, require_tensorrt


def _tensorrt_ready() -> bool:
    try:
        require_tensorrt()
        return True
    except TensorRTUnavailable:
        return False


def test_plan_config_validates():
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'fp16', 'int8'\), got 'int4'"):
        PlanConfig(precision="int4")
    with pytest.raises(ValueError, match="need 1 <= opt_batch <= max_batch"):
        PlanConfig(opt_batch=512, max_batch=256)


@pytest.mark.skipif(_tensorrt_ready(), reason="TensorRT and a GPU are present")
def test_without_tensorrt_the_error_says_what_is_missing():
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed|no CUDA GPU"):
        require_tensorrt()


@pytest.mark.skipif(not _tensorrt_ready(), reason="needs TensorRT and an NVIDIA GPU (absent here)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_plan_matches_onnx_runtime(repository, tmp_path, precision):
    from recdeploy.export.tensorrt import build_plan, check_plan_parity
    onnx_path = repository / "scorer" / "1" / "model.onnx"
    plan = build_plan(onnx_path, tmp_path / "model.plan", PlanConfig(precision=precision))
    users = np.arange(32, dtype=np.int64).reshape(-1, 1)
    assert check_plan_parity(plan, onnx_path, {"USER_INDEX": users}) < 1e-2
