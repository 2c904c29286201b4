"""In-process throughput of a recommendation pipeline: the number the served one is held to.

    result = measure_inprocess(run, user_ids, batch_size=1, k=10, seconds=3)

``run(users [B,1] int64, k [B,1] int32)`` is any pipeline: the three-step numpy + ONNX
Runtime path, the fused ONNX graph, or the TorchScript module on a GPU. One caller, one
request at a time, real user ids cycled in order: the same load perf_analyzer gives a server
at concurrency 1, minus the server.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

Pipeline = Callable[[np.ndarray, np.ndarray], tuple]


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


def measure_inprocess(run: Pipeline, user_ids: np.ndarray, batch_size: int = 1, k: int = 10,
                      seconds: float = 3.0, warmup: int = 20, label: str = "",
                      synchronize: Callable[[], None] | None = None) -> InProcessResult:
    """Run ``run`` back to back for ``seconds``; latency per request, throughput in users/s."""
    users = np.asarray(user_ids, dtype=np.int64)
    if len(users) < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} user ids, got {len(users)}")
    batches = [users[i:i + batch_size].reshape(-1, 1)
               for i in range(0, len(users) - batch_size + 1, batch_size)]
    k_column = np.full((batch_size, 1), k, dtype=np.int32)
    for i in range(warmup):
        run(batches[i % len(batches)], k_column)
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        run(batches[len(latencies) % len(batches)], k_column)
        if synchronize is not None:
            synchronize()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return InProcessResult(label=label, batch_size=batch_size, requests=len(latencies),
                           recommendations_per_s=len(latencies) * batch_size / elapsed,
                           p50_ms=float(np.percentile(ms, 50)), p99_ms=float(np.percentile(ms, 99)))


def three_step_pipeline(repository, scorer: str = "scorer", threads: int = 2) -> Pipeline:
    """The recommend ensemble's own steps in-process (numpy lookup -> ORT scorer -> numpy top-K)."""
    from recdeploy.export.inprocess import InProcessRecommender
    recommender = InProcessRecommender(repository, scorer, threads)
    return lambda users, k: recommender.recommend(users[:, 0], int(k[0, 0]))


def onnx_pipeline(path, threads: int = 2) -> Pipeline:
    """A one-graph pipeline (USER_ID, K -> ITEM_IDS, SCORES) under ONNX Runtime."""
    from recdeploy.export.fused import onnx_runner
    return onnx_runner(path, threads)


def torchscript_pipeline(path, threads: int = 2) -> Pipeline:
    """A one-graph TorchScript pipeline (the libtorch variant) under torch, ``threads`` intra-op."""
    import torch

    from recdeploy.export.fused import torchscript_runner
    torch.set_num_threads(threads)
    return torchscript_runner(path)
