"""The ads ranker family (``dcn_v2_context``): ONNX int8 / FP16 and a row-wise quantized table.

    recdeploy compress --run runs/obd --methods int8-dynamic,rowwise-int8,fp16
    recdeploy export --run runs/obd --repository repo_obd --variants all

The served module is the ``obd_ranker`` the obd scenario (``export/scenarios/obd.py``) writes:
SPARSE [B, N, 10], DENSE [B, N, 1] -> SCORES [B, N] logits. Requests here are B real test
impressions with N = 1, at the logged slot; quality is the obd_ctr task's AUC and logloss on
the run's own test period (the time split has no seed to redraw). Pruning is not offered:
DCN-v2's field-width pruner is written for the MovieLens ranker's fields, and a net of a
few thousand weights over 160 ads has little to prune; nor a fine-tune (none of the offered
methods needs one).
"""
from __future__ import annotations

import copy

import numpy as np
from torch import nn

from recdeploy.compress.api import TaskData
from recdeploy.compress.config import CompressionConfigError
from recdeploy.compress.dcn_v2 import RowwiseEmbedding
from recdeploy.compress.families import ModelFamily, register_family
from recdeploy.train.models.dcn_v2_context import ContextDCN
from recdeploy.train.obd_features import time_split
from recdeploy.train.tasks.ctr import auc, logloss
from recdeploy.train.tasks.obd_ctr import ObdCtrData


def _rows(data: ObdCtrData, rows: np.ndarray) -> dict[str, np.ndarray]:
    sparse, dense, _ = data.rows(rows)
    return {"SPARSE": sparse[:, None], "DENSE": dense[:, None]}


def _check_tables(model: ContextDCN, data: ObdCtrData) -> None:
    ours = model.tables.item_sparse.numpy()
    if ours.shape != data.arrays.item_sparse.shape or not np.array_equal(ours, data.arrays.item_sparse):
        raise CompressionConfigError("the ranker's item tables differ from this dataset's: compress it "
                                     "against the data it was trained on")


@register_family
class DcnV2ContextFamily(ModelFamily):
    name = "dcn_v2_context"
    model_types = (ContextDCN,)
    input_names = ("SPARSE", "DENSE")
    output_names = ("SCORES",)
    primary_metric = "auc"

    def served_module(self, model: ContextDCN) -> nn.Module:
        return model.eval()

    def rowwise_module(self, model: ContextDCN, bits: int) -> nn.Module:
        """The shared field table row-wise int8/int4 (the dense field's few weights stay FP32)."""
        served = copy.deepcopy(model).eval()
        served.sparse_arch.register_module("embedding", RowwiseEmbedding(model.sparse_arch.embedding.weight, bits))
        return served

    def example_requests(self, ds, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """n test impressions with their features at the logged slot: [n, 1, ...] each."""
        data = ObdCtrData(ds, time_split(ds))
        test = data.split.test
        return _rows(data, np.random.default_rng(seed).choice(test, size=n, replace=n > len(test)))

    def task_data(self, model: ContextDCN, ds, n_requests: int = 256, seed: int = 0, weight_decay: float = 1e-5,
                  batch_size: int = 512, task: str = "obd_ctr", lr: float | None = None) -> TaskData:
        if task != "obd_ctr":
            raise CompressionConfigError(f"dcn_v2_context compression knows the task obd_ctr, not {task!r}")
        data = ObdCtrData(ds, time_split(ds))
        _check_tables(model, data)
        rng = np.random.default_rng(seed)
        calibration = rng.choice(data.split.train, size=n_requests, replace=n_requests > len(data.split.train))
        requests = [_rows(data, calibration[start:start + 64]) for start in range(0, n_requests, 64)]
        test_inputs, labels = _rows(data, data.split.test), data.parts["test"][2]

        def evaluate(score) -> dict:
            """score({"SPARSE", "DENSE": [R, 1, ...]}) -> [R, 1] logits; the test period."""
            logits = np.asarray(score(test_inputs), dtype=np.float64).reshape(-1)
            return {"auc": auc(labels, logits), "logloss": logloss(labels, 1 / (1 + np.exp(-logits))),
                    "rows": len(labels)}

        return TaskData(requests=requests, evaluate=evaluate)
