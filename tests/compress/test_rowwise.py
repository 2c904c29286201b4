"""Row-wise INT8 / INT4 tables: reconstruction error bounds and compact ONNX graphs."""
import numpy as np
import onnx
import pytest
import torch

from recdeploy.compress.rowwise import RowwiseTable


@pytest.fixture
def weight():
    return torch.randn(50, 7, generator=torch.Generator().manual_seed(0))


def test_int8_rows_are_within_half_a_step(weight):
    table = RowwiseTable.quantize(weight, 8)
    assert table.codes.dtype == torch.int8 and table.codes.shape == (50, 7)
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    assert torch.all((table.dequantize() - weight).abs() <= step * 0.5 + 1e-3)


def test_int4_packs_two_codes_per_byte_and_handles_odd_widths(weight):
    table = RowwiseTable.quantize(weight, 4)
    assert table.codes.dtype == torch.uint8 and table.codes.shape == (50, 4)   # ceil(7 / 2)
    step = (weight.amax(dim=1, keepdim=True) - weight.amin(dim=1, keepdim=True)) / 15
    assert torch.all((table.dequantize() - weight).abs() <= step * 0.5 + 2e-3)


@pytest.mark.parametrize("bits, dtype", [(8, np.int8), (4, np.uint8)])
def test_exported_scorer_keeps_the_small_tables(tmp_path, bits, dtype):
    from recdeploy.compress.two_tower import RowwiseRetrievalScorer
    from recdeploy.train.models.two_tower import TwoTower
    from recdeploy.train.onnx_io import export_onnx

    model = TwoTower(n_users=40, n_items=300, dim=16).eval()
    scorer = RowwiseRetrievalScorer(model, bits)
    users = np.arange(5, dtype=np.int64).reshape(-1, 1)
    path = export_onnx(scorer, {"USER_INDEX": users}, ["SCORES"], tmp_path / "m.onnx",
                       constant_folding=False)
    graph = onnx.load(str(path)).graph
    big = [i for i in graph.initializer if np.prod(i.dims) >= 300]
    assert big and all(onnx.helper.tensor_dtype_to_np_dtype(i.data_type) in (dtype, np.float16, np.float32)
                       for i in big)
    float_elements = sum(np.prod(i.dims) for i in big
                         if onnx.helper.tensor_dtype_to_np_dtype(i.data_type) == np.float32)
    assert float_elements == 300          # only the item bias stays FP32, no folded FP32 table
