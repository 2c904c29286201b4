"""Against the real tritonserver: the ``rank`` and ``recommend_multistage`` ensembles equal
their in-process references (same ids, scores within 1e-5), unknown users and unknown or
repeated candidates behave as documented, and bad K is an error that leaves the server up."""
import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios.multistage import InProcessMultiStage, export_multistage
from recdeploy.export.scenarios.ranking import InProcessRanker

pytestmark = pytest.mark.integration
N_CANDIDATES = 40


@pytest.fixture(scope="module")
def multistage_repo(tmp_path_factory, trained_run, ml100k):
    """A tiny DCN-v2 (seconds on ML-100k) beside the session's two-tower, in one repository."""
    from recdeploy.train.config import TrainConfig
    from recdeploy.train.tasks import ctr

    rows, _ = ctr.ctr_rows(ml100k)
    config = TrainConfig(model="dcn_v2", dataset="ml-100k", dim=8, epochs=1, batch_size=4096,
                         lr=0.01, weight_decay=1e-5, patience=1)
    ranker = ctr.train(config, ml100k, ctr.random_split(rows, 0), progress=False,
                       cross_layers=1, hidden=(16,))
    repo = tmp_path_factory.mktemp("multistage_repo")
    export_multistage(trained_run[1].model, ranker.model, ml100k, repo, n_candidates=N_CANDIDATES,
                      ranker_card=ranker.card(config, ml100k))
    return repo


@pytest.fixture(scope="module")
def ms_server(multistage_repo):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=multistage_repo)) as running:
        yield running


@pytest.fixture(scope="module")
def users(ml100k):
    return np.sort(np.random.default_rng(3).choice(ml100k.user_ids, size=16, replace=False))


def rank(url, user_ids, candidates, k, protocol="grpc"):
    users = np.asarray(user_ids, np.int64).reshape(-1, 1)
    with RecommendClient(url, protocol, model="rank") as client:
        out = client.infer({"USER_ID": users, "CANDIDATES": np.asarray(candidates, np.int64),
                            "K": np.full((len(users), 1), k, np.int32)}, ["ITEM_IDS", "SCORES"])
    return out["ITEM_IDS"], out["SCORES"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_rank_served_equals_inprocess(ms_server, multistage_repo, ml100k, users, protocol):
    rng = np.random.default_rng(5)
    candidates = rng.choice(ml100k.item_ids, size=(len(users), 25), replace=False)
    url = ms_server.grpc_url if protocol == "grpc" else ms_server.http_url
    ids, scores = rank(url, users, candidates, 10, protocol)
    want_ids, want_scores = InProcessRanker(multistage_repo).rank(users, candidates, 10)
    assert ids.shape == (16, 10) and np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_rank_unknown_user_and_unknown_or_repeated_candidates(ms_server, multistage_repo):
    candidates = np.array([[50, 10 ** 9, 181, 50, -1, 1]])
    reference = InProcessRanker(multistage_repo)
    for user in (1, 10 ** 12):                         # a real user, then an unknown one
        ids, scores = rank(ms_server.grpc_url, [user], candidates, 6)
        want_ids, want_scores = reference.rank([user], candidates, 6)
        assert np.array_equal(ids, want_ids)
        assert sorted(ids[0, :3].tolist()) == [1, 50, 181]       # 50 once: the repeat is dropped
        assert ids[0, 3:].tolist() == [-1, -1, -1] and np.all(np.isneginf(scores[0, 3:]))
        np.testing.assert_allclose(scores[0, :3], want_scores[0, :3], rtol=1e-5, atol=1e-5)


def test_multistage_served_equals_inprocess(ms_server, multistage_repo, users):
    with RecommendClient(ms_server.grpc_url, model="recommend_multistage") as client:
        ids, scores = client.recommend(users, k=10)
    reference = InProcessMultiStage(multistage_repo)
    want_ids, want_scores = reference.recommend(users, k=10)
    assert ids.shape == (16, 10) and np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    candidates = reference.candidates(users)
    assert all(set(row) <= set(c) for row, c in zip(ids.tolist(), candidates.tolist()))


def test_multistage_unknown_user_ranks_popular_candidates(ms_server, multistage_repo, ml100k):
    with RecommendClient(ms_server.grpc_url, model="recommend_multistage") as client:
        ids, scores = client.recommend([10 ** 12], k=5)
    want_ids, want_scores = InProcessMultiStage(multistage_repo).recommend([10 ** 12], k=5)
    assert ids.tolist() == want_ids.tolist() and np.all(np.isfinite(scores))
    popular = ml100k.item_ids[np.argsort(-np.bincount(ml100k.items, minlength=ml100k.n_items),
                                         kind="stable")[:N_CANDIDATES]]
    assert set(ids[0].tolist()) <= set(popular.tolist())


def test_k_beyond_candidates_is_an_error_and_server_stays_up(ms_server):
    from tritonclient.utils import InferenceServerException

    with RecommendClient(ms_server.grpc_url, model="recommend_multistage") as client:
        with pytest.raises(InferenceServerException,
                           match=f"K must be between 1 and the number of candidates {N_CANDIDATES}, got 41"):
            client.recommend([1], k=N_CANDIDATES + 1)
        assert client.recommend([1], k=3)[0].shape == (1, 3)


CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}


def served_error(server, protocol, model, inputs):
    """(status, message) of a request that must fail: gRPC's status code or HTTP's status."""
    from tritonclient.utils import InferenceServerException

    url = server.grpc_url if protocol == "grpc" else server.http_url
    with RecommendClient(url, protocol, model=model) as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(inputs, ["ITEM_IDS", "SCORES"])
    return error.value.status(), error.value.message()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("ks, n, message", [
    ([0], 25, "rank_topk: K must be between 1 and the number of candidates 25, got 0"),
    ([26], 25, "rank_topk: K must be between 1 and the number of candidates 25, got 26"),
    ([-1], 25, "got -1"),
    ([3, 4], 25, r"K must be the same for every row of a request, got \[3, 4\]"),
    # no candidates at all: refused before the ranker, whose graph cannot take an empty axis
    ([1], 0, r"ranking_features: CANDIDATES must be \[batch, N >= 1\] with one row per USER_ID row \(1\), "
             r"got \[1, 0\]"),
])
def test_bad_k_on_rank_is_a_client_error(ms_server, ml100k, protocol, ks, n, message):
    import re

    users = ml100k.user_ids[:len(ks)].reshape(-1, 1).astype(np.int64)
    candidates = np.resize(ml100k.item_ids, (len(ks), n)).astype(np.int64)
    status, text = served_error(ms_server, protocol, "rank", {
        "USER_ID": users, "CANDIDATES": candidates, "K": np.array(ks, np.int32).reshape(-1, 1)})
    assert status == CLIENT_ERROR[protocol] and re.search(message, text), text


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("ks, message", [
    ([0], f"K must be between 1 and the number of candidates {N_CANDIDATES}, got 0"),
    ([N_CANDIDATES + 1], f"K must be between 1 and the number of candidates {N_CANDIDATES}, got 41"),
    ([2, 5], r"K must be the same for every row of a request, got \[2, 5\]"),
])
def test_bad_k_on_multistage_is_a_client_error(ms_server, ml100k, protocol, ks, message):
    import re

    users = ml100k.user_ids[:len(ks)].reshape(-1, 1).astype(np.int64)
    status, text = served_error(ms_server, protocol, "recommend_multistage",
                                {"USER_ID": users, "K": np.array(ks, np.int32).reshape(-1, 1)})
    assert status == CLIENT_ERROR[protocol] and re.search(message, text), text
