"""Scale: how the fused retrieval model's throughput falls as the catalogue grows.

    recdeploy perf --lab model_repository --scale 100000,1000000

For each catalogue size a synthetic fused model (lookup -> score -> mask -> top-K, one ONNX
graph) is timed in-process at batch 64 next to the bare GEMM of the same shape in the same
runtime and thread count: the machine's own matrix-multiply roofline. The ratio says how
much the lookup, the mask and the top-K add on top of the unavoidable product.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recdeploy.export.fused import export_fused_onnx, onnx_runner
from recdeploy.perf.synthetic_catalogue import synthetic_fused


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
