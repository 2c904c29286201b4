"""Compressed Criteo tables: MixedTable's three tiers, the chosen variant under the budget,
and that a compressed model keeps its tables compressed inside the exported ONNX graph."""
import numpy as np
import pytest
import torch

from recdeploy.compress.criteo_tables import MixedTable, choose_variant, table_bytes, with_tables
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.train.models import build_model
from recdeploy.train.onnx_io import check_parity, export_onnx

ROWS = (4000, 3000) + (50,) * 24


class TestMixedTable:
    def test_tiers(self):
        weight = torch.randn(10, 6)
        counts = np.array([100, 50, 0, 3, 0, 9, 1, 2, 0, 4])
        table = MixedTable.build(weight, counts, hot=0.2, prune_below=1)
        out = table.rows(torch.arange(10))
        torch.testing.assert_close(out[:2], weight[:2].half().float())            # hot: FP16
        assert torch.equal(out[[2, 4, 8]], torch.zeros(3, 6))                      # pruned
        warm = [3, 5, 6, 7, 9]
        step = (weight[warm].amax(1) - weight[warm].amin(1)) / 15
        assert ((out[warm] - weight[warm]).abs() <= step[:, None] / 2 + 1e-2).all()  # INT4

    def test_counts_must_match(self):
        with pytest.raises(ValueError, match="counts has 3 rows"):
            MixedTable.build(torch.zeros(4, 2), np.zeros(3), hot=0.5)


def test_compressed_tables_are_smaller_and_exported_compressed(tmp_path):
    model = build_model("dlrm", rows_per_field=ROWS, dim=16).eval()
    weight = model.sparse_arch.tables.weight
    counts = np.arange(weight.shape[0])[::-1]
    int8 = with_tables(model, RowwiseTable.quantize(weight, 8))
    mixed = with_tables(model, MixedTable.build(weight, counts, hot=0.05, prune_below=4000))
    assert model.sparse_arch.tables is not int8.sparse_arch.tables
    full = table_bytes(model)
    assert table_bytes(int8) < 0.33 * full and table_bytes(mixed) < 0.25 * full
    inputs = {"DENSE_X": np.random.rand(2, 3, 13).astype(np.float32),
              "SPARSE": np.random.randint(0, 5, (2, 3, 26)).astype(np.int64)}
    axes = {n: {0: "b", 1: "n"} for n in [*inputs, "SCORES"]}
    path = export_onnx(mixed, inputs, ["SCORES"], tmp_path / "m.onnx", dynamic_axes=axes,
                       constant_folding=False)
    check_parity(mixed, path, inputs, ["SCORES"], atol=1e-5, rtol=1e-5)
    fp32 = export_onnx(model, inputs, ["SCORES"], tmp_path / "f.onnx", dynamic_axes=axes)
    assert fp32.stat().st_size - path.stat().st_size > 0.7 * full     # the table stays compressed


def test_choose_variant_keeps_the_budget():
    scored = [{"name": "fp32", "table_bytes": 100, "valid_auc": 0.800},
              {"name": "int8", "table_bytes": 30, "valid_auc": 0.7995},
              {"name": "int4", "table_bytes": 15, "valid_auc": 0.7985},
              {"name": "mixed", "table_bytes": 10, "valid_auc": 0.790}]
    assert choose_variant(scored, budget=0.001, margin=1.0)["name"] == "int8"
    assert choose_variant(scored, budget=0.002, margin=1.0)["name"] == "int4"
    assert choose_variant(scored, budget=0.002)["name"] == "int8"      # half the budget on validation


def test_choose_variant_by_model_bytes_takes_the_pruned_mlps():
    scored = [{"name": "fp32", "table_bytes": 100, "model_bytes": 120, "valid_auc": 0.800},
              {"name": "int4", "table_bytes": 15, "model_bytes": 35, "valid_auc": 0.8},
              {"name": "mlp50_int4", "table_bytes": 15, "model_bytes": 25, "valid_auc": 0.7996},
              {"name": "mlp75_int4", "table_bytes": 15, "model_bytes": 20, "valid_auc": 0.799}]
    assert choose_variant(scored, budget=0.001, key="model_bytes")["name"] == "mlp50_int4"
    assert choose_variant(scored, budget=0.001)["name"] == "int4"       # tables tie: the first
