"""The python-based onnxruntime backend, in-process: a fake pb_utils, a real ONNX session."""
from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

from recdeploy.serve.backends import PYTHON_BASED_BACKENDS


class FakeTritonError(Exception):
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message, code="INTERNAL"):
        super().__init__(message)
        self._code = code

    def message(self):
        return str(self)

    def code(self):
        return self._code


class FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


def fake_pb_utils():
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.InferenceResponse = FakeResponse
    module.TritonError = FakeTritonError
    module.TritonModelException = RuntimeError
    module.triton_string_to_numpy = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64,
                                     "TYPE_INT32": np.int32}.__getitem__
    module.get_input_tensor_by_name = lambda request, name: (
        FakeTensor(name, request[name]) if name in request else None)
    return module


@pytest.fixture
def backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("ort_backend", PYTHON_BASED_BACKENDS["onnxruntime"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def model(backend, tmp_path, repository_builders):
    from google.protobuf import json_format
    config = repository_builders.onnx_model_config("affine", [3])
    repository_builders.affine_onnx(tmp_path / "affine" / "1" / "model.onnx")
    instance = backend.TritonPythonModel()
    instance.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                         "model_repository": str(tmp_path / "affine"), "model_version": "1",
                         "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    calls = []
    run = instance._run
    instance._run = lambda feed: calls.append({k: v.shape for k, v in feed.items()}) or run(feed)
    return instance, calls


def test_model_path_uses_default_model_filename(backend):
    args = {"model_repository": "/r/m", "model_version": "3"}
    assert backend.model_path(args, {}) == "/r/m/3/model.onnx"
    assert backend.model_path(args, {"default_model_filename": "s.onnx"}) == "/r/m/3/s.onnx"


def test_thread_parameters_map_to_session_options(backend):
    config = {"parameters": {"intra_op_thread_count": {"string_value": "4"},
                             "inter_op_thread_count": {"string_value": ""},
                             "other": {"string_value": "x"}}}
    assert backend.thread_options(config) == {"intra_op_num_threads": 4}


def test_declared_input_ranges_refuse_a_value_outside_as_the_clients_mistake(backend):
    config = {"parameters": {"input_range": {"string_value": "K=1..1682, X=-2..5"}}}
    ranges = backend.input_ranges(config)
    assert ranges == {"K": (1, 1682), "X": (-2, 5)} and backend.input_ranges({}) == {}
    backend.check_ranges({"K": np.array([[1], [1682]], np.int32)}, ranges)
    backend.check_ranges({"Y": np.array([99])}, ranges)          # undeclared inputs pass
    with pytest.raises(backend.ClientInputError, match="K must be between 1 and 1682, got 0"):
        backend.check_ranges({"K": np.array([[3], [0]], np.int32)}, ranges)
    with pytest.raises(backend.ClientInputError, match="X must be between -2 and 5, got 6"):
        backend.check_ranges({"X": np.array([6])}, ranges)


def test_concatenate_and_split_round_trip(backend):
    feeds = [{"X": np.full((n, 3), n, np.float32)} for n in (1, 2, 3)]
    assert backend.can_concatenate(feeds)
    merged, sizes = backend.concatenate(feeds)
    assert merged["X"].shape == (6, 3) and sizes == [1, 2, 3]
    parts = backend.split({"Y": merged["X"] * 10}, sizes)
    for feed, part in zip(feeds, parts):
        np.testing.assert_array_equal(part["Y"], feed["X"] * 10)
    with pytest.raises(ValueError, match=r"dim 0 == 6"):
        backend.split({"Y": np.zeros((5, 3))}, sizes)


def test_mismatched_feeds_are_not_concatenated(backend):
    a = {"X": np.zeros((1, 3), np.float32)}
    assert not backend.can_concatenate([a])
    assert not backend.can_concatenate([a, {"X": np.zeros((1, 4), np.float32)}])
    assert not backend.can_concatenate([a, {"X": np.zeros((1, 3), np.float64)}])


def test_a_dynamic_batch_runs_once_and_splits_back(model):
    instance, calls = model
    requests = [{"X": np.full((n, 3), n, np.float32)} for n in (1, 2, 1)]
    responses = instance.execute(requests)
    assert calls == [{"X": (4, 3)}]
    for request, response in zip(requests, responses):
        assert response.error is None
        np.testing.assert_array_equal(response.outputs["Y"], request["X"] * 2 + 1)


def test_a_bad_request_gets_an_error_and_its_batch_mates_answers(model):
    instance, calls = model
    good = {"X": np.ones((2, 3), np.float32)}
    bad = {"X": np.ones((2, 4), np.float32)}
    responses = instance.execute([good, bad])
    assert calls == [{"X": (2, 3)}, {"X": (2, 4)}]  # not concatenable: one by one
    np.testing.assert_array_equal(responses[0].outputs["Y"], np.full((2, 3), 3, np.float32))
    assert responses[1].error is not None and "onnxruntime" in responses[1].error.message()
    assert responses[1].outputs == {}
    # ONNX Runtime's own InvalidArgument: the client's tensor, so INVALID_ARG (HTTP 400)
    assert responses[1].error.code() == "INVALID_ARG"
    assert "ClientInputError: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for " \
           "input: X" in responses[1].error.message()


def test_missing_model_file_fails_initialize_with_its_path(backend, tmp_path, repository_builders):
    from google.protobuf import json_format
    config = repository_builders.onnx_model_config("m", [3])
    with pytest.raises(RuntimeError, match=r"m/1/model\.onnx does not exist"):
        backend.TritonPythonModel().initialize({
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
            "model_repository": str(tmp_path / "m"), "model_version": "1"})


def load(backend, config, model_dir):
    from google.protobuf import json_format
    instance = backend.TritonPythonModel()
    instance.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                         "model_repository": str(model_dir), "model_version": "1",
                         "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    return instance


def top_k_model(backend, tmp_path):
    """Y = the K largest of X [batch, 4]: TopK with k from the request, as the fused graph has."""
    import onnx
    from onnx import TensorProto, helper
    from tritonclient.grpc import model_config_pb2 as mc

    graph = helper.make_graph(
        [helper.make_node("Cast", ["K"], ["k64"], to=TensorProto.INT64),
         helper.make_node("ReduceMax", ["k64"], ["kmax"], keepdims=0),
         helper.make_node("Reshape", ["kmax", "one"], ["k"]),
         helper.make_node("TopK", ["X", "k"], ["Y", "I"], axis=1)],
        "top_k",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4]),
         helper.make_tensor_value_info("K", TensorProto.INT32, [None, 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "top_k" / "1").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "top_k" / "1" / "model.onnx"))
    config = mc.ModelConfig(name="top_k", platform="onnxruntime_onnx", max_batch_size=8)
    config.input.add(name="X", data_type=mc.TYPE_FP32, dims=[4])
    config.input.add(name="K", data_type=mc.TYPE_INT32, dims=[1])
    config.output.add(name="Y", data_type=mc.TYPE_FP32, dims=[-1])
    return load(backend, config, tmp_path / "top_k")


