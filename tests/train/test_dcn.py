"""DCN-v2 parts (one class each), the CTR protocol's pieces, and a short real training run."""
import json

import numpy as np
import pytest
import torch

from recdeploy.train.models.dcn_v2 import CrossNet, DCNv2, DeepArch, DenseArch, OverArch, SparseArch, build_dcn_v2
from recdeploy.train.tasks import ctr

VOCAB = {"gender": 3, "age": 4, "occupation": 5, "zip": 6}


def tiny_model(**kwargs) -> DCNv2:
    torch.manual_seed(0)
    return build_dcn_v2(n_users=7, n_items=9, n_genres=4, vocab_sizes=VOCAB, dim=4,
                        cross_layers=2, hidden=(8,), **kwargs).eval()


def random_features(lead, seed=0):
    g = torch.Generator().manual_seed(seed)
    highs = (8, 3, 4, 5, 6, 10)
    sparse = torch.stack([torch.randint(0, h, lead, generator=g) for h in highs], dim=-1)
    genres = (torch.rand(*lead, 4, generator=g) > 0.5).float()
    return sparse, genres, torch.randn(*lead, 3, generator=g)


class TestSparseArch:
    def test_shape_offsets_and_genre_mean(self):
        arch = SparseArch(vocab=(2, 3), n_genres=3, dim=5)
        out = arch(torch.tensor([[1, 2]]), torch.tensor([[1.0, 0.0, 1.0]]))
        assert out.shape == (1, 3, 5)                      # B x (S+1) x D
        torch.testing.assert_close(out[0, 1], arch.embedding.weight[2 + 2])   # field 1 offset 2
        torch.testing.assert_close(out[0, 2], arch.genre_embedding[[0, 2]].mean(0))

    def test_item_without_genres_gets_zero_vector(self):
        arch = SparseArch(vocab=(2,), n_genres=3, dim=5)
        assert torch.count_nonzero(arch(torch.tensor([[0]]), torch.zeros(1, 3))[0, 1]) == 0


class TestDenseArch:
    def test_dense_becomes_one_field(self):
        assert DenseArch(3, 5)(torch.randn(4, 3)).shape == (4, 1, 5)


class TestCrossNet:
    def test_matches_the_formula(self):
        net = CrossNet(width=6, layers=2)
        x0 = torch.randn(3, 6)
        x = x0
        for layer in net.weights:
            x = x0 * (x @ layer.weight.T + layer.bias) + x
        torch.testing.assert_close(net(x0), x)

    def test_low_rank_has_2nr_weights_per_layer(self):
        net = CrossNet(width=16, layers=1, rank=2)
        assert sum(p.numel() for p in net.parameters()) == 16 * 2 + 2 * 16 + 16
        assert net(torch.randn(5, 16)).shape == (5, 16)


class TestDeepAndOverArch:
    def test_shapes(self):
        deep = DeepArch(10, (8, 4), dropout=0.0)
        assert deep(torch.randn(3, 10)).shape == (3, 4) and deep.out_width == 4
        assert OverArch(4)(torch.randn(3, 4)).shape == (3,)


class TestDCNv2:
    def test_any_leading_shape_equals_flat_rows(self):
        model = tiny_model()
        sparse, genres, dense = random_features((2, 5))
        grid = model(sparse, genres, dense)
        flat = model(sparse.reshape(10, 6), genres.reshape(10, 4), dense.reshape(10, 3))
        assert grid.shape == (2, 5)
        torch.testing.assert_close(grid.reshape(-1), flat)

    def test_score_rows_reads_the_feature_tables(self):
        model = tiny_model()
        model.features.user_sparse[3] = torch.tensor([3, 1, 2, 3, 4])
        model.features.item_sparse[5] = torch.tensor([5])
        model.features.item_genres[5] = torch.tensor([1.0, 0, 0, 1])
        sparse = torch.tensor([[3, 1, 2, 3, 4, 5]])
        genres = torch.tensor([[1.0, 0, 0, 1]])
        torch.testing.assert_close(model.score_rows(torch.tensor([3]), torch.tensor([5])),
                                   model(sparse, genres, torch.zeros(1, 3)))

    def test_model_args_survive_json(self):
        args = {"n_users": 7, "n_items": 9, "n_genres": 4, "vocab_sizes": VOCAB, "hidden": (8,)}
        model = build_dcn_v2(**json.loads(json.dumps(args)))
        assert model.deep_arch.out_width == 8


