"""DLRM and the widened DCN-v2 on Criteo rows: one test class per part, the row-wise Adagrad
update, and a short training that must beat the click-rate baseline."""
import pytest
import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.criteo.optim import RowWiseAdagrad
from recdeploy.train.criteo.prepare import SyntheticSource, prepare
from recdeploy.train.criteo.synthetic import SyntheticCriteo
from recdeploy.train.models import build_model
from recdeploy.train.models.dlrm import InteractionArch, SparseArch
from recdeploy.train.tasks import run_task

ROWS = (5, 7) + (3,) * 24


class TestSparseArch:
    def test_each_field_reads_its_own_rows(self):
        arch = SparseArch(ROWS, dim=4).eval()
        sparse = torch.zeros(2, 26, dtype=torch.long)
        sparse[1, 1] = 6
        out = arch(sparse)
        weight = arch.tables.weight
        assert out.shape == (2, 26, 4)
        assert torch.equal(out[1, 1], weight[5 + 6]) and torch.equal(out[0, 2], weight[5 + 7])

    def test_training_gradient_is_sparse(self):
        arch = SparseArch(ROWS, dim=4).train()
        arch(torch.zeros(3, 26, dtype=torch.long)).sum().backward()
        assert arch.tables.weight.grad.is_sparse


class TestInteractionArch:
    def test_pairwise_dots(self):
        dense, fields = torch.randn(2, 3), torch.randn(2, 4, 3)
        out = InteractionArch(4)(dense, fields)
        vectors = torch.cat([dense[:, None], fields], dim=1)
        assert out.shape == (2, 3 + 10)
        torch.testing.assert_close(out[:, 3], (vectors[:, 0] * vectors[:, 1]).sum(1))
        torch.testing.assert_close(out[:, -1], (vectors[:, 3] * vectors[:, 4]).sum(1))


@pytest.mark.parametrize("name", ["dlrm", "dcn_v2_criteo"])
def test_models_take_any_leading_shape(name):
    model = build_model(name, rows_per_field=ROWS, dim=4).eval()
    dense, sparse = torch.rand(3, 5, 13), torch.randint(0, 3, (3, 5, 26))
    out = model(dense, sparse)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out[1], model(dense[1], sparse[1]))


@pytest.mark.parametrize("name", ["dlrm", "dcn_v2_criteo"])
def test_score_fields_is_the_model_given_its_table_rows(name):
    """What a ranker behind cached tables computes: the same logits from the looked-up rows."""
    model = build_model(name, rows_per_field=ROWS, dim=4).eval()
    dense, sparse = torch.rand(6, 13), torch.randint(0, 3, (6, 26))
    rows = model.sparse_arch.tables.weight[sparse + model.sparse_arch.offsets]
    assert torch.equal(model.score_fields(dense, rows), model(dense, sparse))


def test_wrong_field_count_is_refused():
    with pytest.raises(ValueError, match="one size per categorical field"):
        build_model("dlrm", rows_per_field=(3,) * 25)


def test_rowwise_adagrad_updates_only_touched_rows():
    bag = torch.nn.EmbeddingBag(10, 4, mode="sum", sparse=True)
    before = bag.weight.detach().clone()
    optimizer = RowWiseAdagrad([bag.weight], lr=0.1)
    bag(torch.tensor([[2], [2], [7]])).sum().backward()
    optimizer.step()
    changed = (bag.weight.detach() != before).any(dim=1)
    assert changed.nonzero().reshape(-1).tolist() == [2, 7]
    assert optimizer.state[bag.weight]["sum"].shape == (10,)


@pytest.mark.parametrize("name", ["dlrm", "dcn_v2_criteo"])
def test_training_learns_the_planted_signal(tmp_path, name):
    data = prepare(SyntheticSource(SyntheticCriteo(rows=36_000, scale=0.003, chunk_rows=36_000)),
                   tmp_path / "data", progress=False)
    config = TrainConfig.for_model(name, dataset="criteo", dim=8, batch_size=1024)
    result = run_task(config, data, progress=False)
    test = result.metrics["test"]
    bayes = result.baselines["bayes_truth"]["test"]["auc"]
    assert 0.7 < test["auc"] < bayes + 0.01
    assert test["logloss"] < result.baselines["click_rate"]["test"]["logloss"]
    assert result.extra["train_samples_per_s"] > 0
