"""The next-basket protocol (metrics, baselines), basket_knn, and every model under the task."""
import numpy as np
import pytest
import torch

from recdeploy.train.config import ConfigError, TrainConfig
from recdeploy.train.models import build_model
from recdeploy.train.models.basket_knn import BasketKNN, cooccurrence_neighbours
from recdeploy.train.tasks import protocol, run_task
from recdeploy.train.tasks.basket_protocol import BasketMetrics, evaluate_baskets, paired_difference
from recdeploy.train.tasks.retrieval import model_scorer
from recdeploy.train.tasks.retrieval_random import evaluate_multi_target

# ---------------------------------------------------------------- metrics


def fixed(scores):
    scores = np.asarray(scores, dtype=np.float32)
    return lambda users: scores[users]


def test_metrics_by_hand_with_repeat_and_explore_items_apart():
    # 12 items; the top-10 list of user 0 is items 0..9 (scores descending), of user 1 the same
    scores = np.tile(np.arange(12, 0, -1), (2, 1))
    targets = [np.array([0, 5, 11]), np.array([10, 11])]      # user 1: no hit
    bought = [np.array([0, 1, 11]), np.array([0])]            # user 0: 0 and 11 are repeats
    m = evaluate_baskets(fixed(scores), np.array([0, 1]), targets, bought)
    discount = 1 / np.log2(np.arange(10) + 2)
    assert m.recall_at_10 == pytest.approx((2 / 3 + 0) / 2)
    assert m.ndcg_at_10 == pytest.approx(((discount[0] + discount[5]) / discount[:3].sum() + 0) / 2)
    assert m.hr_at_10 == 0.5
    assert m.recall_repeat == pytest.approx(1 / 2)     # only user 0 has repeats: 0 found, 11 not
    assert m.recall_explore == pytest.approx((1 + 0) / 2)   # user 0: 5 found; user 1: 10, 11 not
    assert m.repeat_share == pytest.approx((2 / 10 + 1 / 10) / 2)
    assert m.per_user_recall.tolist() == pytest.approx([2 / 3, 0.0])


def test_ties_count_against_the_targets():
    m = evaluate_baskets(fixed(np.zeros((1, 30))), np.array([0]), [np.array([3])], [np.zeros(0, np.int64)])
    assert m.recall_at_10 == 0 and m.hr_at_10 == 0


