"""The fused retrieval contract shaped for a GPU: an FP16 scan of the catalogue, no FP32 pass
over the B x I scores, an FP32 rescore of a few candidates.

    model = GpuRetrieval.from_fused_parts(users, items, bias, popularity, user_ids, indptr, seen, item_ids)
    ids, scores = model.cuda()(user_id.cuda(), k.cuda())      # USER_ID [B,1], K [B,1] as FusedRetrieval

``FusedRetrieval.graph_forward`` on a GPU turns the FP16 product into FP32 scores, adds the
bias, selects popularity for unknown users and takes the top-K: several passes over a B x I
FP32 matrix, each as large as the catalogue at batch 32. Here the one GEMM (bias folded in as
an extra column, padded to a multiple of 8 for the tensor cores) writes FP16 scores and
nothing else touches them but the top-K; the W = K + L + margin best candidates (L: the
longest history of the store, a constant, so no sync) are rescored in FP32 from an FP32 copy
of their rows, the seen ones dropped, and the first K kept. Unknown users get the popularity
list, sorted once at build time. With ``chunk`` > 0 the top-W runs in two stages: the best
item of every chunk of ``chunk`` items, the W best chunks, the W best of their items; exact,
since each of the W best items lies in a chunk whose best is among the W best chunk maxima
(K is then limited to I / chunk - L - margin). With ``groups`` > 1 the W best chunks are found
the same way one level up (the best chunk of every group of ``groups`` chunks, the W best
groups, the W best of their chunks), so no top-K ever runs over a row longer than
max(I / (chunk * groups), W * groups, W * chunk): torch.topk's radix passes over long rows
are what a GPU spends most of its time on here (docs/gpu_h200.md).

Same contract and padding rules as FusedRetrieval: ITEM_IDS -1 / SCORES -inf beyond a row's
own k or where no unseen item is left. It scripts (TorchScript on cuda, the native backend's
KIND_GPU) and exports (torch.export + AOTInductor on cuda, ``export/fused_aoti.py``).
"""
# no `from __future__ import annotations`: torch.jit.script reads the buffer annotations
import numpy as np
import torch
from torch import nn

from recdeploy.export.fused import MAX_DENSE_ID, FusedExportError

