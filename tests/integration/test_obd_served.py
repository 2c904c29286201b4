"""rank_ads on the real tritonserver: equal to the in-process pipeline over gRPC and HTTP,
the documented fallback for unseen context values, every client mistake INVALID_ARGUMENT
(HTTP 400) with the server still answering afterwards."""
import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios.obd import ENSEMBLE, InProcessAds
from recdeploy.serve.canary import run_canary

pytestmark = pytest.mark.integration

CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}
PROTOCOLS = ["grpc", "http"]


@pytest.fixture(scope="module")
def obd_server(obd_repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=obd_repository, verify_manifest=True)) as running:
        yield running


@pytest.fixture(scope="module")
def reference(obd_repository):
    return InProcessAds(obd_repository)


def url(server, protocol):
    return server.grpc_url if protocol == "grpc" else server.http_url


def rank(server, protocol, context, candidates, k):
    context = np.asarray(context, np.int64)
    with RecommendClient(url(server, protocol), protocol, model=ENSEMBLE) as client:
        out = client.infer({"CONTEXT": context, "CANDIDATES": np.asarray(candidates, np.int64),
                            "K": np.full((len(context), 1), k, np.int32)}, ["ITEM_IDS", "SCORES"])
    return out["ITEM_IDS"], out["SCORES"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_ranking_equals_inprocess(obd_server, reference, protocol):
    store = reference.store
    rng = np.random.default_rng(5)
    contexts = store.contexts[rng.choice(len(store.contexts), 16, replace=False)]
    contexts[-1] = [1, 2, 3, 4]                                   # every value unseen: the fallback
    candidates = np.stack([rng.choice(store.item_ids, 25, replace=False) for _ in contexts])
    ids, scores = rank(obd_server, protocol, contexts, candidates, 10)
    want_ids, want_scores = reference.rank(contexts, candidates, 10)
    assert ids.shape == (16, 10) and np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(scores))


def test_canary_over_both_protocols(obd_server, obd_repository):
    for protocol in PROTOCOLS:
        report = run_canary(obd_repository, url(obd_server, protocol), protocol)
        assert report.requests == {ENSEMBLE: 10} and report.max_abs_score_diff < 1e-5


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case,match", [
    ("unknown_item", "outside the ad catalogue"),
    ("repeated_item", "repeats ad"),
    ("empty_candidates", "N >= 1"),
    ("k_zero", "K must be between 1 and the number of candidates"),
    ("k_beyond", "K must be between 1 and the number of candidates 3, got 4"),
    ("short_context", None),
])
def test_bad_requests_are_client_errors_and_the_server_stays_up(obd_server, reference, protocol, case, match):
    from tritonclient.utils import InferenceServerException

    store = reference.store
    context, candidates, k = store.contexts[:1], store.item_ids[None, :3], 2
    if case == "unknown_item":
        candidates = np.array([[store.item_ids[0], 999_999]])
    elif case == "repeated_item":
        candidates = store.item_ids[None, [0, 1, 0]]
    elif case == "empty_candidates":
        candidates = np.zeros((1, 0), np.int64)
    elif case == "k_zero":
        k = 0
    elif case == "k_beyond":
        k = 4
    elif case == "short_context":
        context = store.contexts[:1, :3]
    with pytest.raises(InferenceServerException) as error:
        rank(obd_server, protocol, context, candidates, k)
    assert CLIENT_ERROR[protocol] in str(error.value.status())
    if match:
        assert match in error.value.message()
    ids, _ = rank(obd_server, protocol, store.contexts[:1], store.item_ids[None, :3], 2)
    assert ids.shape == (1, 2)
