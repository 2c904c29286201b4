"""Bad requests against the real server: each gets a clear error or the documented fallback
(cold start), and afterwards the server is still ready and still answers correctly."""
import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient

pytestmark = pytest.mark.integration

U = np.array([[1]], np.int64)
K5 = np.array([[5]], np.int32)


def assert_still_serving(server, reference):
    assert server.is_ready() and server.failure() is None
    with RecommendClient(server.grpc_url) as client:
        ids, scores = client.recommend([1, 7], k=5)
    want_ids, want_scores = reference.recommend(np.array([1, 7]), k=5)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


ERRORS = {
    "user id FP32": ({"USER_ID": U.astype(np.float32), "K": K5},
                     "inference input 'USER_ID' data-type is 'FP32', but model 'recommend' expects 'INT64'"),
    "user id INT32": ({"USER_ID": U.astype(np.int32), "K": K5}, "data-type is 'INT32'.*expects 'INT64'"),
    "K INT64": ({"USER_ID": U, "K": K5.astype(np.int64)}, "'K' data-type is 'INT64'.*expects 'INT32'"),
    "user id [1,2]": ({"USER_ID": np.array([[1, 2]], np.int64), "K": K5}, "(?i)unexpected shape for input 'USER_ID'"),
    "user id rank 3": ({"USER_ID": np.ones((1, 1, 1), np.int64), "K": K5}, "(?i)shape"),
    "missing K": ({"USER_ID": U}, "expected 2 inputs but got 1"),
    "empty batch": ({"USER_ID": np.zeros((0, 1), np.int64), "K": np.zeros((0, 1), np.int32)},
                    "input byte size mismatch|batch.size"),
    "batch 257 > max 256": ({"USER_ID": np.ones((257, 1), np.int64), "K": np.full((257, 1), 5, np.int32)},
                            "inference request batch-size must be <= 256 for 'recommend'"),
    "K = 0": ({"USER_ID": U, "K": np.array([[0]], np.int32)},
              "topk: K must be between 1 and the catalogue size 1682, got 0"),
    "K < 0": ({"USER_ID": U, "K": np.array([[-3]], np.int32)}, "got -3"),
    "K > catalogue": ({"USER_ID": U, "K": np.array([[1683]], np.int32)}, "catalogue size 1682, got 1683"),
    "K differs per row": ({"USER_ID": np.array([[1], [2]], np.int64), "K": np.array([[3], [4]], np.int32)},
                          "K must be the same for every row of a request"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_request_is_a_clear_error_and_the_server_stays_up(rel_server, reference, case):
    from tritonclient.utils import InferenceServerException

    inputs, message = ERRORS[case]
    with RecommendClient(rel_server.grpc_url) as client:
        with pytest.raises(InferenceServerException, match=message):
            client.infer(inputs, ["ITEM_IDS", "SCORES"])
    assert_still_serving(rel_server, reference)


CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("case", list(ERRORS))
def test_every_bad_request_is_a_client_error_over_both_protocols(rel_server, case, protocol):
    """Triton's own checks (dtype, shape, batch) and the python models' (K) agree: the client's
    mistake is INVALID_ARGUMENT / HTTP 400, never INTERNAL / 500 (a server fault to monitoring)."""
    import re

    from tritonclient.utils import InferenceServerException

    inputs, message = ERRORS[case]
    url = rel_server.grpc_url if protocol == "grpc" else rel_server.http_url
    with RecommendClient(url, protocol) as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(inputs, ["ITEM_IDS", "SCORES"])
    assert error.value.status() == CLIENT_ERROR[protocol]
    assert re.search(message, error.value.message())


@pytest.mark.parametrize("model, version, message", [
    ("no_such_model", "", "Request for unknown model: 'no_such_model' is not found"),
    ("recommend", "7", "Request for unknown model: 'recommend' version 7 is not found"),
    ("../recommend", "", "unknown model"),
])
def test_unknown_model_or_version_is_not_found(rel_server, reference, model, version, message):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(rel_server.grpc_url)
    tensors = []
    for name, array in (("USER_ID", U), ("K", K5)):
        tensors.append(grpcclient.InferInput(name, list(array.shape), "INT64" if name == "USER_ID" else "INT32"))
        tensors[-1].set_data_from_numpy(array)
    with pytest.raises(InferenceServerException, match=message):
        client.infer(model, tensors, model_version=version)
    assert_still_serving(rel_server, reference)


def test_negative_out_of_vocabulary_and_unknown_users_get_the_cold_start_list(rel_server, reference, ml100k):
    popular = ml100k.item_ids[np.argsort(-np.bincount(ml100k.items, minlength=ml100k.n_items),
                                         kind="stable")[:10]]
    # -1, int64 min, one past the largest id, a gap-free id that is not a user, int64 max
    odd = [-1, np.iinfo(np.int64).min, int(ml100k.user_ids.max()) + 1, 0, np.iinfo(np.int64).max]
    with RecommendClient(rel_server.grpc_url) as client:
        ids, scores = client.recommend(odd + [1], k=10)
    for row in range(len(odd)):
        assert ids[row].tolist() == popular.tolist()
        assert scores[row, 0] == 583.0  # the most popular item's interaction count
    assert ids[-1].tolist() == reference.recommend(np.array([1]), k=10)[0][0].tolist()
    assert_still_serving(rel_server, reference)


def test_k_equal_to_the_catalogue_pads_with_minus_one(rel_server, reference, ml100k):
    with RecommendClient(rel_server.grpc_url) as client:
        ids, scores = client.recommend([1], k=ml100k.n_items)
    seen = int(np.sum(ml100k.users == 0))  # user 1 is internal user 0
    assert ids.shape == (1, 1682)
    assert (ids[0, -seen:] == -1).all() and (ids[0, :-seen] >= 0).all()
    assert np.isneginf(scores[0, -seen:]).all()
    assert_still_serving(rel_server, reference)
