"""In-process throughput of a recommendation pipeline: the number the served one is held to.

    result = measure_inprocess(pipeline, rows, batch_size=1, seconds=3)

``pipeline(requests) -> answer`` is any entry's reference (``Scenario.reference``): the
three-step numpy + ONNX Runtime path, a fused ONNX graph, a TorchScript module on a GPU.
``rows`` are single-row requests stacked on axis 0 (``Scenario.perf_rows``: real users and
items); consecutive rows make a batch, in order, cycling. One caller, one request at a
time: the load perf_analyzer gives a server at concurrency 1, minus the server.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

Requests = dict[str, np.ndarray]
Pipeline = Callable[[Requests], dict]


@dataclass(frozen=True)
class InProcessResult:
    label: str
    batch_size: int
    requests: int
    recommendations_per_s: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def row_batches(rows: Requests, batch_size: int) -> list[Requests]:
    """Consecutive, non-overlapping batches of ``batch_size`` rows."""
    n = len(next(iter(rows.values())))
    if n < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} request rows, got {n}")
    return [{name: value[i:i + batch_size] for name, value in rows.items()}
            for i in range(0, n - batch_size + 1, batch_size)]


def measure_inprocess(run: Pipeline, rows: Requests, batch_size: int = 1, seconds: float = 3.0,
                      warmup: int = 20, label: str = "",
                      synchronize: Callable[[], None] | None = None) -> InProcessResult:
    """Run ``run`` back to back for ``seconds``; latency per request, throughput in rows/s."""
    batches = row_batches(rows, batch_size)
    for i in range(warmup):
        run(batches[i % len(batches)])
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        run(batches[len(latencies) % len(batches)])
        if synchronize is not None:
            synchronize()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return InProcessResult(label=label, batch_size=batch_size, requests=len(latencies),
                           recommendations_per_s=len(latencies) * batch_size / elapsed,
                           p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)))
