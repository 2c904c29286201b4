"""In-process timing of the fused retrieval variants on one device, checked against FP32.

    variants = build_variants(models, device)        # name -> Variant
    rows = time_variants(variants, inputs, batches)   # CUDA events (host clock on a CPU)

Every variant answers (users [B,1] on the device, K) -> (ids [B,K], scores [B,K]) on the device;
inputs are staged on the device beforehand and rotated, so a number is the per-call time of
the computation (``end_to_end`` adds the host copies a server pays). The floor is one pass
over the FP16 catalogue at the memory bandwidth: ``floor_us`` for the nominal and the
measured copy bandwidth. ``profile_table`` is torch.profiler's kernel table of one variant.
"""
from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from recdeploy.export.fused import FusedRetrieval
from recdeploy.export.fused_gpu import GpuRetrieval

Call = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Variant:
    name: str
    what: str
    # (users [B,1], k [B,1]) on the device -> (ids, scores); prepare(batch) runs once per batch
    # size before timing (CUDA graph capture, torch.compile warm-up) and returns the call
    prepare: Callable[[int], Call]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(call: Callable[[int], object], device: torch.device, iters: int = 30, warmup: int = 5) -> dict:
    """Per-call microseconds of call(i) for i = 0.. (median, p10, p90): CUDA events around each
    call on a GPU (the device timeline, host syncs inside the call included), else the host clock."""
    for i in range(warmup):
        call(i)
    synchronize(device)
    times: list[float] = []
    if device.type == "cuda":
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for i, (start, end) in enumerate(pairs):
            start.record()
            call(i)
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) * 1e3 for start, end in pairs]
    else:
        for i in range(iters):
            t0 = time.perf_counter()
            call(i)
            times.append((time.perf_counter() - t0) * 1e6)
    q = np.percentile(times, [10, 90])
    return {"us": statistics.median(times), "p10_us": float(q[0]), "p90_us": float(q[1]), "iters": iters}


def copy_bandwidth(device: torch.device, gigabytes: float = 2.0) -> float:
    """Bytes/s of a device-to-device copy, counting bytes read plus written (METHOD.md)."""
    n = int(gigabytes * 1e9 / 2 / 4)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    timing = time_call(lambda i: dst.copy_(src), device, iters=10, warmup=2)
    return 2 * src.nbytes / (timing["us"] * 1e-6)


def floor_us(n_items: int, dim: int, bandwidth: float) -> float:
    """One read of an n_items x dim FP16 catalogue at ``bandwidth`` bytes/s."""
    return n_items * dim * 2 / bandwidth * 1e6


def overlap(ids: np.ndarray, reference: np.ndarray) -> float:
    """Mean |top-K ∩ reference top-K| / K over rows."""
    return float(np.mean([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(ids.tolist(), reference.tolist())]))


def parity(ids, scores, ref_ids, ref_scores) -> dict:
    """Overlap with the reference lists; max |score diff| position by position (both sorted)."""
    finite = np.isfinite(ref_scores) & np.isfinite(scores)
    return {"overlap": overlap(ids, ref_ids),
            "max_score_diff": float(np.abs(np.where(finite, scores - ref_scores, 0)).max()),
            "same_lists": float(np.mean([a == b for a, b in zip(ids.tolist(), ref_ids.tolist())]))}


# ------------------------------------------------------------------ the variants

def eager(module) -> Callable[[int], Call]:
    return lambda batch: (lambda users, k: module(users, k))


def graph_of(module: FusedRetrieval) -> Callable[[int], Call]:
    return lambda batch: (lambda users, k: module.graph_forward(users, k))