# tensor cores take FP16 GEMM operands whose inner dimension is a multiple of 8
ALIGN = 8


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class GpuRetrieval(nn.Module):
    """user id (B x 1 int64), k (B x 1 int32) -> item ids (B x Kmax int64), scores (B x Kmax fp32)."""
    id_to_row: torch.Tensor
    users_half: torch.Tensor
    users_full: torch.Tensor
    items_half_t: torch.Tensor
    items_full: torch.Tensor
    item_ids: torch.Tensor
    cold_ids: torch.Tensor
    cold_scores: torch.Tensor
    seen_indptr: torch.Tensor
    seen_items: torch.Tensor

    def __init__(self, user_vectors, item_vectors, item_bias, popularity, user_ids, seen_indptr,
                 seen_items, item_ids, chunk: int = 0, margin: int = 32, groups: int = 0):
        super().__init__()
        user_ids = np.asarray(user_ids, np.int64)
        if len(user_ids) and (user_ids.min() < 0 or user_ids.max() >= MAX_DENSE_ID):
            raise FusedExportError(f"user ids must lie in [0, {MAX_DENSE_ID}) for the dense id table")
        if chunk < 0 or margin < 0 or groups < 0:
            raise FusedExportError(f"chunk, margin and groups must be >= 0, got {chunk}, {margin}, {groups}")
        if groups > 1 and not chunk:
            raise FusedExportError("groups of chunks need chunk > 0")
        id_to_row = np.full(int(user_ids.max(initial=-1)) + 2, -1, dtype=np.int64)
        id_to_row[user_ids] = np.arange(len(user_ids))
        users = np.asarray(user_vectors, np.float32)
        items = np.asarray(item_vectors, np.float32)
        n_users, dim = users.shape
        n_items = len(items)
        width = _round_up(dim + 1, ALIGN)
        groups = max(1, groups)
        padded = _round_up(n_items, chunk * groups) if chunk else n_items
        # users [u, 1, 0..] x items [v, bias, 0..]: u.v + bias in one GEMM; padding items score
        # the lowest FP16 number and carry id -1, so they are never among a row's answers
        users_aug = np.zeros((n_users + 1, width), np.float32)
        users_aug[:n_users, :dim], users_aug[:n_users, dim] = users, 1.0
        items_aug = np.zeros((padded, width), np.float32)
        items_aug[:n_items, :dim] = items
        items_aug[:n_items, dim] = np.asarray(item_bias, np.float32)
        items_aug[n_items:, dim] = float(np.finfo(np.float16).min)
        ids = np.full(padded, -1, np.int64)
        ids[:n_items] = np.asarray(item_ids, np.int64)
        popularity = np.asarray(popularity, np.float32)
        cold = np.argsort(-popularity, kind="stable")          # ties: the lower index first
        indptr = np.asarray(seen_indptr, np.int64)
        self.register_buffer("id_to_row", torch.from_numpy(id_to_row))
        self.register_buffer("users_half", torch.from_numpy(users_aug.astype(np.float16)))
        self.register_buffer("users_full", torch.from_numpy(users_aug))
        self.register_buffer("items_half_t", torch.from_numpy(np.ascontiguousarray(items_aug.T.astype(np.float16))))
        self.register_buffer("items_full", torch.from_numpy(items_aug))
        self.register_buffer("item_ids", torch.from_numpy(ids))
        self.register_buffer("cold_ids", torch.from_numpy(ids[cold]))
        self.register_buffer("cold_scores", torch.from_numpy(popularity[cold]))
        self.register_buffer("seen_indptr", torch.from_numpy(np.r_[indptr, indptr[-1]]))
        self.register_buffer("seen_items", torch.from_numpy(np.r_[np.asarray(seen_items, np.int64), 0]))
        self.n_users, self.n_items, self.padded_items, self.dim = n_users, n_items, padded, dim
        self.history = int(np.diff(indptr).max(initial=0))      # L: every history fits
        self.margin = int(margin)
        self.chunk, self.groups = int(chunk), int(groups)
        blocks = padded // (chunk * groups) if chunk else n_items    # the shortest row a top-W runs over
        self.max_k = n_items if not chunk else max(0, min(n_items, blocks - self.history - margin))
        if chunk and self.max_k < 1:
            raise FusedExportError(f"{blocks} blocks of {chunk * groups} items leave no room for a top-K after "
                                   f"{self.history} seen items and a margin of {margin}: use smaller chunks")

    @classmethod
    def from_fused_parts(cls, user_vectors, item_vectors, item_bias, popularity, user_ids, seen_indptr,
                         seen_items, item_ids, chunk: int = 0, margin: int = 32, groups: int = 0) -> "GpuRetrieval":
        return cls(user_vectors, item_vectors, item_bias, popularity, user_ids, seen_indptr, seen_items,
                   item_ids, chunk=chunk, margin=margin, groups=groups)

    def forward(self, user_id: torch.Tensor, k: torch.Tensor):
        k = k[:, 0].to(torch.int64)
        ids, best = self.rank(user_id[:, 0], k.max())
        keep = (torch.arange(best.shape[1], device=best.device)[None, :] < k[:, None]) & torch.isfinite(best)
        return torch.where(keep, ids, torch.full_like(ids, -1)), \
            torch.where(keep, best, torch.full_like(best, float("-inf")))

    def rank(self, uid: torch.Tensor, kmax: torch.Tensor):
        """ids, scores [B, kmax] of the largest K; kmax a 0-d tensor (reading it on the device is
        forward's one host sync)."""
        return self._rank(uid, kmax, torch.clamp(kmax + (self.history + self.margin), max=self.n_items))

    @torch.jit.unused
    def rank_static(self, uid: torch.Tensor, kmax: int):
        """``rank`` with K a Python int: no host sync at all, so a CUDA graph can capture it and
        torch.compile sees static sizes (eager Python only)."""
        return self._rank(uid, kmax, min(kmax + self.history + self.margin, self.n_items))

    def _rank(self, uid: torch.Tensor, kmax, wide):
        table_size = self.id_to_row.shape[0]
        row = self.id_to_row[uid.clamp(0, table_size - 1)]
        known = (uid >= 0) & (uid < table_size) & (row >= 0)
        row = torch.where(known, row, torch.full_like(row, self.n_users))
        scores = self.users_half[row] @ self.items_half_t                      # B x I, FP16
        top = self._candidates(scores, wide)                                    # B x W
        # FP32 rescore of the candidates from their full-precision rows
        exact = torch.bmm(self.items_full[top], self.users_full[row][:, :, None])[:, :, 0]
        start = self.seen_indptr[row]
        offsets = torch.arange(self.history, device=uid.device)
        valid = (offsets[None, :] < (self.seen_indptr[row + 1] - start)[:, None]) & known[:, None]
        seen = torch.where(valid, self.seen_items[(start[:, None] + offsets[None, :]) * valid],
                           torch.full_like(valid, -1, dtype=torch.int64))      # B x L
        drop = (top[:, :, None] == seen[:, None, :]).any(dim=2) | (self.item_ids[top] < 0)
        exact = torch.where(drop, torch.full_like(exact, float("-inf")), exact)
        best, order = torch.topk(exact, kmax, dim=1)
        ids = self.item_ids[top.gather(1, order)]
        # the cold lists indexed by positions of best's own width (not sliced 0:kmax): torch.export
        # then sees one size for both operands, not two data-dependent ones it cannot compare
        positions = torch.arange(best.shape[1], device=uid.device)
        ids = torch.where(known[:, None], ids, self.cold_ids[positions][None, :])
        best = torch.where(known[:, None], best, self.cold_scores[positions][None, :])
        return ids, best

    def _candidates(self, scores: torch.Tensor, wide):
        """Item indices [B, W] of each row's W best FP16 scores (in no particular order)."""
        if self.chunk == 0:
            return top_indices(scores, wide)
        chunks = best_chunks(scores.view(scores.shape[0], -1, self.chunk).amax(dim=2), wide, self.groups)
        return best_of_groups(scores, chunks, self.chunk, wide)