class TestMetrics:
    def test_auc_with_ties_by_hand(self):
        # pairs (pos, neg): (0.8 > 0.3) (0.8 > 0.5) (0.5 = 0.5 -> half) (0.5 > 0.3) -> 3.5 / 4
        assert ctr.auc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.3]) == pytest.approx(0.875)

    def test_auc_needs_both_classes(self):
        with pytest.raises(ValueError, match="AUC needs both positive and negative labels"):
            ctr.auc([1, 1], [0.2, 0.3])

    def test_logloss(self):
        assert ctr.logloss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))


class TestProtocol:
    def test_rows_drop_threes_and_label_four_and_five(self, ml100k):
        rows, labels = ctr.ctr_rows(ml100k)
        assert not np.any(ml100k.ratings[rows] == 3)
        assert np.array_equal(labels == 1, ml100k.ratings[rows] >= 4)

    def test_random_split_is_seeded_disjoint_and_8_1_1(self):
        rows = np.arange(1000) * 3
        a, b = ctr.random_split(rows, seed=1), ctr.random_split(rows, seed=1)
        assert np.array_equal(a.test, b.test)
        assert (len(a.train), len(a.valid), len(a.test)) == (800, 100, 100)
        assert np.array_equal(np.sort(np.concatenate([a.train, a.valid, a.test])), rows)
        assert not np.array_equal(ctr.random_split(rows, seed=2).test, a.test)

    def test_tables_reserve_row_zero_and_use_training_rows_only(self, ml100k):
        rows, _ = ctr.ctr_rows(ml100k)
        split = ctr.random_split(rows, seed=0)
        tables = ctr.build_tables(ml100k, split.train)
        assert tables.user_sparse.shape == (ml100k.n_users + 1, 5)
        assert not tables.user_sparse[0].any() and not tables.item_genres[0].any()
        assert tables.user_sparse[1:, 0].tolist() == list(range(1, ml100k.n_users + 1))
        assert tables.vocab_sizes["gender"] == 3          # M, F + unknown
        assert tables.user_sparse[1:, 1:].min() >= 1      # every ML-100k user has every field
        activity = np.bincount(ml100k.users[split.train], minlength=ml100k.n_users)
        order = np.argsort(activity, kind="stable")
        assert np.all(np.diff(tables.user_dense[1:, 0][order]) >= 0)   # monotone in train count


@pytest.fixture(scope="module")
def tiny_run(ml100k):
    from recdeploy.train.config import TrainConfig

    rows, _ = ctr.ctr_rows(ml100k)
    config = TrainConfig(model="dcn_v2", dataset="ml-100k", dim=8, epochs=2, batch_size=2048,
                         lr=0.01, weight_decay=1e-5, patience=1)
    return ctr.train(config, ml100k, ctr.random_split(rows, 0), progress=False,
                     cross_layers=1, hidden=(32,))


def test_short_training_beats_both_baselines(tiny_run):
    test = tiny_run.metrics["test"]
    assert test["auc"] > 0.80                          # two tiny epochs on ML-100k: ~0.83
    assert test["auc"] > tiny_run.baselines["item_click_rate"]["test"]["auc"] + 0.03
    assert tiny_run.baselines["most_popular"]["test"]["auc"] < 0.70
    assert tiny_run.protocol["split"].startswith("random 8:1:1")


def test_unknown_user_row_is_trained(tiny_run):
    """Rows shown with every user field unknown move row 0 away from its init."""
    weight = tiny_run.model.sparse_arch.embedding.weight
    assert weight[0].abs().max() > 0.03                   # init std is 0.01


def test_train_cli_writes_checkpoint_and_card(tmp_path, ml100k, capsys):
    from recdeploy.train.checkpoint import load_checkpoint
    from recdeploy.train.cli import main

    assert main(["--model", "dcn_v2", "--dataset", "ml-100k", "--epochs", "1", "--batch-size",
                 "8192", "--dim", "4", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "item-click-rate" in capsys.readouterr().out
    checkpoint = load_checkpoint(tmp_path)
    card = checkpoint.card
    assert card["model"] == "dcn_v2" and card["metrics"]["test"]["auc"] > 0.7
    assert card["model_args"]["vocab_sizes"]["occupation"] == 22
    # the feature tables travel inside the checkpoint
    assert checkpoint.model.features.user_sparse[1:, 0].tolist() == list(range(1, 944))
