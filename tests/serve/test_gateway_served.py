"""The gateway with the real nginx, two real tritonserver replicas, tritonclient and perf_analyzer:
TLS + token, only the exposed endpoints, the declared-shape request refused, a rolling update
under load without a failed request, a killed replica routed around and restarted."""
import gzip
import time

import numpy as np
import pytest

pytestmark = pytest.mark.integration

MIB = 1 << 20
USERS = {"USER_ID": np.array([[1], [7], [123456]], dtype=np.int64), "K": np.full((3, 1), 10, dtype=np.int32)}


@pytest.fixture(scope="module")
def new_scorer(tmp_path_factory, ml100k):
    """The scorer of a second two-tower (1 epoch, another seed): same catalogue, other lists."""
    from recdeploy.train.config import TrainConfig
    from recdeploy.train.data import leave_one_out
    from recdeploy.train.models.two_tower import RetrievalScorer
    from recdeploy.train.onnx_io import export_onnx
    from recdeploy.train.tasks.retrieval_loo import train

    config = TrainConfig(dataset="ml-100k", dim=32, epochs=1, batch_size=2048, lr=0.02, seed=1)
    model = train(config, ml100k, leave_one_out(ml100k), progress=False).model
    users = np.arange(16, dtype=np.int64).reshape(-1, 1)
    path = tmp_path_factory.mktemp("scorer_v2") / "model.onnx"
    return export_onnx(RetrievalScorer(model).eval(), {"USER_INDEX": users}, ["SCORES"], path)


@pytest.fixture(scope="module")
def deployment(repository, tmp_path_factory):
    from recdeploy.serve.gateway_rollout import Deployment
    from recdeploy.serve.server import pick_free_ports

    port = pick_free_ports("127.0.0.1", 1)[0]
    with Deployment(repository, 2, tmp_path_factory.mktemp("gateway"), port, statistics=True,
                    fail_timeout_s=2) as running:
        yield running


def direct(deployment, replica=0):
    from recdeploy.clients.triton_client import RecommendClient
    with RecommendClient(deployment.replicas.grpc_urls[replica], model="recommend") as client:
        return client.infer(USERS, ["ITEM_IDS", "SCORES"])


def through(deployment, protocol="grpc", token=None):
    from recdeploy.serve.gateway_client import GatewayClient
    gateway = deployment.gateway
    with GatewayClient(gateway.url, gateway.spec.cert_path, token or deployment.token, protocol) as client:
        return client.infer("recommend", USERS, ["ITEM_IDS", "SCORES"])


def test_grpc_and_https_answers_equal_a_replicas_and_need_the_token(deployment):
    from tritonclient.utils import InferenceServerException

    from recdeploy.serve.gateway_probe import send

    want = direct(deployment)
    for protocol in ("grpc", "http"):
        got = through(deployment, protocol)
        np.testing.assert_array_equal(got["ITEM_IDS"], want["ITEM_IDS"])
        np.testing.assert_allclose(got["SCORES"], want["SCORES"], rtol=1e-6)
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        through(deployment, "grpc", token="not-the-token-0123456789")
    gateway = deployment.gateway
    assert send(gateway.url, gateway.spec.cert_path, None, "/v2/health/ready")[0] == 401
    assert send(gateway.url, gateway.spec.cert_path, deployment.token, "/v2/health/ready")[0] == 200


def test_model_control_repository_and_composing_models_are_not_reachable(deployment):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from recdeploy.serve.gateway_probe import send

    gateway, token = deployment.gateway, deployment.token
    for path, body in (("/v2/repository/index", b"{}"), ("/v2/repository/models/recommend/unload", b"{}"),
                       ("/v2/models/scorer/infer", b"{}"), ("/v2/trace/setting", None), ("/v2/logging", None),
                       ("/v2/systemsharedmemory/status", None), ("/metrics", None)):
        assert send(gateway.url, gateway.spec.cert_path, token, path, body)[0] == 404, path
    client = grpcclient.InferenceServerClient(gateway.url, ssl=True, root_certificates=str(gateway.spec.cert_path))
    headers = {"authorization": f"Bearer {token}"}
    for call in (lambda: client.unload_model("recommend", headers=headers),
                 lambda: client.get_model_repository_index(headers=headers),
                 lambda: client.get_system_shared_memory_status(headers=headers)):
        with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
            call()
    assert client.is_model_ready("recommend", headers=headers)  # still loaded


