"""Measuring ONNX variants: file size, parameters, operators, quality, in-process latency.

    sessions = {name: cpu_session(path) for name, path in files.items()}
    timings = interleaved_latency(sessions, {1: one_user, 256: many_users}, rounds=7)

Latency is measured for all variants in one run, interleaved round by round (the order
rotates every round) and summarized by medians, so a noisy shared machine slows every
variant alike instead of whichever happened to run during a spike.
"""
from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import numpy as np

QUANTIZED_OPS = ("MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear",
                 "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


class Timing(TypedDict):
    """One variant's latency at one batch size (interleaved_latency)."""
    ms: float                # median seconds per call, in ms
    spread_ms: float         # interquartile range
    min_ms: float
    per_s: float             # rows per second at the median
    samples_ms: list[float]  # one per round, paired across variants


def file_size(path: Path) -> int:
    """Bytes of the ONNX file plus its external-data file, if the exporter wrote one."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def graph_summary(path: Path) -> tuple[int, Counter, dict[str, int]]:
    """(parameters = elements of all initializers, op-type counts, initializer dtypes -> elements)"""
    import onnx
    from onnx import helper, numpy_helper  # noqa: F401

    model = onnx.load(str(path))
    params = 0
    dtypes: Counter[str] = Counter()
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        params += n
        dtypes[helper.tensor_dtype_to_np_dtype(init.data_type).name] += n
    ops = Counter(node.op_type for node in model.graph.node)
    return params, ops, dict(dtypes)


def session_scorer(session, output: str) -> Callable[[dict], np.ndarray]:
    return lambda inputs: session.run([output], inputs)[0]


def _time_calls(session, requests: list[dict], calls: int) -> float:
    """Mean seconds per call over `calls` calls cycling through the requests."""
    started = time.perf_counter()
    for i in range(calls):
        session.run(None, requests[i % len(requests)])
    return (time.perf_counter() - started) / calls


def interleaved_latency(sessions: dict[str, object], requests: dict[int, list[dict]],
                        rounds: int = 7, calls: dict[int, int] | None = None,
                        progress: bool = False) -> dict[str, dict[int, Timing]]:
    """{variant: {batch: {"ms": median, "spread_ms": IQR, "min_ms", "per_s": rows/s, "samples_ms"}}}

    Each sample is the mean of calls[batch] calls; samples_ms[r] of two variants come from the
    same round r, so their ratio is a paired comparison under the same background load.

    requests[batch]: real requests of that batch size, cycled through.
    """
    # >= 20 calls a sample: fewer made samples short against the scheduler's time slices on
    # a shared VM
    calls = calls or {batch: max(20, 1000 // batch) for batch in requests}
    names = list(sessions)
    for name in names:                      # warm-up: first calls allocate and JIT-pack weights
        for batch in requests:
            _time_calls(sessions[name], requests[batch], 3)
    samples: dict[str, dict[int, list[float]]] = {name: {batch: [] for batch in requests} for name in names}
    from tqdm.auto import tqdm
    for r in tqdm(range(rounds), desc="latency rounds", disable=not progress, unit="round"):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for batch in requests:
                samples[name][batch].append(_time_calls(sessions[name], requests[batch], calls[batch]))
    out: dict[str, dict[int, Timing]] = {}
    for name in names:
        out[name] = {}
        for batch, values in samples[name].items():
            q = np.percentile(values, [25, 75])
            median = statistics.median(values)
            out[name][batch] = {"ms": median * 1e3, "spread_ms": float(q[1] - q[0]) * 1e3,
                                "min_ms": min(values) * 1e3, "per_s": batch / median,
                                "samples_ms": [v * 1e3 for v in values]}
    return out