def test_onnx_runtime_failures_other_than_invalid_argument_stay_internal(backend, tmp_path):
    """ONNX Runtime reports a TopK k beyond the axis as FAIL: nothing says whether the client
    or the graph is at fault, so it is not called a client error (see the module docstring)."""
    instance = top_k_model(backend, tmp_path)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    good, too_big, wrong_dtype = instance.execute([
        {"X": x, "K": np.full((2, 1), 2, np.int32)}, {"X": x, "K": np.full((2, 1), 5, np.int32)},
        {"X": x, "K": np.full((2, 1), 2, np.int64)}])
    assert good.error is None and good.outputs["Y"].tolist() == [[3, 2], [7, 6]]
    assert too_big.error.code() == "INTERNAL"
    assert "k argument [5] should not be greater than specified axis dim value [4]" in too_big.error.message()
    assert wrong_dtype.error.code() == "INVALID_ARG"
    assert "Unexpected input data type" in wrong_dtype.error.message()


def test_a_config_output_the_graph_lacks_fails_the_load(backend, tmp_path, repository_builders):
    config = repository_builders.onnx_model_config("affine", [3])
    config.output.add(name="Z", data_type=config.output[0].data_type, dims=[3])
    repository_builders.affine_onnx(tmp_path / "affine" / "1" / "model.onnx")
    with pytest.raises(RuntimeError, match=r"affine/1/model\.onnx has no output Z \(the config names it\)"):
        load(backend, config, tmp_path / "affine")


def test_a_scripted_value_error_is_invalid_arg_and_a_runtime_error_internal(backend, tmp_path):
    import torch
    from tritonclient.grpc import model_config_pb2 as mc

    class Checked(torch.nn.Module):
        def forward(self, x: torch.Tensor):
            if bool((x < 0).any()):
                raise ValueError("X must not be negative, got " + str(int(x.min())))
            if bool((x > 100).any()):
                raise RuntimeError("the model broke")
            return x * 2

    (tmp_path / "checked" / "1").mkdir(parents=True)
    torch.jit.save(torch.jit.script(Checked()), str(tmp_path / "checked" / "1" / "model.pt"))
    config = mc.ModelConfig(name="checked", platform="pytorch_libtorch", max_batch_size=8)
    config.input.add(name="X__0", data_type=mc.TYPE_FP32, dims=[2])
    config.output.add(name="Y__0", data_type=mc.TYPE_FP32, dims=[2])
    instance = load(backend, config, tmp_path / "checked")
    good, negative, broken = instance.execute([{"X__0": np.ones((1, 2), np.float32)},
                                               {"X__0": -np.ones((1, 2), np.float32)},
                                               {"X__0": np.full((1, 2), 101, np.float32)}])
    assert good.error is None and good.outputs["Y__0"].tolist() == [[2, 2]]
    assert negative.error.code() == "INVALID_ARG"
    assert negative.error.message() == "onnxruntime: ClientInputError: X must not be negative, got -1"
    assert broken.error.code() == "INTERNAL" and "the model broke" in broken.error.message()
