"""The fused retrieval contract as three Triton kernels: scan, select, rescore (GPU only).

    rank = TritonFusedRank(GpuRetrieval(..., chunk=8, groups=64).cuda())
    ids, scores = rank(uid, kmax=100)          # uid [B] int64 -> [B, kmax] as GpuRetrieval.rank_static

GpuRetrieval spends most of a batch after its scan: three torch.topk calls, nine gathers and
an ``amax`` (docs/gpu_h200.md). Here nothing runs between the kernels, and no top-K runs over
a long row:

1. **scan** (grid: row blocks x groups of ``chunk * groups`` items) — user id -> row, the
   scores of a tile in registers (FP16 tensor cores, FP32 bias), stored only as the maximum
   of every ``chunk`` items (B x I/chunk, FP16) and of every group (B x I/(chunk*groups)).
2. **select** (one program per row) — the W-th largest group maximum ``t`` (W = K + L +
   margin, a sort of the row's group maxima); only groups at or above ``t`` can hold one of
   the W best chunks (W groups have a chunk at or above ``t``), and there are W of them plus
   ties. Among their chunk maxima a two-pass radix select (histograms of the high and the low
   byte of the FP16 keys) finds the W-th largest chunk maximum exactly, and the chunks at or
   above it are written out: W chunks plus ties, at most ``CAP``. The W best items lie in the
   W best chunks (GpuRetrieval's argument).
3. **rescore** (one program per row) — every item of those chunks rescored in FP32 from the
   full-precision rows (more than GpuRetrieval rescores: it keeps only the W best FP16 items
   of them), padding and seen items dropped, a sort of (score, position) keys, the first K
   kept; unknown users get the popularity list. Same contract and padding as GpuRetrieval.

Every step is a fixed number of launches with no host sync, so one CUDA graph captures the
lot. ``TRITON_INTERPRET=1`` runs it on a CPU for the tests (small catalogues).
"""
# no `from __future__ import annotations`: torch.library reads the custom op's annotations
import functools

import torch
from torch import nn

from recdeploy.export.fused import MAX_BATCH
from recdeploy.export.fused_gpu import GpuRetrieval


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@functools.cache
def _kernels():
    from recdeploy.export import fused_triton_kernels
    return fused_triton_kernels


TABLES = ("id_to_row", "users_half", "items_t", "bias", "users_full", "items_full", "item_ids", "seen_indptr",
          "seen_items", "cold_ids", "cold_scores")


