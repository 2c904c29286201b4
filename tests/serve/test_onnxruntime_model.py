"""The python-based onnxruntime backend, in-process: a fake pb_utils, a real ONNX session."""
from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest

from recdeploy.serve.backends import PYTHON_BASED_BACKENDS


class FakeTritonError(Exception):
    def message(self):
        return str(self)


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
    module.triton_string_to_numpy = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}.__getitem__
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


def test_missing_model_file_fails_initialize_with_its_path(backend, tmp_path, repository_builders):
    from google.protobuf import json_format
    config = repository_builders.onnx_model_config("m", [3])
    with pytest.raises(RuntimeError, match=r"m/1/model\.onnx does not exist"):
        backend.TritonPythonModel().initialize({
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
            "model_repository": str(tmp_path / "m"), "model_version": "1"})
