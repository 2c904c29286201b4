"""DCN-v2 widened to Criteo rows: 26 categorical fields + 13 dense, the parts of ``dcn_v2``.

    model = build_model("dcn_v2_criteo", rows_per_field=(...), dim=16, cross_rank=64)
    logits = model(dense, sparse)         # the same tensors as DLRM's

The sparse side is DLRM's (one sparse-gradient EmbeddingBag over all fields, swappable
``tables``); the dense counts become one more field through a linear layer; then the MovieLens
DCN-v2's CrossNet (low rank by default: a full-rank layer over 27 x D inputs is 27^2 D^2
weights), DeepArch and OverArch.
"""
from __future__ import annotations

import torch
from torch import nn

from recdeploy.train.models import register_model
from recdeploy.train.models.dcn_v2 import CrossNet, DeepArch, OverArch
from recdeploy.train.models.dlrm import N_DENSE, N_SPARSE, SparseArch


class CriteoDCN(nn.Module):
    """``forward(dense, sparse)``: dense [..., 13], sparse [..., 26] int64 -> logits [...]."""

    def __init__(self, rows_per_field: tuple[int, ...], dim: int = 16, cross_layers: int = 2,
                 cross_rank: int = 64, hidden: tuple[int, ...] = (256, 128), dropout: float = 0.0):
        super().__init__()
        if len(rows_per_field) != N_SPARSE:
            raise ValueError(f"rows_per_field: one size per categorical field ({N_SPARSE}), "
                             f"got {len(rows_per_field)}")
        self.rows_per_field = tuple(int(r) for r in rows_per_field)
        self.sparse_arch = SparseArch(self.rows_per_field, dim)
        self.dense_arch = nn.Linear(N_DENSE, dim)
        width = (N_SPARSE + 1) * dim
        self.cross_net = CrossNet(width, cross_layers, cross_rank)
        self.deep_arch = DeepArch(width, tuple(hidden), dropout)
        self.over_arch = OverArch(self.deep_arch.out_width)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        lead = dense.shape[:-1]
        dense = dense.reshape(-1, N_DENSE)
        sparse = sparse.reshape(-1, N_SPARSE)
        return self.score_fields(dense, self.sparse_arch(sparse)).reshape(lead)

    def score_fields(self, dense: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        """dense N x 13, fields N x 26 x D (the tables' rows) -> N logits (see DLRM's)."""
        fields = torch.cat([fields, self.dense_arch(dense).unsqueeze(1)], dim=1)
        return self.over_arch(self.deep_arch(self.cross_net(fields.flatten(1))))


@register_model("dcn_v2_criteo", task="criteo_ctr", defaults={"dim": 16, "lr": 0.05, "batch_size": 2048,
                                                              "epochs": 1, "patience": 1,
                                                              "weight_decay": 0.0})
def build_dcn_v2_criteo(rows_per_field: tuple[int, ...], dim: int = 16, cross_layers: int = 2,
                        cross_rank: int = 64, hidden: tuple[int, ...] = (256, 128),
                        dropout: float = 0.0) -> CriteoDCN:
    return CriteoDCN(tuple(rows_per_field), dim, cross_layers, cross_rank, tuple(hidden), dropout)
