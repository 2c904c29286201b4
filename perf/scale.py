"""Scale: how the fused retrieval model's throughput falls as the catalogue grows.

    recdeploy perf --lab model_repository --scale 100000,1000000

For each catalogue size a synthetic fused model (lookup -> score -> mask -> top-K, one ONNX
graph) is timed in-process at batch 64 next to the bare GEMM of the same shape in the same
runtime and thread count: the machine's own matrix-multiply roofline. The ratio says how
much the lookup, the mask and the top-K add on top of the unavoidable product.

The cost curve (``run_costs``; ``recdeploy bench --costs``, ``recdeploy ann-bench --costs``)
puts the methods side by side from 10^4 to 10^7 items: exact FP32, exact over an FP16 or
INT8 row-wise catalogue, and ANN (HNSW, IVF-PQ) — throughput at batch 1 and 64, p99 at batch
1, resident memory and recall — so a reader sees where each stops being enough.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recdeploy.compress.rowwise import int8_rows
from recdeploy.export.ann_index import AnnConfig, ann_module, build_index, default_nlist, index_bytes, recall_at_k
from recdeploy.export.fused import dot_product_parts, export_fused_onnx, onnx_runner
from recdeploy.perf.ann_bench import (
    EXACT_CHUNK_SCORES,
    SYNTHETIC_OVERFETCH,
    Catalogue,
    K,
    exact_answer,
    searcher_for,
    time_calls,
    topk_core,
    tower_shaped,
    with_truth,
)
from recdeploy.perf.synthetic_catalogue import synthetic_fused
from recdeploy.train.checkpoint import load_checkpoint


@dataclass(frozen=True)
class ScaleRow:
    items: int
    batch: int
    fused_ms: float
    gemm_ms: float
    recs_per_s: float

    @property
    def over_roofline(self) -> float:
        return self.fused_ms / self.gemm_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "over_roofline": self.over_roofline}


def _median_ms(run, repeats: int = 7) -> float:
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def gemm_session(items_t: np.ndarray, threads: int):
    """ONNX Runtime session of one MatMul: users [B, D] x constant catalogue [D, I]."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["U", "C"], ["S"])], "gemm",
        [helper.make_tensor_value_info("U", TensorProto.FLOAT, ["B", items_t.shape[0]])],
        [helper.make_tensor_value_info("S", TensorProto.FLOAT, ["B", items_t.shape[1]])],
        [numpy_helper.from_array(items_t, "C")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def measure_scale(items: int, batch: int = 64, k: int = 10, threads: int = 2, dim: int = 64) -> ScaleRow:
    fused, features = synthetic_fused(items, n_users=max(batch * 4, 1000), dim=dim)
    users = features.user_ids[:batch].reshape(-1, 1)
    ks = np.full((batch, 1), k, np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        run = onnx_runner(export_fused_onnx(fused, Path(tmp) / "f.onnx", users[:4, 0]), threads)
        fused_ms = _median_ms(lambda: run(users, ks))
    items_t = fused.item_vectors_t.numpy()
    vectors = fused.user_vectors.numpy()[:batch]
    session = gemm_session(items_t, threads)
    gemm_ms = _median_ms(lambda: session.run(["S"], {"U": vectors}))
    return ScaleRow(items=items, batch=batch, fused_ms=fused_ms, gemm_ms=gemm_ms,
                    recs_per_s=batch / fused_ms * 1e3)


def run_scale(sizes, out_dir: Path | None = None, threads: int = 2, batch: int = 64) -> list[ScaleRow]:
    rows = []
    for items in sizes:
        row = measure_scale(int(items), batch=batch, threads=threads)
        print(f"scale {items:,} items, batch {batch}: fused {row.fused_ms:.1f} ms, "
              f"GEMM {row.gemm_ms:.1f} ms ({row.over_roofline:.2f}x), {row.recs_per_s:,.0f} recs/s")
        rows.append(row)
    return rows


def render_scale_markdown(rows: list[ScaleRow]) -> str:
    lines = ["## Catalogue scale (fused model, in-process, ONNX Runtime)", "",
             "| items | batch | fused ms | GEMM roofline ms | fused / GEMM | recs/s |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.items:,} | {r.batch} | {r.fused_ms:.1f} | {r.gemm_ms:.1f} | {r.over_roofline:.2f}x | "
              f"{r.recs_per_s:,.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the cost curve by method
# recdeploy bench --costs 10000,100000,1000000 (and recdeploy ann-bench --costs ...): exact FP32,
# exact over a compressed catalogue (FP16, INT8 row-wise) and ANN, side by side per catalogue size

@dataclass(frozen=True)
class CostRow:
    items: int
    method: str              # exact FP32 | exact FP16 | exact INT8 | ANN HNSW | ANN IVF-PQ
    b1_recs_per_s: float
    b1_p99_ms: float         # of ``calls`` batch-1 calls (few at 10^7: read it as a max)
    b64_recs_per_s: float
    memory_mib: float        # what the step keeps resident for scoring (ANN: index + FP32 re-rank catalogue)
    recall: float            # recall@10 against exact FP32
    calls: int

    def to_dict(self) -> dict:
        return asdict(self)


class CompressedCatalogue:
    """Exact scores over a catalogue stored as FP16 or INT8 row-wise codes (compress/rowwise.py's
    symmetric scheme), converted block by block inside the product (the ANN step's
    ``block_scores``): the memory (and the bytes a scan reads) shrink 2x / 4x; CPU compute
    stays FP32, so each block pays a conversion."""

    BLOCK = 1 << 18   # rows converted at once (~17 MB of FP32 at 65 columns)

    def __init__(self, items: np.ndarray, kind: str):
        if kind == "fp16":
            self.codes, self.scale = items.astype(np.float16), None
        elif kind == "int8":
            self.codes, self.scale = int8_rows(items, self.BLOCK)
        else:
            raise ValueError(f"unknown catalogue compression {kind!r}; valid: fp16, int8")

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + (self.scale.nbytes if self.scale is not None else 0))

    def scores(self, users: np.ndarray) -> np.ndarray:
        return ann_module.block_scores(users, self.codes, self.scale, self.BLOCK)


def cost_methods(catalogue: Catalogue, hnsw_max_items: int, threads: int, max_nlist: int = 4096):
    """(name, answer(rows, seen) -> ids, resident bytes) for every method at this size."""
    known = np.ones((64, 1), bool)
    chunk = max(1, int(EXACT_CHUNK_SCORES // catalogue.n_items))

    def exact_over(scores):
        def answer(rows, seen):
            return np.concatenate([topk_core.top_k(scores(catalogue.users[rows[s:s + chunk]]), seen[s:s + chunk],
                                                   known[:len(rows[s:s + chunk])], K, catalogue.popularity,
                                                   catalogue.item_ids)[0] for s in range(0, len(rows), chunk)])
        return answer

    yield "exact FP32", exact_answer(catalogue), catalogue.items.nbytes
    for kind in ("fp16", "int8"):
        compressed = CompressedCatalogue(catalogue.items, kind)
        yield f"exact {kind.upper()}", exact_over(compressed.scores), compressed.nbytes
        del compressed
    configs = [AnnConfig("hnsw", ef_search=64)] if catalogue.n_items <= hnsw_max_items else []
    configs.append(AnnConfig("ivfpq", nlist=min(max_nlist, default_nlist(catalogue.n_items)), pq_m=16, nprobe=16,
                             k_factor=4.0))
    for config in configs:
        index = build_index(catalogue.items, config)
        searcher = searcher_for(index, catalogue, {**config.settings(), "overfetch": SYNTHETIC_OVERFETCH}, threads)
        yield (f"ANN {'HNSW' if config.kind == 'hnsw' else 'IVF-PQ'}",
               lambda rows, seen, s=searcher: s.top_k(rows, seen, known[:len(rows)], K)[0],
               index_bytes(index) + catalogue.items.nbytes)
        del index, searcher


def measure_costs(items: int, users: np.ndarray, item_table: np.ndarray, threads: int = 2,
                  hnsw_max_items: int = 2_000_000, queries: int = 128, calls: int = 0,
                  max_nlist: int = 4096) -> list[CostRow]:
    """Every method on one tower-shaped synthetic catalogue of ``items`` items; ``calls``
    batch-1 calls per method (0: fewer as the catalogue grows)."""
    catalogue = with_truth(tower_shaped(items, users, item_table, queries=queries))
    calls = calls or (100 if items <= 100_000 else 30 if items <= 1_000_000 else 8)
    rows = []
    for name, answer, resident in cost_methods(catalogue, hnsw_max_items, threads, max_nlist):
        timing, ids = time_calls(answer, catalogue, calls, 2)
        rows.append(CostRow(items, name, timing.b1_recs_per_s, timing.b1_p99_ms, timing.b64_recs_per_s,
                            resident / 2 ** 20, recall_at_k(ids, catalogue.truth), calls))
        print(f"costs {items:,} {name}: {timing.b1_recs_per_s:,.0f}/s b1 (p99 {timing.b1_p99_ms:.1f} ms), "
              f"{timing.b64_recs_per_s:,.0f}/s b64, {rows[-1].memory_mib:,.0f} MiB, recall {rows[-1].recall:.3f}",
              flush=True)
    return rows


def run_costs(sizes, users: np.ndarray, item_table: np.ndarray, threads: int = 2,
              hnsw_max_items: int = 2_000_000, max_nlist: int = 4096) -> list[CostRow]:
    return [row for items in sizes
            for row in measure_costs(int(items), users, item_table, threads, hnsw_max_items, max_nlist=max_nlist)]


def render_costs_markdown(rows: list[CostRow]) -> str:
    lines = ["## Cost by catalogue size and method (in-process, k=10)", "",
             "| items | method | recs/s b1 | p99 ms b1 | recs/s b64 | memory MiB | recall@10 vs exact |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.items:,} | {r.method} | {r.b1_recs_per_s:,.0f} | {r.b1_p99_ms:.1f} | {r.b64_recs_per_s:,.0f} | "
              f"{r.memory_mib:,.1f} | {r.recall:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_costs(rows: list[CostRow], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    panels = (("b1_recs_per_s", "recs/s, batch 1"), ("b64_recs_per_s", "recs/s, batch 64"),
              ("b1_p99_ms", "p99 ms, batch 1"), ("memory_mib", "resident MiB"))
    for ax, (attr, title) in zip(axes, panels):
        for method in dict.fromkeys(r.method for r in rows):
            mine = [r for r in rows if r.method == method]
            ax.plot([r.items for r in mine], [getattr(r, attr) for r in mine], "o-", label=method, ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue items")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tower_tables(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(users [U, D], items [I, D]) of a trained dot-product run, bias folded in: the shape
    synthetic catalogues copy."""
    model: Any = load_checkpoint(run).model
    parts = dot_product_parts(model.retrieval_scorer().eval())
    if parts is None:
        raise ValueError(f"{run} is not a dot-product model (two_tower, biased_mf): no item tower to copy")
    return parts[0], parts[1]