def cuda_graph(static_rank: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
               device: torch.device) -> Callable[[int], Call]:
    """static_rank(users [B]) (no host sync: GpuRetrieval.rank_static at a fixed K, or the Triton
    form) captured once per batch size; a call copies the users in and replays."""
    def prepare(batch: int) -> Call:
        static = torch.zeros(batch, dtype=torch.int64, device=device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                static_rank(static)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = static_rank(static)

        def call(users, _k):
            static.copy_(users[:, 0])
            graph.replay()
            return out
        return call
    return prepare


def compiled(model: GpuRetrieval, k: int, mode: str) -> Callable[[int], Call]:
    """torch.compile of rank_static at a fixed K (static sizes; one compile per batch size)."""
    fn = torch.compile(lambda uid: model.rank_static(uid, k), mode=mode, dynamic=False)
    return lambda batch: (lambda users, _k: fn(users[:, 0]))


# the GpuRetrieval models timed, by the name gpu_bench builds them under
GPU_SHAPED = ("gpu_fp16", "gpu_fp16_chunk", "gpu_fp16_cascade")


def build_variants(models: Mapping[str, Any], device: torch.device, k: int,
                   with_graphs: bool = True) -> dict[str, Variant]:
    """The variants timed, from the models built by gpu_bench (missing ones are left out)."""
    variants: dict[str, Variant] = {}
    if "graph_fp32" in models:
        variants["graph_fp32"] = Variant("graph_fp32", "FusedRetrieval.graph_forward, FP32 catalogue (served today)",
                                         graph_of(models["graph_fp32"]))
    if "graph_fp16" in models:
        variants["graph_fp16"] = Variant("graph_fp16", "FusedRetrieval.graph_forward, FP16 catalogue, FP32 scores",
                                         graph_of(models["graph_fp16"]))
    for name in GPU_SHAPED:
        if name in models:
            model = models[name]
            stages = "in one"
            if model.chunk:
                stages = f"in two stages (chunks of {model.chunk})" if model.groups <= 1 else \
                    f"in three stages (chunks of {model.chunk}, groups of {model.groups} chunks)"
            what = f"GpuRetrieval: FP16 scores, top-(K+L+margin) {stages}, FP32 rescore"
            variants[name] = Variant(name, what + ", eager", eager(model))
            if with_graphs and device.type == "cuda":
                variants[name + "_graph"] = Variant(name + "_graph", what + ", CUDA graph (fixed B, K)",
                                                    cuda_graph(functools.partial(model.rank_static, kmax=k), device))
    return variants


def time_variants(variants: dict[str, Variant], users: np.ndarray, batches: list[int], k: int,
                  device: torch.device, iters: int, on_row: Callable[[dict], None]) -> None:
    """Time every variant at every batch size; ``on_row`` hears each result (kept as it comes)."""
    sets = 8
    for batch in batches:
        staged = [torch.as_tensor(np.resize(np.roll(users, -i * batch), batch).reshape(-1, 1), device=device)
                  for i in range(sets)]
        ks = torch.full((batch, 1), k, dtype=torch.int32, device=device)
        for variant in variants.values():
            row = {"variant": variant.name, "batch": batch}
            try:
                timing = time_call(_rotating(variant.prepare(batch), staged, ks), device, iters=iters)
                row |= timing | {"recs_per_s": batch / (timing["us"] * 1e-6)}
            except Exception as error:  # one variant's failure is a row, not the end
                row["error"] = f"{type(error).__name__}: {error}"[:500]
            on_row(row)


def _rotating(call: Call, staged: list[torch.Tensor], ks: torch.Tensor) -> Callable[[int], object]:
    return lambda i: call(staged[i % len(staged)], ks)


def check_variants(variants: dict[str, Variant], reference: Call, users: np.ndarray, k: int,
                   device: torch.device) -> dict[str, dict]:
    """Each variant's answers for one batch against the reference (FP32 graph_forward)."""
    staged = torch.as_tensor(users.reshape(-1, 1), device=device)
    ks = torch.full_like(staged, k, dtype=torch.int32)
    with torch.inference_mode():
        ref_ids, ref_scores = (t.cpu().numpy() for t in reference(staged, ks))
        out = {}
        for name, variant in variants.items():
            try:
                ids, scores = variant.prepare(len(users))(staged, ks)
                out[name] = parity(ids.cpu().numpy(), scores.cpu().numpy(), ref_ids, ref_scores)
            except Exception as error:
                out[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
    return out


def profile_table(call: Callable[[], object], device: torch.device, rows: int = 15,
                  iters: int = 10) -> tuple[str, list]:
    """torch.profiler's table (sorted by device time) of ``iters`` calls, and its top rows."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    call()
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(iters):
            call()
        synchronize(device)
    events = prof.key_averages()
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    table = events.table(sort_by=key, row_limit=rows)
    top = sorted(events, key=lambda e: getattr(e, key, 0.0), reverse=True)[:8]
    return table, [{"name": e.key[:80], "us_per_call": getattr(e, key, 0.0) / iters, "calls": e.count // iters}
                   for e in top]
