"""Input and artifact validation in the numpy cores of the python models (no server)."""
import numpy as np
import pytest

from recdeploy.export.scenarios.retrieval import lookup_module, topk_module


@pytest.fixture()
def table():
    return lookup_module.UserTable(user_ids=[10, 20, 30], seen_indptr=[0, 2, 2, 5], seen_items=[1, 3, 0, 2, 4])


def test_user_id_of_the_wrong_shape_is_refused(table):
    with pytest.raises(ValueError, match=r"USER_ID must be \[batch, 1\], got \[2, 2\]"):
        lookup_module.lookup_users(np.ones((2, 2), np.int64), table)


def test_an_empty_batch_gives_empty_outputs(table):
    index, seen, known = lookup_module.lookup_users(np.zeros((0, 1), np.int64), table)
    assert index.shape == (0, 1) and seen.shape == (0, 0) and known.shape == (0, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"user_ids": [20, 10], "seen_indptr": [0, 0, 0], "seen_items": []}, "sorted and unique"),
    ({"user_ids": [], "seen_indptr": [0], "seen_items": []}, "non-empty"),
    ({"user_ids": [1, 2], "seen_indptr": [0, 3, 1], "seen_items": [0]}, "rise from 0 to len"),
])
def test_an_inconsistent_feature_store_is_refused_at_load(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lookup_module.UserTable(**kwargs)


def test_a_truncated_npy_error_names_the_file(tmp_path):
    np.save(tmp_path / "user_ids.npy", np.arange(1000))
    data = (tmp_path / "user_ids.npy").read_bytes()
    (tmp_path / "user_ids.npy").write_bytes(data[:200])
    with pytest.raises(ValueError, match=r"cannot load .*user_ids\.npy"):
        lookup_module.load_npy(str(tmp_path), "user_ids")
    with pytest.raises(ValueError, match=r"cannot load .*item_ids\.npy: FileNotFoundError"):
        topk_module.load_npy(str(tmp_path), "item_ids")


def test_top_k_refuses_inconsistent_internal_tensors():
    item_ids, popularity = np.arange(5), np.zeros(5, np.float32)
    scores = np.zeros((2, 5), np.float32)
    # both come from earlier ensemble steps, not from the client: server faults (INTERNAL)
    with pytest.raises(topk_module.PipelineFault, match="SEEN_ITEMS holds index 7, beyond the catalogue"):
        topk_module.top_k(scores, np.array([[7], [-1]]), np.array([[True], [True]]), 2, popularity, item_ids)
    with pytest.raises(topk_module.PipelineFault, match="IS_KNOWN has 1 rows, SCORES 2"):
        topk_module.top_k(scores, np.array([[1], [-1]]), np.array([[True]]), 2, popularity, item_ids)