def test_declared_shape_request_is_refused_at_once_without_growing_a_replica(deployment):
    from recdeploy.serve.gateway_probe import bomb_request, malformed_requests, send
    from recdeploy.serve.gateway_rollout import fetch_model_config
    from recdeploy.serve.processes import tree_rss_bytes

    gateway = deployment.gateway
    bomb = bomb_request(fetch_model_config(deployment.replicas.http_urls[0], "recommend"))
    assert len(bomb) < 200 and b"2147483648" in bomb
    pids = [server.pid for server in deployment.replicas.servers]
    before = sum(tree_rss_bytes(pid) for pid in pids)
    status, seconds, answer = send(gateway.url, gateway.spec.cert_path, deployment.token,
                                   "/v2/models/recommend/infer", bomb, timeout_s=5)
    grown = sum(tree_rss_bytes(pid) for pid in pids) - before
    assert status == 400 and b"batch size 2147483648" in answer
    assert seconds < 1.0 and grown < 100 * MIB, (seconds, grown / MIB)
    for kind, body in malformed_requests().items():
        assert send(gateway.url, gateway.spec.cert_path, deployment.token, "/v2/models/recommend/infer",
                    body, timeout_s=5)[0] == 400, kind
    zipped = gzip.compress(b'{"inputs": []}')
    assert send(gateway.url, gateway.spec.cert_path, deployment.token, "/v2/models/recommend/infer", zipped,
                timeout_s=5, headers={"Content-Encoding": "gzip"})[0] == 415
    too_big = b"{" + b" " * (2 << 20) + b"}"
    assert send(gateway.url, gateway.spec.cert_path, deployment.token, "/v2/models/recommend/infer",
                too_big, timeout_s=5)[0] == 413


def test_rolling_update_under_perf_analyzer_fails_no_request(deployment, new_scorer, tmp_path, repository):
    from recdeploy.perf.gateway_bench import rolling_under_load
    from recdeploy.perf.input_data import write_rows_input_data
    from recdeploy.perf.soak import chosen_entry, entry_rows

    before = direct(deployment)["ITEM_IDS"]
    rows = entry_rows(repository, chosen_entry(repository, "recommend"), 10, n=256)
    data = write_rows_input_data(tmp_path / "input.json", rows)
    result = rolling_under_load(deployment, "recommend", data, rows, "scorer", {"model.onnx": new_scorer},
                                concurrency=2, window_s=3, out_dir=tmp_path)
    # perf_analyzer stops at the first failed request; the witness logs every one of its own
    assert not result.failed, (result.loads, result.witness_failures)
    assert len(result.loads) >= 2 and result.witness_requests > 20
    # the old version's stubs, stopped by Triton, are not mistaken for crashed ones
    assert deployment.replicas.events == []
    assert [(s.replica, s.version) for s in result.steps] == [(0, 2), (1, 2)]
    for i in range(2):
        assert (deployment.replicas.repository_of(i) / "scorer" / "2" / "model.onnx").is_file()
    after = [direct(deployment, i)["ITEM_IDS"] for i in range(2)]
    np.testing.assert_array_equal(after[0], after[1])
    assert not np.array_equal(after[0], before)         # the canary checked it against in-process v2
    np.testing.assert_array_equal(through(deployment)["ITEM_IDS"], after[0])


def test_a_killed_replica_is_routed_around_and_restarted(deployment, repository):
    from recdeploy.perf.gateway_bench import kill_under_load
    from recdeploy.perf.soak import chosen_entry, entry_rows

    rows = entry_rows(repository, chosen_entry(repository, "recommend"), 10, n=256)
    result = kill_under_load(deployment, "recommend", rows, concurrency=2, duration_s=8)
    assert result.restarted_after_s is not None, deployment.replicas.events
    assert result.requests > 50
    # nginx streams a gRPC request body, so it cannot retry the requests in flight on the
    # killed replica; every later one goes to the other replica
    assert result.failures <= 2 * 2 and result.failure_window_s < 2.0, result
    assert deployment.replicas.servers[0] is not None and deployment.replicas.servers[0].is_ready()
    time.sleep(2.5)  # fail_timeout: replica 0 back in rotation
    np.testing.assert_array_equal(through(deployment)["ITEM_IDS"], direct(deployment, 0)["ITEM_IDS"])
