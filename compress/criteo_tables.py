"""Compressed embedding tables for the Criteo models (DLRM, DCN-v2): row-wise INT8 / INT4 and
frequency-aware mixed precision, chosen under a quality budget.

    variant = with_tables(model, RowwiseTable.quantize(model_weight(model), bits=8))
    variant = with_tables(model, MixedTable.build(model_weight(model), counts, hot=0.05, prune_below=1))
    pick = choose_variant(model, data, budget=0.001)       # smallest bytes within the AUC budget

Both keep the tables compressed while serving: a lookup gathers the compressed rows a request
needs and dequantizes only those (``rows(index)``), so the table stays INT8 / INT4 in memory
(the row-wise tables of the MovieLens models are instead folded to FP32 at load; at 10^7 rows
that would undo the saving). ``MixedTable``: the most frequent rows (``hot`` share by training
count) stay FP16, rows seen fewer than ``prune_below`` times share one zero row, the rest are
row-wise INT4; an INT32 map per row says where each row lives (4 bytes a row).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.train.criteo.prepare import PreparedCriteo
from recdeploy.train.tasks.criteo_ctr import predict_logits
from recdeploy.train.tasks.ctr import auc


class MixedTable(nn.Module):
    """R x D rows in three tiers: FP16 hot rows, INT4 rows, pruned rows (one shared zero row).

    ``place[r]`` < H: hot row place[r]; otherwise INT4 row place[r] - H (the last INT4 row is
    the shared zero row the pruned rows point at)."""
    place: torch.Tensor
    hot: torch.Tensor

    def __init__(self, place: torch.Tensor, hot: torch.Tensor, warm: RowwiseTable):
        super().__init__()
        self.register_buffer("place", place.to(torch.int32))
        self.register_buffer("hot", hot.to(torch.float16))
        self.warm = warm
        self.n_hot = len(hot)

    @classmethod
    def build(cls, weight: torch.Tensor, counts: np.ndarray, hot: float, prune_below: int = 0) -> MixedTable:
        """hot: share of rows kept FP16 (the most frequent); prune_below: rows seen fewer times
        in training share the zero row (0: prune nothing)."""
        weight = weight.detach().float()
        rows, dim = weight.shape
        counts = np.asarray(counts)
        if len(counts) != rows:
            raise ValueError(f"counts has {len(counts)} rows, the table {rows}")
        order = np.argsort(-counts, kind="stable")
        n_hot = max(1, int(round(hot * rows)))
        is_hot = np.zeros(rows, dtype=bool)
        is_hot[order[:n_hot]] = True
        pruned = ~is_hot & (counts < prune_below)
        warm = ~is_hot & ~pruned
        place = np.empty(rows, dtype=np.int64)
        hot_rows, warm_rows = np.flatnonzero(is_hot), np.flatnonzero(warm)
        place[hot_rows] = np.arange(len(hot_rows))
        place[warm_rows] = len(hot_rows) + np.arange(len(warm_rows))
        place[pruned] = len(hot_rows) + len(warm_rows)                 # the shared zero row
        warm_weight = torch.cat([weight[torch.from_numpy(warm_rows)], torch.zeros(1, dim)])
        return cls(torch.from_numpy(place), weight[torch.from_numpy(hot_rows)],
                   RowwiseTable.quantize(warm_weight, bits=4))

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """index (N) -> N x D float"""
        place = self.place[index].long()
        is_hot = place < self.n_hot
        hot = self.hot[place.clamp(max=self.n_hot - 1)].float()
        warm = self.warm.rows((place - self.n_hot).clamp(min=0))
        return torch.where(is_hot.unsqueeze(1), hot, warm)


def sparse_arch(model: nn.Module) -> nn.Module:
    arch = getattr(model, "sparse_arch", None)
    if not isinstance(arch, nn.Module) or not isinstance(getattr(arch, "tables", None), nn.Module):
        raise TypeError(f"{type(model).__name__} has no sparse_arch.tables (a Criteo DLRM / DCN-v2)")
    return arch


def model_weight(model: nn.Module) -> torch.Tensor:
    weight = getattr(sparse_arch(model).tables, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError("the model's tables are already compressed (no FP32 weight)")
    return weight


def with_tables(model: nn.Module, tables: nn.Module) -> nn.Module:
    """A copy of ``model`` whose SparseArch reads ``tables`` (the FP32 table is not copied)."""
    arch = sparse_arch(model)
    original = arch.tables
    arch.tables = nn.Identity()
    try:
        clone = copy.deepcopy(model)
    finally:
        arch.tables = original
    sparse_arch(clone).tables = tables
    return clone.eval()


def state_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def table_bytes(module: nn.Module) -> int:
    tables = sparse_arch(module).tables
    assert isinstance(tables, nn.Module)
    return state_bytes(tables)


@dataclass(frozen=True)
class Candidate:
    name: str
    module: nn.Module
    settings: dict


def candidates(model: nn.Module, counts: np.ndarray, hot_shares=(0.02, 0.1), prune=(0, 1, 3)) -> list[Candidate]:
    """The full model, row-wise INT8 and INT4, and mixed precision over a small grid."""
    weight = model_weight(model)
    out = [Candidate("fp32", model.eval(), {}),
           Candidate("int8", with_tables(model, RowwiseTable.quantize(weight, 8)), {"bits": 8}),
           Candidate("int4", with_tables(model, RowwiseTable.quantize(weight, 4)), {"bits": 4})]
    for hot in hot_shares:
        for below in prune:
            name = f"mixed_h{int(round(hot * 100))}_p{below}"
            out.append(Candidate(name, with_tables(model, MixedTable.build(weight, counts, hot, below)),
                                 {"hot_share": hot, "prune_below": below}))
    return out


def evaluate(candidate: Candidate, data: PreparedCriteo, part: str) -> float:
    return auc(np.asarray(data.arrays(part)[0]), predict_logits(candidate.module, data, part))


def choose_variant(scored: list[dict], budget: float = 0.001, margin: float = 0.5,
                   key: str = "table_bytes") -> dict:
    """The smallest ``key`` (table_bytes; model_bytes where the MLPs shrink too) among the scored
    candidates (dicts with name, that key, valid_auc) whose validation AUC is within ``margin``
    x ``budget`` (absolute) of the FP32 model's: the rest of the budget covers the gap between
    validation and unseen rows (measured: a variant at 0.0009 on validation lost 0.0013 on test)."""
    full = next(s for s in scored if s["name"] == "fp32")
    fits = [s for s in scored if full["valid_auc"] - s["valid_auc"] <= margin * budget]
    return min(fits, key=lambda s: s[key])
