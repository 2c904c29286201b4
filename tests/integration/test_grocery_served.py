"""recommend_basket on the real tritonserver: equal to the in-process pipeline, repeats kept,
the documented fallback for a user with no orders, a bad request a client error."""
import re

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios.grocery import ENSEMBLE, GroceryInProcess, export_grocery
from recdeploy.serve.canary import run_canary
from recdeploy.train.baskets import basket_index, basket_rows, basket_split, user_histories
from recdeploy.train.models.basket_knn import BasketKNN

pytestmark = pytest.mark.integration

CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}
PROTOCOLS = ["grpc", "http"]


@pytest.fixture(scope="module")
def grocery_repository(tmp_path_factory, instacart):
    """basket_knn fitted on the training baskets (no tuning: seconds), exported."""
    index = basket_index(instacart)
    train = basket_split(instacart, index).train
    model = BasketKNN(instacart.n_items, neighbours=10, alpha=0.8, decay=0.8).fit(
        basket_rows(instacart, train, index), np.bincount(instacart.items[train], minlength=instacart.n_items))
    repo = tmp_path_factory.mktemp("grocery_repository")
    export_grocery(model, instacart, repo, {"dataset_fingerprint": instacart.fingerprint()})
    return repo


@pytest.fixture(scope="module")
def grocery_server(grocery_repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=grocery_repository, verify_manifest=True)) as running:
        yield running


@pytest.fixture(scope="module")
def reference(grocery_repository):
    return GroceryInProcess(grocery_repository)


def url(server, protocol):
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_baskets_equal_inprocess_and_keep_repeats(grocery_server, reference, instacart, protocol):
    users = np.sort(np.random.default_rng(3).choice(reference.table.user_ids, size=16, replace=False))
    with RecommendClient(url(grocery_server, protocol), protocol, model=ENSEMBLE) as client:
        one_ids, _ = client.recommend(users[:1], k=10)
        ids, scores = client.recommend(users, k=10)
    want_ids, want_scores = reference.recommend(users, k=10)
    assert ids.shape == (16, 10) and one_ids.tolist() == want_ids[:1].tolist()
    assert np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-7)
    history = user_histories(instacart)
    rows = np.searchsorted(instacart.user_ids, users)
    repeats = [np.isin(ids[r], instacart.item_ids[history.of(int(u))[0]]).sum() for r, u in enumerate(rows)]
    assert np.mean(repeats) >= 8       # products bought before come back: the contract keeps them


def test_the_canary_checks_the_grocery_entry(grocery_server, grocery_repository):
    report = run_canary(grocery_repository, grocery_server.http_url, "http")
    assert report.requests == {ENSEMBLE: 10}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_user_with_no_orders_gets_the_most_popular_products(grocery_server, reference, protocol):
    popular = reference.item_ids[np.argsort(-reference.popularity, kind="stable")[:10]]
    known = int(reference.table.user_ids[0])
    with RecommendClient(url(grocery_server, protocol), protocol, model=ENSEMBLE) as client:
        ids, scores = client.recommend([10 ** 12, -5, known], k=10)
    assert ids[0].tolist() == ids[1].tolist() == popular.tolist()
    assert scores[0, 0] == reference.popularity.max()
    assert ids[2].tolist() == reference.recommend(np.array([known]), k=10)[0][0].tolist()


def served_error(server, protocol, inputs):
    from tritonclient.utils import InferenceServerException

    with RecommendClient(url(server, protocol), protocol, model=ENSEMBLE) as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(inputs, ["ITEM_IDS", "SCORES"])
    return error.value.status(), error.value.message()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", ["K = 0", "K < 0", "K > catalogue", "K differs per row"])
def test_bad_k_is_a_client_error_and_the_server_stays_up(grocery_server, reference, protocol, case):
    n = len(reference.item_ids)
    ks, message = {
        "K = 0": ([0], f"topk: K must be between 1 and the catalogue size {n}, got 0"),
        "K < 0": ([-2], f"topk: K must be between 1 and the catalogue size {n}, got -2"),
        "K > catalogue": ([n + 1], f"topk: K must be between 1 and the catalogue size {n}, got {n + 1}"),
        "K differs per row": ([3, 4], r"topk: K must be the same for every row of a request, got \[3, 4\]"),
    }[case]
    users = reference.table.user_ids[:len(ks)].reshape(-1, 1)
    status, text = served_error(grocery_server, protocol,
                                {"USER_ID": users, "K": np.array(ks, np.int32).reshape(-1, 1)})
    assert status == CLIENT_ERROR[protocol] and re.search(message, text)
    assert grocery_server.is_ready()
    with RecommendClient(url(grocery_server, protocol), protocol, model=ENSEMBLE) as client:
        assert client.recommend(users[:1, 0], k=n)[0].shape == (1, n)   # K = catalogue is allowed


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_user_id_of_the_wrong_shape_is_a_client_error(grocery_server, protocol):
    status, text = served_error(grocery_server, protocol, {"USER_ID": np.array([[1, 2]], np.int64),
                                                           "K": np.array([[5]], np.int32)})
    assert status == CLIENT_ERROR[protocol] and "USER_ID" in text
    assert grocery_server.is_ready()
