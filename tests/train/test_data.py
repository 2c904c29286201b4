import numpy as np
import pytest

from recdeploy.train.data import (
    Dataset,
    DatasetError,
    item_popularity,
    leave_one_out,
    load_dataset,
    seen_items_by_user,
    synthetic,
)


def tiny_dataset():
    # user 0: 4 interactions (two share a timestamp), user 1: 3, user 2: only 2
    users = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    items = np.array([0, 1, 2, 3, 3, 2, 1, 0, 1])
    ts = np.array([10, 20, 30, 30, 5, 1, 9, 1, 2])
    return Dataset(name="tiny", user_ids=np.array([10, 20, 30]), item_ids=np.array([100, 101, 102, 103]),
                   item_titles=("a", "b", "c", "d"), users=users, items=items,
                   ratings=np.ones(9, dtype=np.float32), timestamps=ts)


def test_leave_one_out_takes_last_by_time_with_stable_ties():
    split = leave_one_out(tiny_dataset())
    # user 0: rows 2 and 3 tie at t=30; the later row (3) is test, row 2 validation
    # user 1: by time rows 5 (t=1), 4 (t=5), 6 (t=9): row 6 test, row 4 validation
    assert split.test.tolist() == [3, 6]
    assert split.valid.tolist() == [2, 4]
    # user 2 has fewer than 3 interactions: all in train
    assert split.train.tolist() == [0, 1, 5, 7, 8]


def test_split_is_deterministic_and_partitions_rows(ml100k):
    a, b = leave_one_out(ml100k), leave_one_out(ml100k)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.valid, b.valid)
    everything = np.concatenate([a.train, a.valid, a.test])
    assert len(everything) == ml100k.n_interactions == len(np.unique(everything))
    assert len(a.test) == len(a.valid) == ml100k.n_users == 943


def test_ml100k_shape(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1682, 100_000)
    assert ml100k.item_titles[0] == "Toy Story"
    assert ml100k.item_features["genres"].shape == (1682, 19)
    assert set(ml100k.user_features) == {"age", "gender", "occupation", "zip_code"}


def test_seen_items_and_popularity():
    ds = tiny_dataset()
    seen = seen_items_by_user(ds, np.arange(9))
    assert [s.tolist() for s in seen] == [[0, 1, 2, 3], [1, 2, 3], [0, 1]]
    assert item_popularity(ds, np.arange(9)).tolist() == [2, 3, 2, 2]


def test_synthetic_is_seeded_and_skewed():
    a, b = synthetic(200, 500, 10, seed=3), synthetic(200, 500, 10, seed=3)
    assert np.array_equal(a.items, b.items)
    assert not np.array_equal(a.items, synthetic(200, 500, 10, seed=4).items)
    counts = np.sort(np.bincount(a.items, minlength=500))[::-1]
    assert counts[:25].sum() > 4 * counts[-250:].sum()  # popularity skew
    assert a.n_interactions == 2000 and a.fingerprint() == b.fingerprint()


def test_unknown_dataset_and_missing_local_files(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'ml-20m'; valid: ") as error:
        load_dataset("ml-20m")
    # every registered dataset is listed (new ones register themselves: no fixed order)
    assert {"ml-100k", "ml-1m", "synthetic", "instacart"} <= set(str(error.value).split("valid: ")[1].split(", "))
    with pytest.raises(DatasetError, match="lacks .*ml-100k.inter"):
        load_dataset("ml-100k", path=tmp_path)


def test_local_path_reads_atomic_files(tmp_path):
    (tmp_path / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t4\t100\n2\t5\t3\t101\n1\t6\t5\t102\n")
    (tmp_path / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "5\tFive\t1995\tDrama\n6\tSix\t1996\tComedy Drama\n")
    (tmp_path / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t20\tM\tx\t1\n2\t30\tF\ty\t2\n")
    ds = load_dataset("ml-100k", path=tmp_path)
    assert ds.user_ids.tolist() == [1, 2] and ds.item_ids.tolist() == [5, 6]
    assert ds.items.tolist() == [0, 0, 1] and ds.item_titles == ("Five", "Six")
    assert ds.item_features["genres"].tolist() == [[0, 1], [1, 1]]  # vocab: Comedy, Drama