def test_recall_ndcg_hr_agree_with_the_retrieval_protocols_multi_target_metrics():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 40)).astype(np.float32)
    targets = [np.unique(rng.integers(0, 40, size=rng.integers(1, 12))) for _ in range(50)]
    ours = evaluate_baskets(fixed(scores), np.arange(50), targets, [np.zeros(0, np.int64)] * 50)
    users = np.repeat(np.arange(50), [len(t) for t in targets])
    theirs = evaluate_multi_target(fixed(scores), 50, users, np.concatenate(targets),
                                   np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert (ours.recall_at_10, ours.ndcg_at_10, ours.hr_at_10) == pytest.approx(
        (theirs.recall_at_10, theirs.ndcg_at_10, theirs.hr_at_10), abs=1e-12)


def test_paired_difference_of_a_model_with_itself_is_zero():
    m = BasketMetrics(0.3, 0.3, 0.5, 0.4, 0.0, 0.9, 3, per_user_recall=np.array([0.1, 0.5, 0.3]))
    assert paired_difference(m, m) == {"recall@10": 0.0, "ci95": [0.0, 0.0], "users": 3}


# ---------------------------------------------------------------- basket_knn


def test_cooccurrence_neighbours_are_cosine_ranked_and_row_normalised():
    baskets = [np.array([0, 1]), np.array([0, 1]), np.array([0, 2]), np.array([3])]
    items, weights = cooccurrence_neighbours(baskets, 4, neighbours=2)
    # item 0: in 3 baskets, with 1 twice (cos 2/sqrt(3*2)), with 2 once (1/sqrt(3*1))
    c1, c2 = 2 / np.sqrt(6), 1 / np.sqrt(3)
    assert items[0].tolist() == [1, 2]
    np.testing.assert_allclose(weights[0], [c1 / (c1 + c2), c2 / (c1 + c2)], rtol=1e-6)
    assert items[3].tolist() == [0, 0] and weights[3].tolist() == [0, 0]   # no neighbours


def test_basket_knn_blends_own_frequency_and_neighbours():
    model = BasketKNN(4, neighbours=2, alpha=1.0, decay=0.5, pop_weight=0.0)
    model.fit([np.array([0, 1]), np.array([0, 1]), np.array([2, 3])], np.array([2, 2, 1, 1]))
    items = torch.tensor([[0, 0, 2, -1]])
    ages = torch.tensor([[1, 0, 0, -1]])        # item 0 bought two orders running, item 2 in the last
    own = model(items, ages)[0].numpy()
    np.testing.assert_allclose(own, [1.5 / 2.5, 0, 1 / 2.5, 0], rtol=1e-6)
    model.alpha = 0.0
    near = model(items, ages)[0].numpy()        # 0 -> 1 (its only neighbour), 2 -> 3
    np.testing.assert_allclose(near, [0, 1.5 / 2.5, 0, 1 / 2.5], rtol=1e-6)
    model.pop_weight = 0.5
    empty = model(torch.full((1, 3), -1), torch.full((1, 3), -1))[0].numpy()
    np.testing.assert_allclose(empty, [1 / 6, 1 / 6, 1 / 12, 1 / 12], rtol=1e-6)


@pytest.mark.parametrize("setting, message", [
    ({"alpha": 1.5}, r"alpha must be in \[0, 1\] \(or -1: tuned\), got 1.5"),
    ({"decay": 0.0}, r"decay must be in \(0, 1\] \(or -1: tuned\), got 0.0"),
    ({"neighbours": 0}, r"neighbours must be >= 1 \(or -1: tuned\), got 0"),
])
def test_basket_knn_settings_check_themselves(setting, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(model="basket_knn", dataset="instacart", **setting)


# ---------------------------------------------------------------- the task


@pytest.fixture(scope="module")
def knn_run(shoppers):
    config = TrainConfig(model="basket_knn", dataset="synthetic", neighbours=5)
    return run_task(config, shoppers, progress=False)


def test_basket_knn_is_tuned_on_validation_and_carded_beside_both_baselines(knn_run):
    card = knn_run
    test = card.metrics["test"]
    assert test["users"] == 40 and set(card.baselines) == {"most_popular", "personal_frequency"}
    # the favourites come back: personal frequency is far above popularity on these shoppers
    own = card.baselines["personal_frequency"]["test"]
    assert own["recall@10"] > 2 * card.baselines["most_popular"]["test"]["recall@10"]
    assert own["repeat_share@10"] > 0.5 and test["recall@10"] >= 0.5 * own["recall@10"]
    grid = card.extra["grid"]
    assert len(grid) == 6 * 7 and {g["neighbours"] for g in grid} == {5}
    best = max(grid, key=lambda g: g["valid_recall@10"])["valid_recall@10"]
    assert card.metrics["valid"]["recall@10"] == pytest.approx(best, abs=1e-4)
    assert card.model_args["neighbours"] == 5 and "test" in card.extra["item_knn_only"]
    assert card.extra["vs_personal_frequency"]["users"] == 40


def test_alpha_one_is_the_personal_frequency_baseline_measured_by_the_same_code(shoppers, knn_run):
    decay = knn_run.baselines["personal_frequency"]["decay"]
    config = TrainConfig(model="basket_knn", dataset="synthetic", neighbours=5, alpha=1.0, decay=decay)
    result = run_task(config, shoppers, progress=False)
    assert result.metrics["test"] == result.baselines["personal_frequency"]["test"]
    assert result.extra["vs_personal_frequency"] == {"recall@10": 0.0, "ci95": [0.0, 0.0], "users": 40}


def test_two_tower_trains_under_the_task_and_its_protocol_gives_the_cards_numbers(shoppers):
    config = TrainConfig(model="two_tower", task="next_basket", dataset="synthetic", dim=8, epochs=2,
                         batch_size=256, lr=0.05)
    result = run_task(config, shoppers, progress=False)
    proto = protocol("next_basket", shoppers)
    assert proto.evaluate(model_scorer(result.model), "test").as_dict() == result.metrics["test"]
    assert result.metrics["test"]["recall@10"] > result.baselines["most_popular"]["test"]["recall@10"]
    assert proto.n_train == len(proto.split.train) and result.epochs_run == 2


def test_sasrec_trains_on_the_product_sequence(shoppers):
    config = TrainConfig.for_model("sasrec", task="next_basket", dataset="synthetic", dim=8, max_len=16,
                                   layers=1, heads=1, epochs=1, batch_size=64)
    result = run_task(config, shoppers, progress=False)
    assert result.metrics["test"]["users"] == 40 and result.extra["train_windows"] >= 40
    assert result.model(torch.zeros((1, 3), dtype=torch.long)).shape == (1, shoppers.n_items)


def test_models_without_a_next_basket_trainer_are_refused():
    with pytest.raises(ConfigError, match="model 'neumf' does not train under task 'next_basket'"):
        TrainConfig(model="neumf", task="next_basket", dataset="instacart")


def test_the_protocol_evaluates_the_same_users_on_valid_and_test(shoppers):
    proto = protocol("next_basket", shoppers)
    popular = proto.popularity_baseline("valid")
    assert popular.n_users == 40 and proto.parts["valid"].users.tolist() == proto.parts["test"].users.tolist()
    # validation's history ends one basket earlier than test's
    assert proto.parts["test"].history.lengths().sum() > proto.parts["valid"].history.lengths().sum()
    assert isinstance(build_model("basket_knn", n_items=3), BasketKNN)


def test_a_next_basket_card_is_a_results_row_with_recall_and_the_stronger_baseline(knn_run, shoppers):
    from recdeploy.train.results import row_from_card

    config = TrainConfig(model="basket_knn", dataset="synthetic", neighbours=5)
    row = row_from_card({**knn_run.card(config, shoppers), "dataset": "instacart"})
    own = knn_run.baselines["personal_frequency"]["test"]["recall@10"]
    assert (row.metric, row.ours) == ("recall@10", knn_run.metrics["test"]["recall@10"])
    assert row.baseline == f"personal-frequency {own:.4f}"
    assert row.anchors.startswith("none for this 593-user sample")
