"""The Instacart sample as a Dataset, and baskets: index, split, histories."""
import numpy as np
import pytest

from recdeploy.train.baskets import basket_index, basket_rows, basket_split, user_histories
from recdeploy.train.data import DatasetError, load_dataset


def test_the_wheel_holds_593_users_complete_order_histories(instacart):
    ds = instacart
    assert (ds.n_interactions, ds.n_users, ds.n_items) == (150_000, 593, 14_190)
    index = basket_index(ds)
    assert index.n_baskets.sum() == 15_183 and index.n_baskets.min() == 9
    # timestamps are the order numbers 1..n of each user, one basket each
    assert np.array_equal(ds.timestamps, index.ordinal + 1)
    assert ds.item_titles[0] == f"product {ds.item_ids[0]}"


def test_a_local_csv_reads_like_the_wheel_and_a_wrong_one_is_refused(tmp_path):
    good = tmp_path / "df_sample.csv"
    good.write_text(",order_id,user_id,order_number,order_dow,order_hour_of_day,days_since_prior_order,"
                    "product_id,add_to_cart_order,reordered\n"
                    "0,11,7,1,2,8,,196,2.0,0.0\n1,11,7,1,2,8,,14084,1.0,0.0\n2,12,7,2,3,7,15.0,196,1.0,1.0\n")
    ds = load_dataset("instacart", path=tmp_path)
    assert ds.user_ids.tolist() == [7] and ds.item_ids.tolist() == [196, 14084]
    # cart order inside the first basket: 14084 was added first
    assert ds.item_ids[ds.items].tolist() == [14084, 196, 196] and ds.timestamps.tolist() == [1, 1, 2]
    bad = tmp_path / "bad.csv"
    bad.write_text("order_id,user_id,product_id\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"lacks the columns \['order_number', 'add_to_cart_order'\]"):
        load_dataset("instacart", path=bad)
    with pytest.raises(DatasetError, match="no Instacart CSV there"):
        load_dataset("instacart", path=tmp_path / "missing")


@pytest.fixture
def small(make_baskets):
    return make_baskets({1: [[10, 11], [10], [12, 10], [11]],    # 4 baskets
                           2: [[11], [13, 11]],                    # 2 baskets: never evaluated
                           3: [[13], [10, 13], [13, 12]]})


def test_split_last_basket_test_the_one_before_validation(small):
    split = basket_split(small)
    item = small.item_ids[small.items]
    user = small.user_ids[small.users]
    assert sorted(zip(user[split.test], item[split.test])) == [(1, 11), (3, 12), (3, 13)]
    assert sorted(zip(user[split.valid], item[split.valid])) == [(1, 10), (1, 12), (3, 10), (3, 13)]
    assert 2 in user[split.train] and 2 not in user[split.valid] and 2 not in user[split.test]
    assert len(split.train) + len(split.valid) + len(split.test) == small.n_interactions


def test_histories_keep_repeats_in_time_order_with_basket_ages(small):
    before_test = user_histories(small, drop_last=1)
    items, ages = before_test.of(0)
    assert small.item_ids[items].tolist() == [10, 11, 10, 12, 10] and ages.tolist() == [2, 2, 1, 0, 0]
    everything = user_histories(small)
    assert everything.lengths().tolist() == [6, 3, 5]
    padded_items, padded_ages = everything.padded(np.array([1, 0]), width=4)
    assert small.item_ids[padded_items[0, :3]].tolist() == [11, 13, 11] and padded_items[0, 3] == -1
    assert padded_ages[1].tolist() == [2, 1, 1, 0]  # the last 4 of user 1's 6 purchases
    # decay 0.5: item 10 of user 1 before test = 0.25 + 0.5 + 1
    freq = before_test.frequency(np.array([0]), decay=0.5)
    assert freq[0, np.searchsorted(small.item_ids, 10)] == pytest.approx(1.75)
    assert before_test.bought(np.array([0]))[0].tolist() == list(np.searchsorted(small.item_ids, [10, 11, 12]))


def test_basket_rows_groups_each_users_orders(small):
    baskets = basket_rows(small, basket_split(small).train)
    assert sorted(sorted(small.item_ids[b].tolist()) for b in baskets) == [
        [10], [10, 11], [11], [11, 13], [13]]
    assert basket_rows(small, np.zeros(0, np.int64)) == []
