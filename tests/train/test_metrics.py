import numpy as np
import pytest

from recdeploy.train.metrics import evaluate_full_ranking, hr_ndcg_at_k, popularity_scorer, rank_of_target


def test_rank_excludes_known_items_and_counts_ties_against_target():
    scores = np.array([[5.0, 4.0, 3.0, 3.0, 1.0]])
    assert rank_of_target(scores, np.array([2]), [np.array([], dtype=int)]).tolist() == [3]
    # excluding items 0 and 1 lifts the target; the tie with item 3 still counts against it
    assert rank_of_target(scores, np.array([2]), [np.array([0, 1])]).tolist() == [1]


def test_hr_ndcg_exact():
    hr, ndcg = hr_ndcg_at_k(np.array([0, 1, 10, 50]), k=10)
    assert hr == pytest.approx(0.5)
    assert ndcg == pytest.approx((1.0 + 1 / np.log2(3)) / 4)


def test_constant_scorer_earns_nothing():
    metrics = evaluate_full_ranking(popularity_scorer(np.zeros(20)), np.arange(5),
                                    np.arange(5), [np.array([], dtype=int)] * 5)
    assert metrics.hr_at_10 == 0.0 and metrics.ndcg_at_10 == 0.0 and metrics.n_users == 5
