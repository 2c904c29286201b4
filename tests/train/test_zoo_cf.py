"""Model zoo, CF part: biased MF (rating), NeuMF and two-tower with side features (retrieval_random).

Tiny synthetic data only; the ML-1M numbers are in docs/results.md.
"""
import json

import numpy as np
import pytest
import torch

from recdeploy.train.config import ConfigError, TrainConfig
from recdeploy.train.data import DatasetError, filter_ratings, random_split, synthetic
from recdeploy.train.models import build_model
from recdeploy.train.tasks import run_task
from recdeploy.train.tasks.rating import fit_baseline, rmse
from recdeploy.train.tasks.retrieval_random import evaluate_multi_target


@pytest.fixture(scope="module")
def tiny():
    return synthetic(n_users=60, n_items=40, interactions_per_user=12, seed=3)


def _scores(table):
    table = np.asarray(table, dtype=np.float32)
    return lambda users: table[users]


class TestMultiTargetMetric:
    def test_exact_values_on_hand_made_scores(self):
        # 2 users, 5 items. user 0: targets {0, 3}, item 1 excluded; user 1: target {4}
        scores = [[0.9, 5.0, 0.1, 0.8, 0.2],   # ranking after exclusion: 0, 3, 4, 2
                  [0.5, 0.4, 0.3, 0.2, 0.1]]   # target 4 is last (position 4)
        m = evaluate_multi_target(_scores(scores), 2, np.array([0, 0, 1]), np.array([0, 3, 4]),
                                  np.array([0]), np.array([1]), k=2)
        # user 0: both targets at positions 0,1 -> NDCG 1, recall 1; user 1: no hit in top 2
        assert m.ndcg_at_10 == pytest.approx(0.5)
        assert m.hr_at_10 == pytest.approx(0.5) and m.recall_at_10 == pytest.approx(0.5)
        assert m.n_users == 2

    def test_partial_hits_and_users_without_targets(self):
        scores = [[0.1, 0.9, 0.8, 0.3], [1, 1, 1, 1], [0.0, 0.0, 0.0, 1.0]]
        # user 0: targets {0, 2}: item 2 at position 1, item 0 last; user 1 has no target
        # user 2: all tied but item 3; target 0 tied with non-targets ranks below them (pessimistic)
        m = evaluate_multi_target(_scores(scores), 3, np.array([0, 0, 2]), np.array([0, 2, 0]),
                                  np.zeros(0, np.int64), np.zeros(0, np.int64), k=3)
        ideal = 1 + 1 / np.log2(3)
        assert m.n_users == 2
        assert m.ndcg_at_10 == pytest.approx(((1 / np.log2(3)) / ideal + 0.0) / 2)
        assert m.recall_at_10 == pytest.approx((0.5 + 0.0) / 2)
        assert m.hr_at_10 == pytest.approx(0.5)


class TestSplitsAndFilters:
    def test_random_split_by_user_follows_recbole_counts(self, tiny):
        split = random_split(tiny, (0.8, 0.1, 0.1), seed=1, by_user=True)
        assert len(np.intersect1d(split.train, split.test)) == 0
        assert len(split.train) + len(split.valid) + len(split.test) == tiny.n_interactions
        # 12 per user -> 10 / 1 / 1
        assert np.all(np.bincount(tiny.users[split.test], minlength=60) == 1)
        assert np.all(np.bincount(tiny.users[split.train], minlength=60) == 10)
        again = random_split(tiny, (0.8, 0.1, 0.1), seed=1, by_user=True)
        assert np.array_equal(again.test, split.test)
        assert not np.array_equal(random_split(tiny, seed=2, by_user=True).test, split.test)

    def test_global_split_sizes_and_bad_ratios(self, tiny):
        split = random_split(tiny, (0.8, 0.1, 0.1), seed=0)
        assert (len(split.train), len(split.valid), len(split.test)) == (576, 72, 72)
        with pytest.raises(DatasetError, match=r"ratios must be three non-negative numbers summing to 1"):
            random_split(tiny, (0.8, 0.3, 0.1))

    def test_filter_keeps_indices(self, tiny):
        kept = filter_ratings(tiny, 3.0)
        assert kept.n_users == tiny.n_users and kept.n_items == tiny.n_items
        assert kept.n_interactions == int((tiny.ratings >= 3).sum()) and kept.ratings.min() >= 3


