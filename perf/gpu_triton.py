"""A Triton kernel that scans the catalogue without writing the B x I score matrix (GPU only).

    rank = TritonChunkRank(gpu_retrieval, chunk=8)     # GpuRetrieval built with the same chunk
    ids, scores = rank(uid, kmax=100)                  # as GpuRetrieval.rank_static

At batch 64-256 writing and re-reading FP16 scores costs more than reading the catalogue
(B x I x 2 bytes each way against I x D x 2). This kernel computes a tile of scores in
registers (users [BM, D] x items [D, BN] on the tensor cores, plus the bias) and stores only
the maximum of every ``chunk`` consecutive items: B x I / chunk values. The W best chunks of
a row (torch.topk, through groups of chunks when the GpuRetrieval has ``groups``) hold its W
best items (the argument of GpuRetrieval's two-stage top-K);
their members are rescored in FP32 from the full-precision rows, the seen ones dropped, and
the first K kept. Benchmark variant, in-process only (``perf/gpu_bench.py``): it needs triton
and a CUDA device, or ``TRITON_INTERPRET=1`` on a CPU to check it on a small catalogue.
"""
from __future__ import annotations

import functools
from typing import Any

import torch

from recdeploy.export.fused_gpu import GpuRetrieval, best_chunks
from recdeploy.export.fused_triton import TritonFusedRank
from recdeploy.perf import gpu_inprocess as inproc


