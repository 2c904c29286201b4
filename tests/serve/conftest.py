"""Builders for tiny model repositories; configs are ModelConfig protobufs, never templates."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def write_config(model_dir: Path, config) -> None:
    from google.protobuf import text_format
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))


def affine_onnx(path: Path, width: int = 3) -> None:
    """Y = X * 2 + 1 on float32 [batch, width]."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "two"], ["T"]), helper.make_node("Add", ["T", "one"], ["Y"])],
        "affine",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
         helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by onnxruntime releases older than this onnx
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def onnx_model_config(name: str, dims: list[int], queue_delay_us: int = 0):
    from tritonclient.grpc import model_config_pb2 as mc
    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=8)
    config.input.add(name="X", data_type=mc.TYPE_FP32, dims=dims)
    config.output.add(name="Y", data_type=mc.TYPE_FP32, dims=dims)
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    config.parameters["intra_op_thread_count"].string_value = "1"
    return config


ADD_ONE_PY = textwrap.dedent('''
    import json
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "A").as_numpy()
                out = pb_utils.Tensor("B", (x + 1).astype(np.int64))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            return responses
''')

BROKEN_PY = textwrap.dedent('''
    class TritonPythonModel:
        def initialize(self, args):
            raise RuntimeError("broken on purpose: weights-7781 missing")
''')


def python_model(root: Path, name: str, source: str) -> None:
    from tritonclient.grpc import model_config_pb2 as mc
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    config.input.add(name="A", data_type=mc.TYPE_INT64, dims=[-1])
    config.output.add(name="B", data_type=mc.TYPE_INT64, dims=[-1])
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    write_config(root / name, config)
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "1" / "model.py").write_text(source)


def good_repository(root: Path) -> Path:
    """affine (ONNX, dims [3]), affine_loose (same ONNX, dims [-1]), add_one (python)."""
    affine_onnx(root / "affine" / "1" / "model.onnx")
    # a 20 ms queue delay makes concurrent requests arrive as one dynamic batch
    write_config(root / "affine", onnx_model_config("affine", [3], queue_delay_us=20_000))
    # dims [-1] lets Triton pass a width-4 request through; onnxruntime must reject it
    affine_onnx(root / "affine_loose" / "1" / "model.onnx")
    write_config(root / "affine_loose", onnx_model_config("affine_loose", [-1]))
    python_model(root, "add_one", ADD_ONE_PY)
    return root


@pytest.fixture
def repository_builders():
    """The builders above, for test modules (importlib mode cannot import conftest)."""
    import types
    return types.SimpleNamespace(write_config=write_config, affine_onnx=affine_onnx,
                                 onnx_model_config=onnx_model_config, python_model=python_model,
                                 good_repository=good_repository, ADD_ONE_PY=ADD_ONE_PY,
                                 BROKEN_PY=BROKEN_PY)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real tritonserver on good_repository(); stopped after the module."""
    from recdeploy.serve.server import ServerConfig, TritonServer
    root = good_repository(tmp_path_factory.mktemp("repo"))
    server = TritonServer(ServerConfig(model_repository=root, startup_timeout_s=120))
    server.start()
    yield server
    server.stop()