def top_indices(values: torch.Tensor, wide):
    """Indices [B, W] of each row's W largest values, in no promised order (a full sort of short
    rows instead was measured slower on an H200: docs/gpu_h200.md)."""
    return torch.topk(values, wide, dim=1, sorted=False)[1]


def best_chunks(maxima: torch.Tensor, wide, groups: int):
    """Indices [B, W] of the W largest chunk maxima [B, C], through groups of ``groups`` chunks
    when groups > 1 (C a multiple of groups)."""
    if groups <= 1:
        return top_indices(maxima, wide)
    grouped = maxima.view(maxima.shape[0], -1, groups)
    return best_of_groups(maxima, top_indices(grouped.amax(dim=2), wide), groups, wide)


def best_of_groups(values: torch.Tensor, group_idx: torch.Tensor, group: int, wide):
    """Indices [B, W] of the W largest ``values`` [B, N], given ``group_idx`` [B, W]: the W groups
    of ``group`` consecutive entries with the largest maxima (they hold the W largest values)."""
    rows = values.shape[0]
    members = values.view(rows, -1, group).gather(1, group_idx[:, :, None].expand(-1, -1, group))
    picks = top_indices(members.reshape(rows, -1), wide)
    return group_idx.gather(1, torch.div(picks, group, rounding_mode="floor")) * group + torch.remainder(picks, group)