def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def chunk_max(users, items_t, bias, out, rows, n_items, stride_u, stride_c, stride_o,
                  D: tl.constexpr, BLOCK_D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                  CH: tl.constexpr, TILES: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BM + tl.arange(0, BM)
        rd = tl.arange(0, BLOCK_D)
        u = tl.load(users + rm[:, None] * stride_u + rd[None, :],
                    mask=(rm[:, None] < rows) & (rd[None, :] < D), other=0.0)
        for tile in range(TILES):
            rn = (pid_n * TILES + tile) * BN + tl.arange(0, BN)
            c = tl.load(items_t + rd[:, None] * stride_c + rn[None, :],
                        mask=(rd[:, None] < D) & (rn[None, :] < n_items), other=0.0)
            s = tl.dot(u, c) + tl.load(bias + rn, mask=rn < n_items, other=-65504.0)[None, :]
            m = tl.max(tl.reshape(s, (BM, BN // CH, CH)), axis=2)
            rc = (pid_n * TILES + tile) * (BN // CH) + tl.arange(0, BN // CH)
            tl.store(out + rm[:, None] * stride_o + rc[None, :], m.to(out.dtype.element_ty),
                     mask=(rm[:, None] < rows) & (rc[None, :] < n_items // CH))

    return triton, chunk_max


class TritonChunkRank:
    """GpuRetrieval's answers through the chunk-max kernel; ``config`` = (BN, TILES, warps, stages)."""

    def __init__(self, model: GpuRetrieval, chunk: int = 8, config: tuple[int, int, int, int] = (128, 4, 4, 3)):
        if model.chunk != chunk:
            raise ValueError(f"build the GpuRetrieval with chunk={chunk} (its padding), not {model.chunk}")
        self.triton, self.kernel = _kernel()
        self.model, self.chunk, self.config = model, chunk, config
        self.dim = model.dim
        # the plain vectors; the kernel adds the bias from its own FP32 row
        self.items_t = model.items_half_t[:model.dim].contiguous()
        self.bias = model.items_full[:, model.dim].contiguous()
        self.block_d = max(16, 1 << (model.dim - 1).bit_length())

    def chunk_maxima(self, users_half: torch.Tensor) -> torch.Tensor:
        rows = users_half.shape[0]
        block_n, tiles, warps, stages = self.config
        block_m = min(64, max(16, 1 << (rows - 1).bit_length()))
        n_items = self.items_t.shape[1]
        out = torch.empty((rows, n_items // self.chunk), dtype=torch.float16, device=users_half.device)
        grid = (self.triton.cdiv(rows, block_m), self.triton.cdiv(n_items, block_n * tiles))
        self.kernel[grid](users_half, self.items_t, self.bias, out, rows, n_items, users_half.stride(0),
                          self.items_t.stride(0), out.stride(0), D=self.dim, BLOCK_D=self.block_d,
                          BM=block_m, BN=block_n, CH=self.chunk, TILES=tiles, num_warps=warps,
                          num_stages=stages)
        return out

    def __call__(self, uid: torch.Tensor, kmax: int):
        model = self.model
        table_size = model.id_to_row.shape[0]
        row = model.id_to_row[uid.clamp(0, table_size - 1)]
        known = (uid >= 0) & (uid < table_size) & (row >= 0)
        row = torch.where(known, row, torch.full_like(row, model.n_users))
        users = model.users_half[row][:, :self.dim].contiguous()
        wide = min(kmax + model.history + model.margin, model.padded_items // (self.chunk * model.groups))
        chunks = best_chunks(self.chunk_maxima(users), wide, model.groups)                    # B x W
        members = (chunks[:, :, None] * self.chunk
                   + torch.arange(self.chunk, device=uid.device)).reshape(len(uid), -1)    # B x W*CH
        exact = torch.bmm(model.items_full[members], model.users_full[row][:, :, None])[:, :, 0]
        start = model.seen_indptr[row]
        offsets = torch.arange(model.history, device=uid.device)
        valid = (offsets[None, :] < (model.seen_indptr[row + 1] - start)[:, None]) & known[:, None]
        seen = torch.where(valid, model.seen_items[(start[:, None] + offsets[None, :]) * valid],
                           torch.full_like(valid, -1, dtype=torch.int64))
        drop = (members[:, :, None] == seen[:, None, :]).any(dim=2) | (model.item_ids[members] < 0)
        best, order = torch.topk(torch.where(drop, torch.full_like(exact, float("-inf")), exact), kmax, dim=1)
        ids = model.item_ids[members.gather(1, order)]
        ids = torch.where(known[:, None], ids, model.cold_ids[None, :kmax])
        return ids, torch.where(known[:, None], best, model.cold_scores[None, :kmax])


def triton_variants(base: GpuRetrieval, chunk: int, k: int, device: torch.device,
                    name: str = "triton_chunkmax") -> dict[str, inproc.Variant]:
    """The benchmark's Triton variants over ``base`` (built with ``chunk``, its groups and its
    selection): eager, and as a CUDA graph on a GPU."""
    rank = TritonChunkRank(base, chunk)
    chunkmax = (f"Triton kernel: scores in registers, max per {chunk} items stored, W best chunks "
                f"(through groups of {base.groups} chunks) rescored in FP32")
    forms: dict[str, tuple[Any, str]] = {name: (rank, chunkmax)}
    fused = ("three Triton kernels (export/fused_triton.py): scan with chunk and group maxima, W-th best chunk "
             "by radix select, FP32 rescore of the W best chunks' items and top-K in one kernel")
    if base.groups > 1:    # the default settings, and one with more warps on the two per-row kernels
        forms["triton_fused"] = (TritonFusedRank(base), fused)
        forms["triton_fused_w8"] = (TritonFusedRank(base, select=(8, 2048), rescore_warps=16),
                                    fused + " (select: 8 warps, 2048 maxima a step; rescore: 16 warps)")
    variants = {}
    for form, (ranker, what) in forms.items():
        variants[form] = inproc.Variant(form, what, _eager(ranker, k))
        if device.type == "cuda":
            variants[form + "_graph"] = inproc.Variant(form + "_graph", what + ", CUDA graph (fixed B, K)",
                                                       inproc.cuda_graph(functools.partial(ranker, kmax=k), device))
    return variants


def _eager(ranker, k: int):
    return lambda batch: (lambda users, _k: ranker(users[:, 0], k))
