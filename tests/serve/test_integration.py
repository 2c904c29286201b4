"""The real tritonserver on a tiny repository: ONNX via the python-based onnxruntime backend,
a numpy-only python model, malformed requests, and broken models at start-up."""
from __future__ import annotations

import urllib.request

import numpy as np
import pytest

pytestmark = pytest.mark.integration

X = np.arange(6, dtype=np.float32).reshape(2, 3)
EXPECTED = X * 2 + 1


def grpc_infer(server, model, array, name="X", output="Y"):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor]).as_numpy(output)


def test_onnx_over_grpc_is_exact(served):
    np.testing.assert_array_equal(grpc_infer(served, "affine", X), EXPECTED)


def test_onnx_over_http_is_exact(served):
    import tritonclient.http as httpclient
    client = httpclient.InferenceServerClient(served.http_url)
    tensor = httpclient.InferInput("X", [2, 3], "FP32")
    tensor.set_data_from_numpy(X, binary_data=False)
    result = client.infer("affine", [tensor]).as_numpy("Y")
    np.testing.assert_array_equal(result, EXPECTED)


def test_python_model_is_exact(served):
    result = grpc_infer(served, "add_one", np.array([1, 2, 40], dtype=np.int64), "A", "B")
    np.testing.assert_array_equal(result, [2, 3, 41])


def test_concurrent_requests_are_batched_and_split_back(served) -> None:
    import queue

    import tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient(served.grpc_url)
    before = _stats(client, "affine")
    answers: queue.Queue = queue.Queue()
    inputs = [np.full((1 + i % 2, 3), i, dtype=np.float32) for i in range(8)]
    for i, array in enumerate(inputs):
        tensor = grpcclient.InferInput("X", list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        client.async_infer("affine", [tensor], callback=lambda result, error, i=i: answers.put((i, result, error)))
    for _ in inputs:
        i, result, error = answers.get(timeout=30)
        assert error is None
        np.testing.assert_array_equal(result.as_numpy("Y"), inputs[i] * 2 + 1)
    after = _stats(client, "affine")
    assert after["inference_count"] - before["inference_count"] == 12
    # fewer model executions than requests: the dynamic batcher merged some of them
    assert after["execution_count"] - before["execution_count"] < 8


def _stats(client, model):
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return {key: int(stats.get(key, 0)) for key in ("inference_count", "execution_count")}


def test_malformed_requests_fail_and_server_stays_up(served):
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match="(?i)data-type|datatype|INT32"):
        grpc_infer(served, "affine", X.astype(np.int32))
    with pytest.raises(InferenceServerException, match="(?i)shape"):
        grpc_infer(served, "affine", np.zeros((2, 4), dtype=np.float32))
    # Triton lets this one through (dims [-1]); onnxruntime rejects it inside the stub
    with pytest.raises(InferenceServerException, match="onnxruntime"):
        grpc_infer(served, "affine_loose", np.zeros((2, 4), dtype=np.float32))
    assert served.is_alive()
    with urllib.request.urlopen(f"http://{served.http_url}/v2/health/ready", timeout=5) as ready:
        assert ready.status == 200
    np.testing.assert_array_equal(grpc_infer(served, "affine_loose", X), EXPECTED)
    np.testing.assert_array_equal(grpc_infer(served, "affine", X), EXPECTED)


def test_metrics_endpoint_serves_prometheus_text(served):
    with urllib.request.urlopen(served.metrics_url, timeout=5) as response:
        assert "nv_inference_request_success" in response.read().decode()


def test_broken_python_model_fails_start_with_its_error(tmp_path, repository_builders):
    from recdeploy.serve.server import ServerConfig, ServerStartError, TritonServer
    repository_builders.python_model(tmp_path, "broken", repository_builders.BROKEN_PY)
    server = TritonServer(ServerConfig(model_repository=tmp_path, startup_timeout_s=60))
    with pytest.raises(ServerStartError,
                       match=r"(?s)Model load errors:\n  failed to load .broken. version 1: .*weights-7781 missing"):
        server.start()
    assert not server.is_alive()


def test_missing_onnx_file_fails_start_naming_the_file(tmp_path, repository_builders):
    from recdeploy.serve.server import ServerConfig, ServerStartError, TritonServer
    config = repository_builders.onnx_model_config("no_file", [3])
    config.default_model_filename = "scorer.onnx"
    repository_builders.write_config(tmp_path / "no_file", config)
    (tmp_path / "no_file" / "1").mkdir()
    server = TritonServer(ServerConfig(model_repository=tmp_path, startup_timeout_s=60))
    with pytest.raises(ServerStartError, match=r"no_file/1/scorer\.onnx does not exist"):
        server.start()


def test_cli_serves_in_the_foreground_until_sigterm(tmp_path, repository_builders):
    import signal
    import subprocess
    import sys
    import time
    root = repository_builders.good_repository(tmp_path / "repo")
    # the venv is deliberately not on PATH: the server must still find the venv's numpy
    process = subprocess.Popen(
        [sys.executable, "-m", "recdeploy.serve", "--repository", str(root), "--no-verify",
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        grpc = next(line.split()[1] for line in lines if line.startswith("gRPC"))
        served = type("Served", (), {"grpc_url": grpc})()
        np.testing.assert_array_equal(grpc_infer(served, "affine", X), EXPECTED)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=45) == 0
        assert time.monotonic() - started < 45
        assert "stopping tritonserver" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