def fused_rank(launch, uid: torch.Tensor, k: torch.Tensor, tables: list[torch.Tensor], n_users: int, dim: int,
               chunk: int, groups: int, wide: int, cap: int, kmax: int, block_m: int, block_n: int,
               warps: int, stages: int, select_warps: int, group_batch: int,
               rescore_warps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The three launches: uid [B] int64, k [B] int32 -> ids [B, kmax] int64, scores [B, kmax]
    fp32. ``tables`` in TABLES' order; ``launch(kernel)`` returns what to index with a grid (the
    kernel itself, or torch.library.wrap_triton(kernel) inside a custom op)."""
    kernels = _kernels()
    (id_to_row, users_half, items_t, bias, users_full, items_full, item_ids, seen_indptr, seen_items,
     cold_ids, cold_scores) = tables
    rows, n_items, device = uid.shape[0], items_t.shape[1], uid.device
    n_groups = n_items // (chunk * groups)
    chunk_max = torch.empty((rows, n_items // chunk), dtype=torch.float16, device=device)
    group_max = torch.empty((rows, n_groups), dtype=torch.float16, device=device)
    launch(kernels.scan)[(triton_cdiv(rows, block_m), n_groups)](
        uid, id_to_row, id_to_row.shape[0], n_users, users_half, items_t, bias, chunk_max, group_max, rows,
        n_items, users_half.stride(0), items_t.stride(0), chunk_max.stride(0), group_max.stride(0), D=dim,
        BLOCK_D=max(16, _pow2(dim)), BM=block_m, BN=block_n, CH=chunk, TILES=chunk * groups // block_n,
        num_warps=warps, num_stages=stages)
    picked = torch.empty((rows, cap), dtype=torch.int32, device=device)
    cand = torch.empty((rows, cap), dtype=torch.int32, device=device)
    count = torch.empty((rows,), dtype=torch.int32, device=device)
    launch(kernels.select)[(rows,)](
        group_max, chunk_max, picked, cand, count, n_groups, wide, group_max.stride(0), chunk_max.stride(0),
        picked.stride(0), cand.stride(0), GP=_pow2(n_groups), GROUP=groups, GB=group_batch, CAP=cap,
        num_warps=select_warps)
    ids = torch.empty((rows, kmax), dtype=torch.int64, device=device)
    scores = torch.empty((rows, kmax), dtype=torch.float32, device=device)
    launch(kernels.rescore)[(rows,)](
        uid, id_to_row, id_to_row.shape[0], n_users, users_full, items_full, item_ids, seen_indptr, seen_items,
        cold_ids, cold_scores, cand, count, k, ids, scores, kmax, users_full.stride(0), items_full.stride(0),
        cand.stride(0), ids.stride(0), WIDTH=users_full.shape[1], DB=8, CAP=cap, CH=chunk, KP=_pow2(kmax),
        num_warps=rescore_warps)
    return ids, scores


def triton_cdiv(a, b):
    return (a + b - 1) // b


class TritonFusedRank:
    """GpuRetrieval's answers in three kernel launches. ``config`` = (BN, warps, stages) of the
    scan (its tile is BN items, a group ``chunk * groups`` items, so TILES = group / BN);
    ``select`` = (warps, chunk maxima read per step, a multiple of ``groups``) of the selection;
    ``rescore_warps`` the last kernel's; ``margin_cap``: room for ties above W."""

    def __init__(self, model: GpuRetrieval, config: tuple[int, int, int] = (128, 4, 3),
                 select: tuple[int, int] = (4, 1024), rescore_warps: int = 8, margin_cap: int = 64):
        if model.chunk < 1 or model.groups < 2:
            raise ValueError("build the GpuRetrieval with chunk > 0 and groups > 1 (the scan's group "
                             f"padding), not chunk={model.chunk}, groups={model.groups}")
        block_n = config[0]
        group_items = model.chunk * model.groups
        if group_items % block_n or block_n % model.chunk:
            raise ValueError(f"a group of {group_items} items must be a whole number of {block_n}-item tiles, "
                             f"each a whole number of {model.chunk}-item chunks")
        self.model, self.config, self.select, self.rescore_warps = model, config, select, rescore_warps
        self.n_groups = model.padded_items // group_items
        self.margin_cap = margin_cap
        # the scan reads the plain vectors (transposed, FP16) and adds the bias from its own FP32 row
        views = {"items_t": model.items_half_t[:model.dim].contiguous(),
                 "bias": model.items_full[:, model.dim].contiguous()}
        self.tables = [views[name] if name in views else getattr(model, name) for name in TABLES]

    def widths(self, kmax: int) -> tuple[int, int]:
        """W (the candidates' count) and CAP (its power-of-two bound, ties included)."""
        model = self.model
        if not 1 <= kmax <= model.max_k:
            raise ValueError(f"k={kmax} must lie in 1..{model.max_k}, this model's largest K")
        wide = min(kmax + model.history + model.margin, self.n_groups)
        return wide, _pow2(wide + self.margin_cap)

    def settings(self, kmax: int, block_m: int) -> dict[str, int]:
        """fused_rank's integer arguments for answers of width ``kmax``."""
        wide, cap = self.widths(kmax)
        block_n, warps, stages = self.config
        m = self.model
        return {"n_users": m.n_users, "dim": m.dim, "chunk": m.chunk, "groups": m.groups, "wide": wide, "cap": cap,
                "kmax": kmax, "block_m": block_m, "block_n": block_n, "warps": warps, "stages": stages,
                "select_warps": self.select[0], "group_batch": max(1, self.select[1] // m.groups),
                "rescore_warps": self.rescore_warps}

    def __call__(self, uid: torch.Tensor, kmax: int, k: torch.Tensor | None = None):
        """uid [B] int64 -> ids [B, kmax] int64, scores [B, kmax] fp32; ``k`` [B] int32 per row
        (default: kmax for every row)."""
        if k is None:
            k = torch.full((uid.shape[0],), kmax, dtype=torch.int32, device=uid.device)
        block_m = min(64, max(16, _pow2(uid.shape[0])))
        return fused_rank(lambda kernel: kernel, uid, k, self.tables, **self.settings(kmax, block_m))


@functools.cache
def custom_op():
    """``torch.ops.recdeploy.triton_fused_rank``: fused_rank as a custom op, so torch.export
    records the three kernels and AOTInductor compiles them into its package."""
    from torch.library import triton_op, wrap_triton

    @triton_op("recdeploy::triton_fused_rank", mutates_args={})
    def triton_fused_rank(uid: torch.Tensor, k: torch.Tensor, tables: list[torch.Tensor], n_users: int, dim: int,
                          chunk: int, groups: int, wide: int, cap: int, kmax: int, block_m: int, block_n: int,
                          warps: int, stages: int, select_warps: int, group_batch: int,
                          rescore_warps: int) -> tuple[torch.Tensor, torch.Tensor]:
        return fused_rank(wrap_triton, uid, k, tables, n_users, dim, chunk, groups, wide, cap, kmax, block_m,
                          block_n, warps, stages, select_warps, group_batch, rescore_warps)
    return triton_fused_rank


class TritonRetrieval(nn.Module):
    """The served form of TritonFusedRank: user id [B, 1] int64, k [B, 1] int32 -> item ids
    [B, kmax] int64, scores [B, kmax] fp32, each row padded (-1 / -inf) past its own k; a k
    above kmax answers kmax items. The scan's row block is fixed (``block_m``), so the batch
    stays dynamic for torch.export."""

    def __init__(self, rank: TritonFusedRank, kmax: int, block_m: int = 32):
        super().__init__()
        for name, table in zip(TABLES, rank.tables):
            self.register_buffer(name, table)
        self.settings = rank.settings(kmax, block_m)
        self.op = custom_op()

    def forward(self, user_id: torch.Tensor, k: torch.Tensor):
        tables = [getattr(self, name) for name in TABLES]
        return self.op(user_id[:, 0].contiguous(), k[:, 0].to(torch.int32).contiguous(), tables, **self.settings)


def export_triton_program(module: TritonRetrieval, example_users: torch.Tensor,
                          max_batch: int = MAX_BATCH) -> torch.export.ExportedProgram:
    """torch.export of the served form with a dynamic batch (1..max_batch)."""
    users = example_users.reshape(-1, 1).to(torch.int64)
    k = torch.full_like(users, module.settings["kmax"], dtype=torch.int32)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return torch.export.export(module.eval(), (users, k), dynamic_shapes=({0: batch}, {0: batch}), strict=False)