class TestRating:
    def test_rmse_and_baseline_recover_known_biases(self):
        rng = np.random.default_rng(0)
        users, items = rng.integers(0, 20, 4000), rng.integers(0, 30, 4000)
        b_u, b_i = rng.normal(size=20) * 0.5, rng.normal(size=30) * 0.5
        ratings = 3.0 + b_u[users] + b_i[items]
        mu, fu, fi = fit_baseline(users, items, ratings, 20, 30, reg_user=0, reg_item=0, sweeps=50)
        assert rmse(mu + fu[users] + fi[items], ratings) < 1e-6
        assert rmse(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(1.0)

    def test_biased_mf_beats_global_mean_and_is_seeded(self, tiny):
        config = TrainConfig(model="biased_mf", dataset="synthetic", dim=4, epochs=8,
                             batch_size=128, lr=0.05, reg=0.05, patience=8)
        first, second = run_task(config, tiny, progress=False), run_task(config, tiny, progress=False)
        assert first.metrics == second.metrics
        # the synthetic ratings are noise around 3, so only the global mean is learnable
        assert first.metrics["test"]["rmse"] < first.baselines["global_mean"]["test"]["rmse"] + 0.05
        assert first.model_args["global_mean"] == pytest.approx(
            float(tiny.ratings[random_split(tiny, seed=0).train].mean()), abs=1e-5)

    def test_served_scorer_equals_score_all(self):
        model = build_model("biased_mf", n_users=7, n_items=9, dim=3, global_mean=3.5)
        torch.nn.init.normal_(model.user_bias.weight)
        users = torch.arange(7)
        expected = model.score_all(users)
        assert torch.allclose(model.retrieval_scorer()(users[:, None]), expected, atol=1e-5)
        assert torch.allclose(expected[2, 4], model(torch.tensor([2]), torch.tensor([4]))[0])


class TestRetrievalRandom:
    def test_same_seed_same_metrics(self, tiny):
        config = TrainConfig(model="neumf", dataset="synthetic", dim=8, epochs=2, batch_size=256,
                             lr=0.01, patience=2)
        first, second = run_task(config, tiny, progress=False), run_task(config, tiny, progress=False)
        assert first.metrics == second.metrics and first.baselines == second.baselines
        assert set(first.metrics["test"]) == {"ndcg@10", "hr@10", "recall@10", "users"}

    def test_two_tower_trains_under_the_random_protocol_when_asked(self, tiny):
        config = TrainConfig(model="two_tower", task="retrieval_random", dataset="synthetic", dim=8,
                             epochs=1, batch_size=256, patience=1)
        result = run_task(config, tiny, progress=False)
        card = result.card(config, tiny)
        assert card["task"] == "retrieval_random" and "8:1:1" in card["split"]
        assert set(result.metrics["test"]) == {"ndcg@10", "hr@10", "recall@10", "users"}
        with pytest.raises(ConfigError, match="model 'two_tower' does not train under task 'ctr'"):
            TrainConfig(model="two_tower", task="ctr")

    def test_neumf_score_all_matches_pairwise_forward(self):
        model = build_model("neumf", n_users=5, n_items=6, dim=8).eval()
        with torch.no_grad():
            grid = model.score_all(torch.arange(5))
            pairs = model(torch.arange(5).repeat_interleave(6), torch.arange(6).repeat(5))
            served = model.retrieval_scorer()(torch.arange(5)[:, None])
        assert grid.shape == (5, 6)
        assert torch.allclose(grid.reshape(-1), pairs, atol=1e-6)
        assert torch.allclose(served, grid, atol=1e-6)

    def test_neumf_score_items_matches_pairwise_forward(self):
        model = build_model("neumf", n_users=5, n_items=7, dim=8).eval()
        users, items = torch.tensor([0, 3]), torch.tensor([1, 6, 2])
        with torch.no_grad():
            subset = model.score_items(users, items)
            pairs = torch.stack([model(users, torch.full((2,), int(i))) for i in items], 1)
        assert torch.allclose(subset, pairs, atol=1e-6)

    def test_neumf_sampled_softmax_fits_a_batch_and_masks_accidental_hits(self):
        from recdeploy.train.tasks.retrieval_random import _loss
        torch.manual_seed(0)
        config = TrainConfig(model="neumf", dim=8, loss="sampled_softmax", negatives=6, reg=0.0)
        model = build_model("neumf", n_users=10, n_items=6, dim=8)
        users, items = torch.arange(10), torch.arange(10) % 6
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        losses = []
        for step in range(30):
            loss = _loss(model, config, users, items, torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        # 6 negatives over 6 items: every row meets its own positive among them, masked, so finite
        assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses

    def test_neumf_gmf_scores_are_the_model_with_the_mlp_share_zeroed(self):
        model = build_model("neumf", n_users=5, n_items=6, dim=8, mlp_dim=4).eval()
        assert model.mlp_user.weight.shape == (5, 4) and model.out.in_features == 8 + 2
        with torch.no_grad():
            model.out.weight[0, 8:] = 0.0
            assert torch.allclose(model.gmf_scores(torch.arange(5)), model.score_all(torch.arange(5)),
                                  atol=1e-6)
            served = model.retrieval_scorer()(torch.arange(5)[:, None])
        assert torch.allclose(served, model.score_all(torch.arange(5)), atol=1e-6)

    def test_neumf_gmf_pretraining_then_joint_is_seeded_and_recorded(self, tiny, tmp_path):
        from recdeploy.train.checkpoint import load_checkpoint, save_checkpoint
        config = TrainConfig(model="neumf", dataset="synthetic", dim=8, mlp_dim=4, pretrain_epochs=2,
                             epochs=1, batch_size=256, lr=0.01, patience=2, loss="sampled_softmax",
                             negatives=16, reg=0.0)
        first, second = run_task(config, tiny, progress=False), run_task(config, tiny, progress=False)
        assert first.metrics == second.metrics
        assert first.model_args["mlp_dim"] == 4
        save_checkpoint(tmp_path, first.model, config, first.card(config, tiny))
        loaded = load_checkpoint(tmp_path)
        assert loaded.config.pretrain_epochs == 2 and loaded.model.mlp_dim == 4
        # GMF pretraining is NeuMF's setting: a two-tower config refuses it when built
        with pytest.raises(ValueError, match=r"unknown config keys \['pretrain_epochs'\] for model "
                                             r"'two_tower' \(pretrain_epochs is a setting of neumf\)"):
            run_task(TrainConfig(model="two_tower", task="retrieval_random", dataset="synthetic",
                                 dim=8, epochs=1, pretrain_epochs=1), tiny, progress=False)

    def test_feature_two_tower_uses_features_and_checkpoints_them(self, tiny, tmp_path):
        from recdeploy.train.checkpoint import load_checkpoint, save_checkpoint
        config = TrainConfig(model="two_tower_features", dataset="synthetic", dim=8, epochs=1,
                             batch_size=256, patience=1)
        result = run_task(config, tiny, progress=False)
        model = result.model
        with torch.no_grad():
            model.item_tower.year_code[:] = 5      # buffers travel with the weights
            save_checkpoint(tmp_path, model, config, result.card(config, tiny))
            loaded = load_checkpoint(tmp_path).model
            users = torch.arange(tiny.n_users)
            assert torch.allclose(loaded.score_all(users), model.score_all(users), atol=1e-6)
            assert torch.allclose(loaded.retrieval_scorer()(users[:, None]), model.score_all(users),
                                  atol=1e-5)
        assert result.metrics["test"]["users"] == result.baselines["most_popular"]["test"]["users"]


def test_tiny_neumf_exports_with_onnx_parity(tiny, tmp_path):
    from recdeploy.export.scenarios.retrieval import export_retrieval
    torch.manual_seed(0)
    model = build_model("neumf", n_users=tiny.n_users, n_items=tiny.n_items, dim=8).eval()
    for table in (model.gmf_user, model.gmf_item, model.mlp_user, model.mlp_item):
        torch.nn.init.normal_(table.weight)      # spread scores out, so parity means something
    parity = export_retrieval(model, tiny, tmp_path / "repo")
    assert parity.max_abs_diff["SCORES"] < 1e-4
    assert (tmp_path / "repo" / "scorer" / "1" / "model.onnx").is_file()
    manifest = json.loads((tmp_path / "repo" / "recdeploy.json").read_text())
    assert manifest["n_items"] == 40


def test_config_errors():
    with pytest.raises(ConfigError, match="reg must be >= 0, got -1"):
        TrainConfig(model="biased_mf", reg=-1)
    with pytest.raises(ConfigError, match="negatives must be >= 1, got 0"):
        TrainConfig(model="neumf", negatives=0)
    with pytest.raises(ConfigError, match="unknown loss 'hinge'; valid: bce, sampled_softmax"):
        TrainConfig(model="neumf", loss="hinge")


def test_results_table_sets_anchor_beside_ours(tmp_path, capsys):
    from recdeploy.train.evaluate_cli import main
    card = {"model": "biased_mf", "dataset": "ml-1m", "split": "random 80/10/10",
            "protocol": "RMSE", "metrics": {"test": {"rmse": 0.85, "ratings": 100}},
            "baselines": {"biases": {"test": {"rmse": 0.90}}, "global_mean": {"test": {"rmse": 1.1}}},
            "train_seconds": 120.0}
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint" / "card.json").write_text(json.dumps(card))
    out = tmp_path / "results.md"
    assert main(["--runs", str(tmp_path / "run"), str(tmp_path / "missing"), "--results", str(out)]) == 0
    row = next(line for line in out.read_text().splitlines() if line.startswith("| biased_mf"))
    assert "**0.8500**" in row and "biases 0.9000" in row and "SVD (biased MF) 0.873" in row
    assert "2.0 min" in row
    assert main(["--runs", str(tmp_path / "missing")]) == 2
    assert "no checkpoint/card.json" in capsys.readouterr().err


def test_cv_splits_cover_every_rating_once_as_test():
    from recdeploy.train.tasks.rating import cv_splits
    splits = cv_splits(1000, folds=5, seed=0)
    tests = np.concatenate([s.test for s in splits])
    assert sorted(tests.tolist()) == list(range(1000))
    for s in splits:
        assert len(set(s.train) | set(s.valid) | set(s.test)) == 1000
        assert not set(s.train) & set(s.test) and not set(s.valid) & set(s.test)
        assert len(s.valid) == 800 // 8


def test_rating_cv_reports_the_mean_over_folds_beside_the_anchors(tiny):
    from recdeploy.train.results import row_from_card
    config = TrainConfig(model="biased_mf", task="rating_cv", dataset="synthetic", dim=4, epochs=1,
                         batch_size=4096)
    result = run_task(config, tiny, progress=False)
    test = result.metrics["test"]
    assert len(test["folds"]) == 5 and test["rmse"] == pytest.approx(np.mean(test["folds"]), abs=1e-4)
    card = result.card(config, tiny)
    assert card["task"] == "rating_cv" and "5-fold" in card["split"] and len(card["folds"]) == 5
    row = row_from_card({**card, "dataset": "ml-1m"})
    assert row.metric == "rmse" and "SVD (biased MF) 0.873" in row.anchors


def test_a_refit_runs_exactly_the_chosen_epochs(tiny):
    from recdeploy.train.tasks.rating import train
    config = TrainConfig(model="biased_mf", dataset="synthetic", dim=4, epochs=30, patience=1,
                         batch_size=4096)
    split = random_split(tiny, (0.8, 0.1, 0.1), seed=0)
    assert train(config, tiny, split, progress=False, fixed_epochs=3).epochs_run == 3
