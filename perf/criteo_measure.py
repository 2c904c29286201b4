"""What ``recdeploy bench-criteo`` measures per served variant, each in a fresh process:
load time and resident memory of the ONNX Runtime session Triton's onnxruntime backend would
run, latency per batch of impressions, and the tritonserver process tree's memory.

    result = measure_session(Path("criteo_ranker/1/model.onnx"), rows_per_field, (1, 64, 256, 2048))
    result["load_s"], result["rss_mb"], result["latency_ms"][256]
    server_rss_mb(pid)                      # tritonserver + its python stubs, VmRSS summed

A fresh process per variant, so one variant's memory never counts toward another's; the RSS
is taken after the imports, so only the session (its weights, its arenas) is counted. Weights
in ``model.onnx.data`` are memory-mapped by ONNX Runtime, so right after load they cost
almost nothing and grow with the pages lookups touch: ``rss_after_mb`` is after the timed runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# runs in the child: argv = path, threads, batches json, rows_per_field json, seconds
_CHILD = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort

def rss_mb(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return 0.0

path, threads = sys.argv[1], int(sys.argv[2])
batches, rows, seconds = json.loads(sys.argv[3]), np.array(json.loads(sys.argv[4])), float(sys.argv[5])
base = rss_mb()
options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
started = time.perf_counter()
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
load_s = time.perf_counter() - started
loaded = rss_mb()
rng = np.random.default_rng(0)
latency = {}
for batch in batches:
    feeds = {"DENSE_X": rng.random((1, batch, 13), dtype=np.float32) * 3,
             "SPARSE": (rng.random((1, batch, 26)) * rows).astype(np.int64)}
    for _ in range(2):
        session.run(["SCORES"], feeds)
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t = time.perf_counter()
        session.run(["SCORES"], feeds)
        times.append(time.perf_counter() - t)
    latency[batch] = 1000 * float(np.median(times))
print(json.dumps({"load_s": load_s, "rss_mb": loaded - base, "peak_mb": rss_mb("VmHWM") - base,
                  "rss_after_mb": rss_mb() - base, "file_backed_mb": rss_mb("RssFile"),
                  "latency_ms": latency}))
"""


def measure_session(path: Path, rows_per_field, batches=(1, 64, 256, 2048), threads: int = 2,
                    seconds: float = 1.0) -> dict:
    """Load ``path`` in a fresh Python; -> load_s, rss_mb (after load, session only), peak_mb,
    rss_after_mb (after the timed runs), file_backed_mb (mapped file pages resident), latency_ms
    {batch: median ms}, throughput {batch: impressions/s}. ONNX Runtime memory-maps external
    data: such weights are resident only as far as lookups have touched their pages."""
    argv = [sys.executable, "-c", _CHILD, str(path), str(threads), json.dumps(list(batches)),
            json.dumps([int(r) for r in rows_per_field]), str(seconds)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {path} failed: {proc.stderr.strip()[-800:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["latency_ms"] = {int(b): ms for b, ms in result["latency_ms"].items()}
    result["throughput"] = {b: 1000 * b / ms for b, ms in result["latency_ms"].items()}
    return result


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.is_file():
            found += [int(c) for c in children.read_text().split()]
    return found


def server_rss_mb(pid: int) -> dict[str, float]:
    """VmRSS of a process and every descendant, by command name (tritonserver, the stubs)."""
    out: dict[str, float] = {}
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        name = fields.get("Name", "?").strip()
        rss = fields.get("VmRSS", "0 kB").split()[0]
        out[name] = out.get(name, 0.0) + int(rss) / 1024.0
        stack += _children(current)
    return out


def file_bytes(onnx_path: Path) -> int:
    data = onnx_path.with_name(onnx_path.name + ".data")
    return onnx_path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def pareto_chart(rows: list[dict], path: Path, budget: float) -> Path:
    """Model bytes (tables + MLPs; the tables' where a row has no model_bytes; x, log) vs test
    AUC (y), point size ~ latency at batch 256; the FP32 AUC minus the budget as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = next(r for r in rows if r["name"] == "fp32")
    for row in rows:
        mib = row.get("model_bytes", row["table_bytes"]) / 2**20
        latency = row.get("latency_ms", {}).get(256)
        size = 30 + (4 * latency if latency else 0)
        served = "latency_ms" in row
        ax.scatter(mib, row["test_auc"], s=size, alpha=0.7,
                   marker="o" if served else "x", color="C0" if served else "C7")
        ax.annotate(row["name"], (mib, row["test_auc"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.axhline(full["test_auc"] - budget, ls="--", color="C3", lw=1, label=f"FP32 AUC - {budget:g}")
    ax.set_xscale("log")
    ax.set_xlabel("model in memory: tables + MLPs (MiB, log)")
    ax.set_ylabel("test AUC")
    ax.set_title("memory vs AUC (o: exported, size ~ latency at batch 256)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
