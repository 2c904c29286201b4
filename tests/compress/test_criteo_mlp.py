"""DLRM's MLPs pruned with torch-pruning: hidden widths shrink by the ratio, every shape the rest
of the model depends on stays, the export keeps parity, the fine-tune trains the MLPs only, and
bad ratios are refused."""
import copy

import numpy as np
import pytest
import torch

from recdeploy.compress.config import CompressionConfigError
from recdeploy.compress.criteo_mlp import hidden_widths, mlp_candidates, mlp_parameters, parse_ratios, prune_mlps
from recdeploy.compress.families import family_named
from recdeploy.train.criteo.prepare import SyntheticSource, prepare
from recdeploy.train.criteo.synthetic import SyntheticCriteo
from recdeploy.train.models import build_model
from recdeploy.train.onnx_io import check_parity, export_onnx
from recdeploy.train.tasks.criteo_ctr import train_rows

ROWS = (4000, 3000) + (50,) * 24


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("dlrm", rows_per_field=ROWS, dim=16).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare(SyntheticSource(SyntheticCriteo(rows=6000, scale=0.003, chunk_rows=6000)),
                   tmp_path_factory.mktemp("criteo"), progress=False)


def _inputs(lead=(2, 3)):
    rng = np.random.default_rng(0)
    return (torch.from_numpy(rng.random((*lead, 13), dtype=np.float32)),
            torch.from_numpy(rng.integers(0, 50, (*lead, 26))))


@pytest.mark.parametrize("ratio, bottom, top", [(0.25, (48,), (192, 96)), (0.5, (32,), (128, 64))])
def test_hidden_widths_shrink_by_the_ratio(model, ratio, bottom, top):
    pruned = prune_mlps(model, ratio)
    assert hidden_widths(model) == {"bottom": (64,), "top": (256, 128)}
    assert hidden_widths(pruned) == {"bottom": bottom, "top": top}
    # what the rest depends on: the bottom output (= dim), the interaction's width, the logit
    assert pruned.dense_arch.mlp[-2].out_features == 16
    assert pruned.over_arch.mlp[0][0].in_features == model.over_arch.mlp[0][0].in_features == 16 + 351
    assert pruned.over_arch.mlp[-1].out_features == 1
    assert pruned.sparse_arch.tables is model.sparse_arch.tables          # shared, not copied
    assert model.over_arch.mlp[0][0].out_features == 256                  # the input model untouched
    # every weight touches a pruned width except the two output biases (16 + 1)
    assert mlp_parameters(pruned) <= (1 - ratio) * mlp_parameters(model) + 17
    assert pruned(*_inputs()).shape == model(*_inputs()).shape == (2, 3)


def test_pruned_model_exports_with_parity(model, tmp_path):
    pruned = prune_mlps(model, 0.5)
    dense, sparse = _inputs()
    inputs = {"DENSE_X": dense.numpy(), "SPARSE": sparse.numpy()}
    axes = {n: {0: "b", 1: "n"} for n in [*inputs, "SCORES"]}
    path = export_onnx(pruned, inputs, ["SCORES"], tmp_path / "m.onnx", dynamic_axes=axes)
    report = check_parity(pruned, path, inputs, ["SCORES"], atol=1e-5, rtol=1e-5)
    assert report.max_abs_diff["SCORES"] < 1e-5
    full = export_onnx(model, inputs, ["SCORES"], tmp_path / "f.onnx", dynamic_axes=axes)
    saved = 4 * (mlp_parameters(model) - mlp_parameters(pruned))
    assert full.stat().st_size - path.stat().st_size > 0.9 * saved


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.5, 1.5])
def test_bad_ratio_is_refused(model, ratio):
    with pytest.raises(ValueError, match=r"pruning ratio must be in \(0, 1\)"):
        prune_mlps(model, ratio)


def test_ratio_list_is_parsed_and_checked():
    assert parse_ratios("0.25, 0.5") == (0.25, 0.5)
    with pytest.raises(CompressionConfigError, match=r"pruning ratio must be in \(0, 1\).*got 1.0"):
        parse_ratios("0.25,1")
    with pytest.raises(CompressionConfigError, match="comma-separated numbers"):
        parse_ratios("half")


def test_only_dlrm_has_mlp_pruning(data):
    dcn = build_model("dcn_v2_criteo", rows_per_field=data.rows_per_field, dim=4)
    with pytest.raises(CompressionConfigError, match="CriteoDCN is not supported: use the dlrm model"):
        mlp_candidates(dcn, data, (0.5,))


def test_candidates_and_finetune_train_the_mlps_only(data):
    torch.manual_seed(0)
    model = build_model("dlrm", rows_per_field=data.rows_per_field, dim=8).eval()
    table = model.sparse_arch.tables.weight.detach().clone()
    pool = mlp_candidates(model, data, (0.5,), finetune_rows=2000)
    assert [c.name for c in pool] == ["mlp50", "mlp50_int4", "mlp50_kd", "mlp50_kd_int4"]
    plain, int4, tuned = pool[0].module, pool[1].module, pool[2].module
    assert pool[2].settings == {"mlp_ratio": 0.5, "finetune_rows": 2000, "distill": 1.0, "bottom": (32,),
                                "top": (128, 64)}
    assert torch.equal(model.sparse_arch.tables.weight, table)             # the tables are frozen
    assert tuned.sparse_arch.tables is model.sparse_arch.tables
    assert not torch.equal(tuned.over_arch.mlp[-1].weight, plain.over_arch.mlp[-1].weight)
    assert mlp_parameters(int4) == mlp_parameters(plain) < mlp_parameters(model)
    assert model.sparse_arch.tables.weight.requires_grad                   # unfrozen again


def test_task_data_refuses_other_datasets(model):
    with pytest.raises(CompressionConfigError, match="Criteo-format rows"):
        family_named("dlrm").task_data(model, object())


def test_distilling_a_model_into_itself_changes_nothing(data):
    """Targets = the teacher's probabilities: a student equal to its teacher has zero gradient."""
    torch.manual_seed(0)
    model = build_model("dlrm", rows_per_field=data.rows_per_field, dim=8).eval()
    before = copy.deepcopy(model)
    train_rows(model, data, 0.05, 512, np.random.default_rng(0), max_rows=2000, progress=False,
               teacher=before, distill=1.0)
    for (name, a), b in zip(model.named_parameters(), before.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    train_rows(model, data, 0.05, 512, np.random.default_rng(0), max_rows=2000, progress=False)
    assert not torch.equal(model.over_arch.mlp[-1].weight, before.over_arch.mlp[-1].weight)   # labels do move it
