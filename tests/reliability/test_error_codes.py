"""Error codes against the real tritonserver: a client's mistake is INVALID_ARGUMENT (HTTP 400,
gRPC INVALID_ARGUMENT), a server fault INTERNAL (500, INTERNAL), over both protocols.

Monitoring counts 500s as server faults and proxies retry them; a bad K retried is the same
bad K. The python models decide by exception class (recdeploy_triton_core.BadRequest), the
native libtorch backend by a TorchScript ``raise ValueError``."""
import json
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient

pytestmark = pytest.mark.integration

CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}
SERVER_ERROR = {"grpc": "StatusCode.INTERNAL", "http": "500"}
PROTOCOLS = ["grpc", "http"]
U = np.array([[1]], np.int64)


def served_error(server, protocol, model, inputs, outputs=("ITEM_IDS", "SCORES")):
    """(status, message) of a request that must fail: gRPC's status code or HTTP's status."""
    from tritonclient.utils import InferenceServerException

    url = server.grpc_url if protocol == "grpc" else server.http_url
    with RecommendClient(url, protocol, model=model) as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(inputs, list(outputs))
    return error.value.status(), error.value.message()


def k(value, rows=1):
    return {"USER_ID": np.arange(1, rows + 1, dtype=np.int64).reshape(-1, 1),
            "K": np.full((rows, 1), value, np.int32)}


def test_a_raw_json_request_with_k_0_gets_http_400(rel_server):
    """No client library in between: the status line itself says the client is at fault."""
    body = {"inputs": [{"name": "USER_ID", "shape": [1, 1], "datatype": "INT64", "data": [1]},
                       {"name": "K", "shape": [1, 1], "datatype": "INT32", "data": [0]}]}
    request = urllib.request.Request(f"http://{rel_server.http_url}/v2/models/recommend/infer",
                                     json.dumps(body).encode(), {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 400
    assert json.loads(error.value.read()) == {
        "error": "in ensemble 'recommend', topk: K must be between 1 and the catalogue size 1682, got 0"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("bad_k, shown", [(1683, 1683), (0, 0), (-2, -2)])
def test_fused_onnx_bad_k_is_a_client_error(rel_server, protocol, bad_k, shown):
    """ONNX TopK cannot refuse a bad K (a k past the axis is FAIL, k = 0 empty lists): the export
    declares K's range and the python-based backend refuses the request before the graph runs."""
    status, message = served_error(rel_server, protocol, "recommend_fused", k(bad_k))
    assert status == CLIENT_ERROR[protocol]
    assert f"K must be between 1 and 1682, got {shown}" in message


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("entry", ["recommend_fused_libtorch", "fused_retrieval_libtorch", "recommend_fused_aoti",
                                   "fused_retrieval_aoti"])
@pytest.mark.parametrize("bad_k", [1683, 0])
def test_fused_torch_bad_k_is_a_client_error(rel_server, protocol, entry, bad_k):
    """The native backend refuses a K outside the config's input_range before the model runs:
    an AOTInductor package cannot raise the ValueError that marks a client's mistake (the
    TorchScript model would; checked_libtorch below covers that path)."""
    status, message = served_error(rel_server, protocol, entry, k(bad_k))
    assert status == CLIENT_ERROR[protocol]
    assert f"K must be between 1 and 1682, got {bad_k}" in message


# ---------------------------------------------------------------- a deliberately broken repository

CHECKED_MODEL = "checked_libtorch"


def checked_module():
    """A TorchScript model that marks a client mistake the way the native backend reads it."""
    import torch

    class Checked(torch.nn.Module):
        def forward(self, x: torch.Tensor):
            if bool((x < 0).any()):
                raise ValueError("X must not be negative, got " + str(int(x.min())))
            if bool((x > 100).any()):
                raise RuntimeError("the model broke on " + str(int(x.max())))
            return x * 2

    return torch.jit.script(Checked())


@pytest.fixture(scope="module")
def broken_server(repository, tmp_path_factory):
    """The session's repository with (a) user 1's seen items pointing past the catalogue (the
    file loads; only requests for user 1 meet it) and (b) a native TorchScript model."""
    import torch
    from tritonclient.grpc import model_config_pb2 as mc

    from recdeploy.export.repository import write_model
    from recdeploy.serve.server import ServerConfig, TritonServer

    repo = tmp_path_factory.mktemp("broken") / "repo"
    shutil.copytree(repository, repo, ignore=shutil.ignore_patterns("__pycache__"))
    seen = np.load(repo / "feature_lookup" / "1" / "seen_items.npy")
    seen[0] = 10 ** 6                                     # user 1 is row 0 of the CSR
    np.save(repo / "feature_lookup" / "1" / "seen_items.npy", seen)

    config = mc.ModelConfig(name=CHECKED_MODEL, platform="pytorch_libtorch", max_batch_size=8)
    config.input.add(name="X__0", data_type=mc.TYPE_FP32, dims=[2])
    config.output.add(name="Y__0", data_type=mc.TYPE_FP32, dims=[2])
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    folder = tmp_path_factory.mktemp("checked")
    torch.jit.save(checked_module(), str(folder / "model.pt"))
    write_model(repo, config, {"model.pt": folder / "model.pt"})
    with TritonServer(ServerConfig(model_repository=repo)) as running:
        assert f"libtorch backend: {CHECKED_MODEL} loaded" in running.log_path.read_text()
        yield running


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_inconsistent_artifact_is_a_server_fault_for_its_requests_only(broken_server, protocol):
    status, message = served_error(broken_server, protocol, "recommend", k(5))
    assert status == SERVER_ERROR[protocol]
    assert "topk: PipelineFault: SEEN_ITEMS holds index 1000000, beyond the catalogue (1682 items)" in message
    status, _ = served_error(broken_server, protocol, "recommend", k(0))   # K is checked first
    assert status == CLIENT_ERROR[protocol]
    url = broken_server.grpc_url if protocol == "grpc" else broken_server.http_url
    with RecommendClient(url, protocol) as client:
        ids, _ = client.recommend([2], k=5)                # user 2's row is intact
    assert ids.shape == (1, 5) and (ids > 0).all()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_native_backend_answers_a_scripted_value_error_invalid_argument(broken_server, protocol):
    def ask(x):
        return served_error(broken_server, protocol, CHECKED_MODEL, {"X__0": np.asarray(x, np.float32)},
                            ["Y__0"])

    assert ask([[-3, 1]]) == (CLIENT_ERROR[protocol],
                              f"libtorch backend: {CHECKED_MODEL}: X must not be negative, got -3")
    status, message = ask([[101, 1]])
    assert status == SERVER_ERROR[protocol] and "the model broke on 101" in message
    url = broken_server.grpc_url if protocol == "grpc" else broken_server.http_url
    with RecommendClient(url, protocol, model=CHECKED_MODEL) as client:
        assert client.infer({"X__0": np.ones((2, 2), np.float32)}, ["Y__0"])["Y__0"].tolist() == [[2, 2]] * 2
