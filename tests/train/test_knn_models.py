"""item_knn and user_knn: the formulas on toy data, checkpoints, and the protocols on ML-100k."""
import numpy as np
import pytest
import torch

from recdeploy.train.checkpoint import load_checkpoint, save_checkpoint
from recdeploy.train.config import ConfigError, TrainConfig
from recdeploy.train.data import Dataset
from recdeploy.train.models.item_knn import ItemKNNConfig
from recdeploy.train.models.user_knn import NotServableError, UserKNNConfig
from recdeploy.train.tasks import fit_closed_form, run_task


def toy(users, items, ratings, n_users, n_items) -> Dataset:
    n = len(users)
    return Dataset(name="toy", user_ids=np.arange(1, n_users + 1), item_ids=np.arange(1, n_items + 1),
                   item_titles=tuple(f"item {i}" for i in range(n_items)), users=np.asarray(users),
                   items=np.asarray(items), ratings=np.asarray(ratings, np.float32),
                   timestamps=np.arange(n, dtype=np.int64))


def test_item_knn_scores_sum_the_similarities_of_the_candidates_neighbours_the_user_chose():
    rng = np.random.default_rng(0)
    chosen = rng.random((12, 6)) < 0.5
    users, items = np.nonzero(chosen)
    ds = toy(users, items, np.ones(len(users)), 12, 6)
    config = TrainConfig(model="item_knn", neighbours=2, shrink=0.5)
    model, args = fit_closed_form(config, ds, np.arange(ds.n_interactions))
    x = chosen.astype(np.float64)
    norms = np.sqrt(x.sum(0))
    s = (x.T @ x) / (np.outer(norms, norms) + 0.5 + 1e-6)
    np.fill_diagonal(s, 0)
    w = np.zeros_like(s)                       # W[j, i]: the 2 items most similar to j
    for j in range(6):
        top = sorted(np.flatnonzero(s[j] > 0), key=lambda i: (-s[j, i], i))[:2]
        w[j, top] = s[j, top]
    got = model.score_all(torch.arange(12)).numpy()
    assert got == pytest.approx(x @ w.T, abs=1e-5)
    assert args == {"n_users": 12, "n_items": 6, "neighbours": 2, "n_history": len(users)}
    served = model.retrieval_scorer()(torch.arange(12)[:, None]).detach().numpy()
    assert served == pytest.approx(got, abs=1e-6)


def test_item_knn_checkpoint_round_trip_scores_the_same(tmp_path, ml100k):
    config = TrainConfig(model="item_knn", neighbours=20)
    model, args = fit_closed_form(config, ml100k, np.arange(0, ml100k.n_interactions, 2))
    save_checkpoint(tmp_path, model, config, {"model_args": args})
    loaded = load_checkpoint(tmp_path).model
    users = torch.tensor([0, 5, 900])
    assert torch.equal(loaded.score_all(users), model.score_all(users))


def test_item_knn_beats_most_popular_under_retrieval_random(ml100k):
    result = run_task(TrainConfig.for_model("item_knn", dataset="ml-100k"), ml100k, progress=False)
    ours, popular = result.metrics["test"]["ndcg@10"], result.baselines["most_popular"]["test"]["ndcg@10"]
    assert ours > 1.5 * popular and result.epochs_run == 0


def brute_force_user_knn(users, items, ratings, n_users, k, shrink, u, i):
    """The formulas written out per pair, the slow way."""
    r = {(a, b): c for a, b, c in zip(users, items, ratings)}
    mean = {a: np.mean([c for (x, _), c in r.items() if x == a]) for a in range(n_users)}

    def sim(a, b):
        common = [j for (x, j) in r if x == a and (b, j) in r]
        if len(common) < 2:
            return 0.0
        da = np.array([r[a, j] - mean[a] for j in common])
        db = np.array([r[b, j] - mean[b] for j in common])
        den = np.sqrt((da ** 2).sum() * (db ** 2).sum())
        return 0.0 if den < 1e-6 else float(da @ db / den) * len(common) / (len(common) + shrink)

    raters = [v for (v, j) in r if j == i and v != u]
    sims = sorted(((sim(u, v), v) for v in raters if sim(u, v) > 0), reverse=True)[:k]
    weight = sum(s for s, _ in sims)
    vote = sum(s * (r[v, i] - mean[v]) for s, v in sims)
    return mean[u] + (vote / weight if weight > 0 else 0.0)


def test_user_knn_predictions_follow_the_mean_centred_pearson_formulas():
    rng = np.random.default_rng(1)
    chosen = rng.random((9, 8)) < 0.7
    users, items = np.nonzero(chosen)
    ratings = rng.integers(1, 6, size=len(users)).astype(np.float32)
    ds = toy(users, items, ratings, 9, 8)
    config = TrainConfig(model="user_knn", neighbours=3, shrink=2.0)
    model, _ = fit_closed_form(config, ds, np.arange(ds.n_interactions))
    pairs = [(u, i) for u in range(9) for i in range(8)]
    got = model(torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])).numpy()
    want = [brute_force_user_knn(users, items, ratings, 9, 3, 2.0, u, i) for u, i in pairs]
    assert got == pytest.approx(np.array(want), abs=1e-4)


def test_user_knn_beats_the_global_mean_and_its_checkpoint_predicts_the_same(tmp_path, ml100k):
    config = TrainConfig.for_model("user_knn", dataset="ml-100k")
    result = run_task(config, ml100k, progress=False)
    assert result.metrics["test"]["rmse"] < 0.96 < result.baselines["global_mean"]["test"]["rmse"]
    save_checkpoint(tmp_path, result.model, config, result.card(config, ml100k))
    loaded = load_checkpoint(tmp_path).model
    users, items = torch.tensor([0, 1, 2]), torch.tensor([10, 20, 30])
    assert torch.equal(loaded(users, items), result.model(users, items))
    with pytest.raises(NotServableError, match="user_knn predicts ratings pair by pair"):
        loaded.retrieval_scorer()


@pytest.mark.parametrize("config, message", [
    (lambda: ItemKNNConfig(neighbours=0), "neighbours must be >= 1, got 0"),
    (lambda: UserKNNConfig(shrink=-1.0), "shrink must be >= 0, got -1.0"),
    (lambda: TrainConfig(model="user_knn", dim=8, reg=0.1), r"unknown config keys \['reg'\]"),
])
def test_bad_settings_are_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        config()


def test_results_table_sets_recbole_itemknn_beside_item_knn_on_ml1m():
    from recdeploy.train.results import row_from_card

    card = {"model": "item_knn", "task": "retrieval_random", "dataset": "ml-1m", "split": "s", "protocol": "p",
            "metrics": {"test": {"ndcg@10": 0.236, "hr@10": 0.71}},
            "baselines": {"most_popular": {"test": {"ndcg@10": 0.12}}}}
    row = row_from_card(card)
    assert row.metric == "ndcg@10" and "ItemKNN 0.2389 (RecBole general benchmark, k 250, shrink 1.2)" in row.anchors
