"""The numpy cores of the python-backend models, tested directly (no server)."""
import numpy as np
import pytest

from recdeploy.export.scenarios.retrieval import lookup_module, topk_module


@pytest.fixture()
def table():
    # users 10, 20, 30; user 20 has seen nothing
    return lookup_module.UserTable(user_ids=[10, 20, 30], seen_indptr=[0, 2, 2, 5],
                                   seen_items=[1, 3, 0, 2, 4])


def test_lookup_known_unknown_and_padding(table):
    index, seen, known = lookup_module.lookup_users(np.array([[30], [99], [10], [20], [-5]]), table)
    assert index.ravel().tolist() == [2, 0, 0, 1, 0]
    assert known.ravel().tolist() == [True, False, True, True, False]
    assert seen.tolist() == [[0, 2, 4], [-1, -1, -1], [1, 3, -1], [-1, -1, -1], [-1, -1, -1]]


def test_lookup_rejects_float_ids(table):
    with pytest.raises(ValueError, match="USER_ID must be an integer tensor, got float32"):
        lookup_module.lookup_users(np.array([1.5], dtype=np.float32), table)


def test_top_k_removes_seen_and_orders_ties_by_index():
    item_ids = np.array([100, 101, 102, 103, 104])
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.7]], dtype=np.float32)
    ids, best = topk_module.top_k(scores, np.array([[1, -1]]), np.array([[True]]), 3,
                                  np.zeros(5, np.float32), item_ids)
    assert ids.tolist() == [[102, 104, 100]]
    assert best[0].tolist() == pytest.approx([0.9, 0.7, 0.5])


def test_top_k_cold_start_uses_popularity_and_pads_when_exhausted():
    item_ids = np.array([100, 101, 102])
    popularity = np.array([3.0, 9.0, 1.0], dtype=np.float32)
    scores = np.zeros((2, 3), np.float32)
    seen = np.array([[-1, -1], [0, 2]])
    ids, best = topk_module.top_k(scores, seen, np.array([[False], [True]]), 3, popularity, item_ids)
    assert ids[0].tolist() == [101, 100, 102]
    assert ids[1].tolist() == [101, -1, -1]  # only one unseen item left
    assert np.isneginf(best[1, 1:]).all()


@pytest.mark.parametrize("k, message", [
    (np.array([0], np.int32), "K must be between 1 and the catalogue size 5, got 0"),
    (np.array([6], np.int32), "K must be between 1 and the catalogue size 5, got 6"),
    (np.array([-3], np.int32), "got -3"),
    (np.array([2.0], np.float32), "K must be an integer tensor"),
    (np.array([2, 3], np.int32), "K must be the same for every row"),
    (np.array([], np.int32), "K is empty"),
])
def test_bad_k_is_a_clear_error(k, message):
    with pytest.raises(topk_module.BadRequest, match=message):
        topk_module.parse_k(k, 5)


def test_top_k_rejects_wrong_catalogue_width():
    # SCORES comes from the scorer step (Triton checks the client's shapes against the config):
    # a width that disagrees with item_ids.npy is a broken deployment, answered INTERNAL
    with pytest.raises(topk_module.PipelineFault, match=r"SCORES must be \[batch, 3\], got \[1, 4\]"):
        topk_module.top_k(np.zeros((1, 4)), np.zeros((1, 0)), np.ones((1, 1), bool), 1,
                          np.zeros(3, np.float32), np.arange(3))
