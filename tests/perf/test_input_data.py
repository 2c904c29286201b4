"""perf_analyzer --input-data JSON from real user ids."""
import json

import numpy as np
import pytest

from recdeploy.perf.input_data import InputDataError, make_input_data, read_user_ids, write_input_data


def test_one_step_per_user_in_order():
    data = make_input_data([7, 3, 11], k=10)
    assert data == {"data": [
        {"USER_ID": {"content": [7], "shape": [1]}, "K": {"content": [10], "shape": [1]}},
        {"USER_ID": {"content": [3], "shape": [1]}, "K": {"content": [10], "shape": [1]}},
        {"USER_ID": {"content": [11], "shape": [1]}, "K": {"content": [10], "shape": [1]}},
    ]}


def test_numpy_ids_become_json_ints(tmp_path):
    path = write_input_data(tmp_path / "sub" / "in.json", np.array([5, 6], dtype=np.int64), k=np.int32(3),
                            batch_size=2)
    loaded = json.loads(path.read_text())
    assert [step["USER_ID"]["content"] for step in loaded["data"]] == [[5], [6]]
    assert loaded["data"][0]["K"] == {"content": [3], "shape": [1]}


def test_custom_input_names():
    step = make_input_data([1], k=5, user_input="USER", k_input="TOPK")["data"][0]
    assert set(step) == {"USER", "TOPK"}


@pytest.mark.parametrize("args, message", [
    (([], 10), r"user_ids is empty; pass ids of real users"),
    (([1, 2.5], 10), r"every user id must be an integer, got 2.5"),
    ((["1"], 10), r"every user id must be an integer, got '1'"),
    (([1], 0), r"k must be >= 1, got 0"),
    (([1, 2], 10, 0), r"batch_size must be >= 1, got 0"),
    (([1, 2, 3], 10, 4), r"3 user id\(s\) cannot fill a batch of 4 distinct users"),
])
def test_invalid_input(args, message):
    with pytest.raises(InputDataError, match=message):
        make_input_data(*args)


def test_read_user_ids_from_list_and_file(tmp_path):
    assert read_user_ids("1, 2,3") == [1, 2, 3]
    path = tmp_path / "users.txt"
    path.write_text("# test users of ml-100k\n10\n20,30\n\n40 50  # tail\n")
    assert read_user_ids(str(path)) == [10, 20, 30, 40, 50]
    with pytest.raises(InputDataError, match=r"user ids must be integers .*INT64.*\['1m_1'\]"):
        read_user_ids("1m_1,2")
    with pytest.raises(InputDataError, match=r"user id file .*nope.txt does not exist"):
        read_user_ids(str(tmp_path / "nope.txt"))
