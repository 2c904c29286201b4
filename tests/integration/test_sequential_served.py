"""recommend_next on the real tritonserver equals the in-process sequential pipeline."""
import numpy as np
import pytest
import torch

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios.sequential import ENSEMBLE, SCORER, SequentialInProcess, export_sequential
from recdeploy.train.config import TrainConfig
from recdeploy.train.tasks.sequential import sequential_dataset, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sequential_repository(tmp_path_factory, ml100k):
    """A tiny SASRec trained for one short epoch on ML-100k, exported to its own repository."""
    config = TrainConfig(model="sasrec", dataset="ml-100k", dim=16, max_len=20, layers=1, epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is shared: one thread beats two fighting for cores
    try:
        result = train(config, sequential_dataset(ml100k), progress=False)
    finally:
        torch.set_num_threads(threads)
    repo = tmp_path_factory.mktemp("sequential_repository")
    export_sequential(result.model, ml100k, repo, {"dataset_fingerprint": ml100k.fingerprint()})
    return repo


@pytest.fixture(scope="module")
def sequential_server(sequential_repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=sequential_repository)) as running:
        yield running


@pytest.fixture(scope="module")
def reference(sequential_repository):
    return SequentialInProcess(sequential_repository)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_next_items_equal_inprocess(sequential_server, reference, ml100k, protocol):
    users = np.sort(np.random.default_rng(3).choice(reference.table.user_ids, size=16, replace=False))
    url = sequential_server.grpc_url if protocol == "grpc" else sequential_server.http_url
    with RecommendClient(url, protocol, model=ENSEMBLE) as client:
        one_ids, _ = client.recommend(users[:1], k=10)
        ids, scores = client.recommend(users, k=10)
    want_ids, want_scores = reference.recommend(users, k=10)
    assert ids.shape == (16, 10)
    assert one_ids.tolist() == want_ids[:1].tolist()
    assert np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_unknown_user_gets_cold_start_and_known_users_do_not(sequential_server, reference):
    popular = reference.item_ids[np.argsort(-reference.popularity, kind="stable")[:10]]
    known_user = int(reference.table.user_ids[0])
    with RecommendClient(sequential_server.grpc_url, model=ENSEMBLE) as client:
        ids, scores = client.recommend([10 ** 12, known_user], k=10)
    assert ids[0].tolist() == popular.tolist()
    assert scores[0, 0] == reference.popularity.max()
    assert ids[1].tolist() == reference.recommend(np.array([known_user]), k=10)[0][0].tolist()


def test_scorer_answers_an_explicit_history_including_an_empty_one(sequential_server, reference):
    history = np.zeros((3, 7), dtype=np.int64)
    history[1, -3:] = [5, 17, 42]          # tokens: internal item + 1
    with RecommendClient(sequential_server.grpc_url, model=SCORER) as client:
        scores = client.infer({"HISTORY": history}, ["SCORES"])["SCORES"]
    assert scores.shape == (3, len(reference.item_ids)) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, reference.score_history(history), rtol=1e-5, atol=1e-5)


def test_over_long_history_is_truncated_to_the_last_max_len(sequential_server, reference):
    rng = np.random.default_rng(3)
    history = rng.integers(1, len(reference.item_ids) + 1, size=(2, 50)).astype(np.int64)  # max_len is 20
    with RecommendClient(sequential_server.grpc_url, model=SCORER) as client:
        long = client.infer({"HISTORY": history}, ["SCORES"])["SCORES"]
        last = client.infer({"HISTORY": np.ascontiguousarray(history[:, -20:])}, ["SCORES"])["SCORES"]
    np.testing.assert_allclose(long, last, rtol=1e-5, atol=1e-5)


def test_history_token_beyond_the_vocabulary_is_an_error_and_server_stays_up(sequential_server, reference):
    from tritonclient.utils import InferenceServerException

    bad = np.array([[0, 0, 10 ** 6]], dtype=np.int64)
    with RecommendClient(sequential_server.grpc_url, model=SCORER) as client:
        with pytest.raises(InferenceServerException):
            client.infer({"HISTORY": bad}, ["SCORES"])
        good = client.infer({"HISTORY": np.array([[0, 0, 5]], dtype=np.int64)}, ["SCORES"])["SCORES"]
    assert sequential_server.is_ready() and np.isfinite(good).all()


CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}


def served_error(server, protocol, model, inputs, outputs):
    """(status, message) of a request that must fail: gRPC's status code or HTTP's status."""
    from tritonclient.utils import InferenceServerException

    url = server.grpc_url if protocol == "grpc" else server.http_url
    with RecommendClient(url, protocol, model=model) as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(inputs, outputs)
    return error.value.status(), error.value.message()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("case", ["K = 0", "K < 0", "K > catalogue", "K differs per row"])
def test_bad_k_on_recommend_next_is_a_client_error(sequential_server, reference, protocol, case):
    import re

    n = len(reference.item_ids)     # the sequential catalogue: items with enough history
    ks, message = {
        "K = 0": ([0], f"topk: K must be between 1 and the catalogue size {n}, got 0"),
        "K < 0": ([-2], f"topk: K must be between 1 and the catalogue size {n}, got -2"),
        "K > catalogue": ([n + 1], f"topk: K must be between 1 and the catalogue size {n}, got {n + 1}"),
        "K differs per row": ([3, 4], r"topk: K must be the same for every row of a request, got \[3, 4\]"),
    }[case]
    users = reference.table.user_ids[:len(ks)].reshape(-1, 1)
    status, text = served_error(sequential_server, protocol, ENSEMBLE,
                                {"USER_ID": users, "K": np.array(ks, np.int32).reshape(-1, 1)},
                                ["ITEM_IDS", "SCORES"])
    assert status == CLIENT_ERROR[protocol] and re.search(message, text)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_explicit_history_token_beyond_the_vocabulary_is_a_client_error(sequential_server, protocol):
    """The scorer's Gather refuses the index; ONNX Runtime calls that INVALID_ARGUMENT itself."""
    status, text = served_error(sequential_server, protocol, SCORER,
                                {"HISTORY": np.array([[0, 0, 10 ** 6]], np.int64)}, ["SCORES"])
    assert status == CLIENT_ERROR[protocol]
    assert "INVALID_ARGUMENT" in text and "out of data bounds" in text
