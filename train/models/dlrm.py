"""DLRM (Naumov et al. 2019) for Criteo-format rows, built from small named parts.

    from recdeploy.train.models import build_model
    model = build_model("dlrm", rows_per_field=(1462, 585, ...), dim=64)
    logits = model(dense, sparse)        # [..., 13] float (log-transformed), [..., 26] int64 rows

Parts, as torchrec's ``torchrec/models/dlrm.py`` names them: ``EmbeddingTables`` (every
field's rows in one ``nn.EmbeddingBag`` with ``sparse=True``, so a step's gradient touches only
the rows the batch used), ``DenseArch`` (bottom MLP: 13 counts -> one D-vector),
``InteractionArch`` (pairwise dot products of the 27 vectors) and ``OverArch`` (top MLP ->
the logit). ``model.tables`` is the one part compression swaps (row-wise INT8 / INT4, mixed
precision): any module with ``rows(index) -> N x D`` serves.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recdeploy.train.models import register_model

N_DENSE, N_SPARSE = 13, 26


class EmbeddingTables(nn.Module):
    """Every field's table as one EmbeddingBag (SparseArch adds each field's first row).

    ``rows(index)``: global
    rows (N) -> N x D. Training looks rows up through the EmbeddingBag (sparse gradients);
    eval through a plain gather, which exports to one ONNX Gather.
    """

    def __init__(self, rows_per_field: tuple[int, ...], dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(int(sum(rows_per_field)), dim, mode="sum", sparse=True)
        # DLRM's init: uniform in +-1/sqrt(rows) per table is tiny for 10^6-row tables;
        # a fixed small normal trains the hot rows as fast in every field
        nn.init.normal_(self.bag.weight, std=0.01)

    @property
    def weight(self) -> torch.Tensor:
        return self.bag.weight

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.bag(index.reshape(-1, 1))
        return F.embedding(index, self.bag.weight)


class SparseArch(nn.Module):
    """sparse N x 26 (per-field rows) -> N x 26 x D through ``tables`` (swappable)."""
    offsets: torch.Tensor

    def __init__(self, rows_per_field: tuple[int, ...], dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("offsets", torch.tensor([0, *rows_per_field[:-1]]).cumsum(0))
        # any module with rows(index) -> N x D: EmbeddingTables, or a compressed table
        self.tables: Any = EmbeddingTables(rows_per_field, dim)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        index = (sparse + self.offsets).reshape(-1)
        return self.tables.rows(index).reshape(sparse.shape[0], sparse.shape[1], self.dim)


def mlp(sizes: tuple[int, ...], last_relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_relu or k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseArch(nn.Module):
    """dense N x 13 -> N x D (bottom MLP)"""

    def __init__(self, dim: int, hidden: tuple[int, ...] = (64,)):
        super().__init__()
        self.mlp = mlp((N_DENSE, *hidden, dim))

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.mlp(dense)


class InteractionArch(nn.Module):
    """dense N x D, fields N x F x D -> N x (D + (F+1) F / 2): the dense vector and the dot
    product of every pair of the F + 1 vectors."""
    pairs: torch.Tensor

    def __init__(self, n_fields: int):
        super().__init__()
        i, j = torch.triu_indices(n_fields + 1, n_fields + 1, offset=1)
        # positions in the flattened (F+1) x (F+1) dot matrix: one Gather when exported
        self.register_buffer("pairs", i * (n_fields + 1) + j)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def forward(self, dense: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        vectors = torch.cat([dense.unsqueeze(1), fields], dim=1)
        dots = torch.bmm(vectors, vectors.transpose(1, 2))
        return torch.cat([dense, dots.flatten(1).index_select(1, self.pairs)], dim=1)


class OverArch(nn.Module):
    """N x W -> N logits (top MLP)"""

    def __init__(self, width: int, hidden: tuple[int, ...] = (256, 128)):
        super().__init__()
        self.mlp = nn.Sequential(mlp((width, *hidden)), nn.Linear(hidden[-1] if hidden else width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1)


class DLRM(nn.Module):
    """``forward(dense, sparse)``: dense [..., 13] float, sparse [..., 26] int64 -> logits [...]
    (any leading shape: B rows, or B x N candidates)."""

    def __init__(self, rows_per_field: tuple[int, ...], dim: int = 16, bottom: tuple[int, ...] = (64,),
                 top: tuple[int, ...] = (256, 128)):
        super().__init__()
        if len(rows_per_field) != N_SPARSE:
            raise ValueError(f"rows_per_field: one size per categorical field ({N_SPARSE}), "
                             f"got {len(rows_per_field)}")
        self.rows_per_field = tuple(int(r) for r in rows_per_field)
        self.sparse_arch = SparseArch(self.rows_per_field, dim)
        self.dense_arch = DenseArch(dim, tuple(bottom))
        self.interaction = InteractionArch(N_SPARSE)
        self.over_arch = OverArch(dim + self.interaction.n_pairs, tuple(top))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        lead = dense.shape[:-1]
        dense = dense.reshape(-1, N_DENSE)
        sparse = sparse.reshape(-1, N_SPARSE)
        return self.score_fields(dense, self.sparse_arch(sparse)).reshape(lead)

    def score_fields(self, dense: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        """dense N x 13, fields N x 26 x D (the tables' rows) -> N logits: the model without
        its tables, as a ranker behind cached tables serves it."""
        return self.over_arch(self.interaction(self.dense_arch(dense), fields))


@register_model("dlrm", task="criteo_ctr", defaults={"dim": 16, "lr": 0.05, "batch_size": 2048,
                                                     "epochs": 1, "patience": 1, "weight_decay": 0.0})
def build_dlrm(rows_per_field: tuple[int, ...], dim: int = 16, bottom: tuple[int, ...] = (64,),
               top: tuple[int, ...] = (256, 128)) -> DLRM:
    return DLRM(tuple(rows_per_field), dim, tuple(bottom), tuple(top))
