"""Soak and hot-swap benchmark of the served ``recommend`` ensemble (loopback, bounded).

    recdeploy serve soak --repository model_repository                       # 60 s at c=64
    recdeploy serve soak --repository model_repository --swap-onnx new.onnx  # + hot swap
    python -m recdeploy.serve.soak --help

Soak: tritonserver (model control off) under perf_analyzer at ``--concurrency`` for
``--duration`` seconds with the repository's real user ids. Passes when perf_analyzer saw
no failed request (it exits non-zero on the first one), the server's own failure counter
for ``recommend`` did not move, and the resident memory of tritonserver plus its python
stubs grew by at most ``--max-rss-growth-mib`` between the first and last fifth of the run.

Hot swap (with ``--swap-onnx``): a copy of the repository served in explicit model-control
mode, under load from ``--swap-concurrency`` gRPC client threads cycling through the real
users, plus a probe client asking for one user's top-K every 20 ms;
at 30% of the run ``scorer`` version 2 (the given ONNX: a different export of the same
catalogue) is published with :func:`recdeploy.serve.swap.publish_version`, at 65% it is
rolled back. Passes when no request failed, the probe saw version 2's answer after the
publish and version 1's after the rollback (each checked against the in-process pipeline),
and nothing else. Writes ``soak.json`` / ``hot_swap.json`` under ``--out``. Exit 0 = pass.
This is a benchmark (minutes), not part of the test suite.

Why client threads and not perf_analyzer for the swap: perf_analyzer 2.51 reads the
server-side statistics of the ensemble's composing models by the version it found at
start, so once scorer version 1 is unloaded it aborts with "failed to find the requested
model version" although every inference succeeded.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MIB = 1 << 20


# ---------------------------------------------------------------- measurements

def load_config(url: str, input_data: Path, concurrency: int, duration_s: float):
    """perf_analyzer for about ``duration_s``: three windows of a third each; stability 100%
    so it stops after those three instead of hunting for a stable one."""
    from recdeploy.perf.config import PerfConfig
    window_ms = max(1000, int(duration_s * 1000 / 3))
    return PerfConfig("recommend", url=url, concurrency=(concurrency,), input_data=input_data,
                      measurement_interval_ms=window_ms, stability_percentage=100, max_trials=3,
                      timeout_s=duration_s * 3 + 120)


@dataclass
class LoadOutcome:
    ok: bool                      # perf_analyzer exited 0: not one request failed
    infer_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    error: str = ""               # its output tail when it failed


def run_load(config, out_dir: Path) -> LoadOutcome:
    from recdeploy.perf.analyzer import PerfAnalyzerFailedError, run
    try:
        row = run(config, out_dir).rows[0]
    except PerfAnalyzerFailedError as error:
        return LoadOutcome(False, error=error.output_tail[-2000:])
    return LoadOutcome(True, row.throughput_infer_per_s, row.p50_us / 1000, row.p99_us / 1000)


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
        from recdeploy.serve.processes import tree_rss_bytes
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


def real_users(repo: Path) -> list[int]:
    return np.load(Path(repo) / "feature_lookup" / "1" / "user_ids.npy").astype(int).tolist()


def soak(repo: Path, out_dir: Path, concurrency: int = 64, duration_s: float = 60,
         k: int = 10, max_rss_growth_mib: float = 64) -> SoakResult:
    from recdeploy.perf.input_data import write_input_data
    from recdeploy.serve.processes import tree_rss_bytes
    from recdeploy.serve.server import ServerConfig, TritonServer

    data = write_input_data(out_dir / "soak_input.json", real_users(repo), k)
    with TritonServer(ServerConfig(model_repository=repo, verify_manifest=True)) as server:
        before = tree_rss_bytes(server.pid)
        sampler = RssSampler(server.pid)
        sampler.start()
        try:
            load = run_load(load_config(server.grpc_url, data, concurrency, duration_s), out_dir / "soak")
        finally:
            samples = sampler.stop()
        success, failure = request_counts(server.metrics_url, "recommend")
    values = [rss for _, rss in samples]
    fifth = max(1, len(values) // 5)
    return SoakResult(concurrency, duration_s, load, success, failure, before / MIB,
                      statistics.median(values[:fifth]) / MIB, statistics.median(values[-fifth:]) / MIB,
                      max(values) / MIB, rss_growth(values) / MIB, max_rss_growth_mib,
                      [round(v / MIB, 1) for v in values])


# ---------------------------------------------------------------- hot swap

@dataclass
class SwapResult:
    concurrency: int
    duration_s: float
    load: LoadOutcome
    load_requests: int
    load_failures: int
    probe_answers: int
    probe_errors: list[str]
    unexpected_answers: int          # neither version 1's nor version 2's list
    publish_call_s: float
    publish_to_first_v2_s: float | None
    stale_v1_after_publish: int      # v1 answers to requests sent after the publish call returned
    rollback_call_s: float
    rollback_to_first_v1_s: float | None
    stale_v2_after_rollback: int
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.load.ok and not self.probe_errors and self.unexpected_answers == 0
                and self.publish_to_first_v2_s is not None and self.rollback_to_first_v1_s is not None
                and self.stale_v1_after_publish == 0 and self.stale_v2_after_rollback == 0)


class ClientLoad:
    """``concurrency`` threads, each sending one-user requests back to back over gRPC."""

    def __init__(self, url: str, users: list[int], k: int, concurrency: int):
        self.url, self.users, self.k = url, users, k
        self.latencies_s: list[float] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(concurrency)]

    def _run(self, offset: int) -> None:
        from recdeploy.clients.triton_client import RecommendClient
        with RecommendClient(self.url) as client:
            i = offset
            while not self._halt.is_set():
                started = time.monotonic()
                try:
                    client.recommend([self.users[i % len(self.users)]], k=self.k)
                    self.latencies_s.append(time.monotonic() - started)
                except Exception as error:  # a failed request is the thing measured
                    self.errors.append(f"{started:.3f}: {error}")
                i += len(self._threads)

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> LoadOutcome:
        self._halt.set()
        for thread in self._threads:
            thread.join()
        elapsed = time.monotonic() - self._started
        ms = np.array(self.latencies_s or [0.0]) * 1000
        return LoadOutcome(not self.errors, len(self.latencies_s) / elapsed,
                           float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                           "; ".join(self.errors[:5]))


class Probe(threading.Thread):
    """One client asking for ``user``'s top-k in a loop; labels each answer v1 / v2 / other."""

    def __init__(self, url: str, user: int, k: int, expected: dict[str, list[int]], period_s: float = 0.02):
        super().__init__(daemon=True)
        self.url, self.user, self.k, self.expected, self.period_s = url, user, k, expected, period_s
        self.log: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        from recdeploy.clients.triton_client import RecommendClient
        with RecommendClient(self.url) as client:
            while not self._halt.is_set():
                sent = time.monotonic()  # by send time: an answer in flight during the
                try:                     # switch may rightly still come from the old version
                    ids = client.recommend([self.user], k=self.k)[0][0].tolist()
                    label = next((name for name, want in self.expected.items() if want == ids), "other")
                    self.log.append((sent, label))
                except Exception as error:  # a failed request is the thing measured
                    self.errors.append(f"{time.monotonic():.3f}: {error}")
                self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def expected_lists(repo: Path, new_onnx: Path, user: int, k: int) -> dict[str, list[int]]:
    import onnxruntime as ort

    from recdeploy.export.inprocess import InProcessRecommender
    reference = InProcessRecommender(repo)
    v1 = reference.recommend(np.array([user]), k)[0][0].tolist()
    reference.session = ort.InferenceSession(str(new_onnx), providers=["CPUExecutionProvider"])
    v2 = reference.recommend(np.array([user]), k)[0][0].tolist()
    if v1 == v2:
        raise ValueError(f"{new_onnx} gives user {user} the same top-{k} as version 1; the "
                         f"switch would be invisible: use a different export")
    return {"v1": v1, "v2": v2}


