"""Soak and hot-swap benchmark of a served entry (loopback, bounded).

    recdeploy soak --repository model_repository                       # 60 s at c=64
    recdeploy soak --repository model_repository --swap-onnx new.onnx  # + hot swap (hot_swap.py)
    python -m recdeploy.perf.soak_cli --help

Soak: tritonserver (model control off) under perf_analyzer at ``--concurrency`` for
``--duration`` seconds on request rows the entry's scenario builds from real users and
items (``--entry``, default the repository's first). Passes when perf_analyzer saw no failed
request (it exits non-zero on the first one), the server's own failure counter for the
entry did not move, and the resident memory of tritonserver plus its python stubs grew by
at most ``--max-rss-growth-mib`` between the first and last fifth of the run.

Hot swap (with ``--swap-onnx``): a copy of the repository served in explicit model-control
mode, under load from ``--swap-concurrency`` gRPC client threads cycling through the rows,
plus a probe client sending one request every 20 ms; at 30% of the run version 2 of the
entry's scoring model (the scenario names it: ``scorer`` for ``recommend``; the given ONNX
is a different export of the same catalogue) is published with
:func:`recdeploy.serve.swap.publish_version`, at 65% it is rolled back. Passes when no
request failed, the probe saw version 2's answer after the publish and version 1's after
the rollback (each checked against the in-process pipeline), and nothing else. Writes
``soak.json`` / ``hot_swap.json`` under ``--out``. Exit 0 = pass. This is a benchmark
(minutes), not part of the test suite.

Why client threads and not perf_analyzer for the swap: perf_analyzer 2.51 reads the
server-side statistics of the ensemble's composing models by the version it found at
start, so once scorer version 1 is unloaded it aborts with "failed to find the requested
model version" although every inference succeeded.
"""
from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from recdeploy.export.scenarios import Entry, Requests, entries_of, scenario_named
from recdeploy.perf.analyzer import PerfAnalyzerFailedError, run
from recdeploy.perf.config import PerfConfig
from recdeploy.perf.input_data import write_rows_input_data
from recdeploy.serve.processes import tree_rss_bytes
from recdeploy.serve.server import ServerConfig, TritonServer

MIB = 1 << 20
OUTPUTS = ["ITEM_IDS", "SCORES"]


def chosen_entry(repo: Path, name: str | None) -> Entry:
    """The named entry of the repository, or its first one."""
    entries = entries_of(repo)
    if name is not None and name not in entries:
        raise ValueError(f"{repo} has no entry {name!r}; it serves: {', '.join(entries)}")
    return entries[name] if name else next(iter(entries.values()))


def entry_rows(repo: Path, entry: Entry, k: int, n: int = 4096) -> Requests:
    return scenario_named(entry.scenario).perf_rows(repo, entry, k, n=n)


def row(rows: Requests, i: int) -> Requests:
    return {name: value[i % len(value)][None] for name, value in rows.items()}


# ---------------------------------------------------------------- measurements

def load_config(url: str, entry: str, input_data: Path, concurrency: int, duration_s: float) -> PerfConfig:
    """perf_analyzer for about ``duration_s``: three windows of a third each; stability 100%
    so it stops after those three instead of hunting for a stable one."""
    window_ms = max(1000, int(duration_s * 1000 / 3))
    return PerfConfig(entry, url=url, concurrency=(concurrency,), input_data=input_data,
                      measurement_interval_ms=window_ms, stability_percentage=100, max_trials=3,
                      timeout_s=duration_s * 3 + 120)


@dataclass
class LoadOutcome:
    ok: bool                      # perf_analyzer exited 0: not one request failed
    infer_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    error: str = ""               # its output tail when it failed


def run_load(config: PerfConfig, out_dir: Path) -> LoadOutcome:
    try:
        result = run(config, out_dir).rows[0]
    except PerfAnalyzerFailedError as error:
        return LoadOutcome(False, error=error.output_tail[-2000:])
    return LoadOutcome(True, result.throughput_infer_per_s, result.p50_us / 1000, result.p99_us / 1000)


def request_counts(metrics_url: str, model: str) -> tuple[int, int]:
    """(success, failure) request counters of ``model`` from Triton's Prometheus endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    counts = {"success": 0, "failure": 0}
    for line in text.splitlines():
        for kind in counts:
            if line.startswith(f"nv_inference_request_{kind}{{") and f'model="{model}"' in line:
                counts[kind] += int(float(line.rsplit(" ", 1)[1]))
    return counts["success"], counts["failure"]


class RssSampler(threading.Thread):
    """Samples tritonserver + stub RSS every ``period_s`` into ``samples`` [(t, bytes)]."""

    def __init__(self, server_pid: int, period_s: float = 1.0):
        super().__init__(daemon=True)
        self.server_pid, self.period_s = server_pid, period_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._halt.is_set():
            self.samples.append((time.monotonic() - start, tree_rss_bytes(self.server_pid)))
            self._halt.wait(self.period_s)

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join()
        return self.samples


def rss_growth(samples: list[int]) -> int:
    """Median of the last fifth minus median of the first fifth (bytes): the trend, not the
    noise of one sample. Needs at least 5 samples."""
    if len(samples) < 5:
        raise ValueError(f"{len(samples)} RSS samples cannot show a trend; run longer")
    fifth = len(samples) // 5
    return int(statistics.median(samples[-fifth:]) - statistics.median(samples[:fifth]))


# ---------------------------------------------------------------- soak

@dataclass
class SoakResult:
    entry: str
    concurrency: int
    duration_s: float
    load: LoadOutcome
    server_success: int
    server_failure: int
    rss_before_mib: float
    rss_start_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    rss_growth_mib: float
    max_rss_growth_mib: float
    rss_samples_mib: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.load.ok and self.server_failure == 0 and self.server_success > 0
                and self.rss_growth_mib <= self.max_rss_growth_mib)


def soak(repo: Path, out_dir: Path, concurrency: int = 64, duration_s: float = 60,
         k: int = 10, max_rss_growth_mib: float = 64, entry_name: str | None = None) -> SoakResult:
    entry = chosen_entry(repo, entry_name)
    data = write_rows_input_data(out_dir / "soak_input.json", entry_rows(repo, entry, k))
    with TritonServer(ServerConfig(model_repository=repo, verify_manifest=True)) as server:
        pid = server.pid
        assert pid is not None  # the with block started it
        before = tree_rss_bytes(pid)
        sampler = RssSampler(pid)
        sampler.start()
        try:
            load = run_load(load_config(server.grpc_url, entry.name, data, concurrency, duration_s),
                            out_dir / "soak")
        finally:
            samples = sampler.stop()
        success, failure = request_counts(server.metrics_url, entry.name)
    values = [rss for _, rss in samples]
    fifth = max(1, len(values) // 5)
    return SoakResult(entry.name, concurrency, duration_s, load, success, failure, before / MIB,
                      statistics.median(values[:fifth]) / MIB, statistics.median(values[-fifth:]) / MIB,
                      max(values) / MIB, rss_growth(values) / MIB, max_rss_growth_mib,
                      [round(v / MIB, 1) for v in values])