def _first(log, label, after):
    return next((t - after for t, name in log if t >= after and name == label), None)


def hot_swap(repo: Path, new_onnx: Path, out_dir: Path, concurrency: int = 16,
             duration_s: float = 30, k: int = 10) -> SwapResult:
    from recdeploy.serve.server import ServerConfig, TritonServer
    from recdeploy.serve.swap import publish_version, rollback

    work = out_dir / "swap_repository"  # the caller's repository is never modified
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(repo, work, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(out_dir / "retired", ignore_errors=True)
    users = real_users(work)
    expected = expected_lists(work, new_onnx, users[0], k)
    config = ServerConfig(model_repository=work, model_control_mode="explicit", verify_manifest=True)
    with TritonServer(config) as server:
        loader = ClientLoad(server.grpc_url, users, k, concurrency)
        probe = Probe(server.grpc_url, users[0], k, expected)
        start = time.monotonic()
        loader.start()
        probe.start()
        try:
            time.sleep(duration_s * 0.3)
            t_publish = time.monotonic()
            publish_version(work, "scorer", {"model.onnx": new_onnx}, server.grpc_url)
            t_published = time.monotonic()
            time.sleep(max(0.0, start + duration_s * 0.65 - time.monotonic()))
            # on a loaded machine the switch can take longer than planned: roll back only
            # once version 2 was seen serving (or after another 30 s, which then fails)
            deadline = time.monotonic() + 30
            while _first(probe.log, "v2", t_publish) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            t_rollback = time.monotonic()
            rollback(work, "scorer", server.grpc_url, retired=out_dir / "retired")
            t_rolled = time.monotonic()
            time.sleep(max(0.0, start + duration_s - time.monotonic()))
        finally:
            probe.stop()
            load = loader.stop()
    log = probe.log
    return SwapResult(
        concurrency, duration_s, load, len(loader.latencies_s), len(loader.errors),
        len(log), probe.errors[:20], sum(1 for _, name in log if name == "other"),
        t_published - t_publish, _first(log, "v2", t_publish),
        sum(1 for t, name in log if t_published <= t < t_rollback and name == "v1"),
        t_rolled - t_rollback, _first(log, "v1", t_rollback),
        sum(1 for t, name in log if t >= t_rolled and name == "v2"),
        _compress_timeline([(round(t - start, 2), name) for t, name in log]))


def _compress_timeline(log: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Only the answers whose label differs from the previous one (the switch points)."""
    return [entry for i, entry in enumerate(log) if i == 0 or entry[1] != log[i - 1][1]]


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recdeploy serve soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--out", type=Path, default=Path("reports/soak"))
    parser.add_argument("--duration", type=float, default=60.0, help="soak seconds (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=64, help="default: %(default)s")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0,
                        help="fail when server + stub RSS grows more (default: %(default)s)")
    parser.add_argument("--swap-onnx", type=Path, default=None,
                        help="a different scorer export (same catalogue): also run the hot swap")
    parser.add_argument("--swap-duration", type=float, default=30.0, help="default: %(default)s")
    parser.add_argument("--swap-concurrency", type=int, default=16, help="default: %(default)s")
    parser.add_argument("--skip-soak", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    passed = True
    if not args.skip_soak:
        result = soak(args.repository, args.out, args.concurrency, args.duration, args.k,
                      args.max_rss_growth_mib)
        (args.out / "soak.json").write_text(json.dumps(asdict(result) | {"passed": result.passed}, indent=1))
        print(f"soak: c={result.concurrency} {result.duration_s:.0f}s "
              f"{result.load.infer_per_s:.0f} infer/s p99 {result.load.p99_ms:.1f} ms; "
              f"server success {result.server_success} failure {result.server_failure}; "
              f"perf_analyzer {'ok' if result.load.ok else 'FAILED: ' + result.load.error[-300:]}; "
              f"RSS {result.rss_start_mib:.0f} -> {result.rss_end_mib:.0f} MiB (peak "
              f"{result.rss_peak_mib:.0f}), growth {result.rss_growth_mib:+.1f} MiB "
              f"(bound {result.max_rss_growth_mib:.0f}): {'PASS' if result.passed else 'FAIL'}")
        passed &= result.passed
    if args.swap_onnx is not None:
        swap = hot_swap(args.repository, args.swap_onnx, args.out, args.swap_concurrency,
                        args.swap_duration, args.k)
        (args.out / "hot_swap.json").write_text(json.dumps(asdict(swap) | {"passed": swap.passed}, indent=1))
        print(f"hot swap: c={swap.concurrency} {swap.duration_s:.0f}s "
              f"{swap.load.infer_per_s:.0f} infer/s p99 {swap.load.p99_ms:.1f} ms; load "
              f"{swap.load_requests} ok / {swap.load_failures} failed "
              f"{'' if swap.load.ok else '(' + swap.load.error[-300:] + ')'}; probe "
              f"{swap.probe_answers} answers, {len(swap.probe_errors)} errors, "
              f"{swap.unexpected_answers} unexpected; publish call {swap.publish_call_s:.2f} s, "
              f"first v2 answer after {swap.publish_to_first_v2_s} s, stale v1 after publish "
              f"{swap.stale_v1_after_publish}; rollback call {swap.rollback_call_s:.2f} s, first v1 "
              f"after {swap.rollback_to_first_v1_s} s, stale v2 {swap.stale_v2_after_rollback}: "
              f"{'PASS' if swap.passed else 'FAIL'}")
        passed &= swap.passed
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
