"""Load through a gateway: perf_analyzer over TLS with the token, and a client load that logs
every request, for the measurements of gateway_bench.py.

    outcome = perf_through(deployment, "recommend", input_data, concurrency=4, duration_s=20)
    log = RequestLog(deployment.gateway.url, cert, token, "recommend", rows, concurrency=4)
"""
from __future__ import annotations

import dataclasses
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from recdeploy.export.scenarios import Requests
from recdeploy.perf.analyzer import build_argv, find_perf_analyzer
from recdeploy.perf.config import PerfConfig
from recdeploy.perf.results import parse_csv
from recdeploy.perf.soak import OUTPUTS, load_config, row
from recdeploy.serve.gateway_client import GatewayClient, perf_analyzer_args
from recdeploy.serve.gateway_rollout import Deployment


def gateway_config(deployment: Deployment, entry: str, input_data: Path, concurrency: int, duration_s: float,
                   protocol: str = "grpc") -> PerfConfig:
    gateway = deployment.gateway
    assert gateway is not None, "start() the deployment first"
    return dataclasses.replace(load_config(gateway.url, entry, input_data, concurrency, duration_s), protocol=protocol,
                               extra_args=perf_analyzer_args(gateway.spec.cert_path, deployment.token, protocol))


@dataclass
class GatewayLoad:
    """One perf_analyzer run through the gateway. ``no_failed_request``: it never printed a
    worker error (it stops at the first failed request). Through a balancer its server-side
    statistics come from whichever replica answered, so it sometimes gives up on a
    measurement ("unstable", "failed to find the requested model version") after sending
    fine: then the throughput is the mean of its passes and ``note`` says so."""
    no_failed_request: bool
    infer_per_s: float = 0.0
    latency_ms: float = 0.0           # p50 from its CSV, else the passes' mean latency
    note: str = ""


_PASS = re.compile(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec\. Avg latency: (\d+) usec")


def run_perf(config: PerfConfig, out_dir: Path, https: bool = False) -> GatewayLoad:
    """perf_analyzer (verbose, for its per-pass lines) for one level; ``https``: its HTTP
    client needs the scheme in -u, which PerfConfig (host:port) does not carry."""
    binary = find_perf_analyzer()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{config.model_name}-{config.protocol}-c{config.concurrency[0]}-{time.monotonic_ns()}"
    argv = build_argv(binary, config, out_dir / f"{stem}.csv") + ["-v"]
    if https:
        argv[argv.index("-u") + 1] = f"https://{config.url}"
    timeout = config.timeout_for(1)
    try:
        done = subprocess.run(argv, env=binary.env or None, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return GatewayLoad(True, note=f"perf_analyzer ran past {timeout:.0f} s")
    output = done.stdout + done.stderr
    (out_dir / f"{stem}.log").write_text(output)
    if "had error" in output:
        return GatewayLoad(False, note=output[-1500:])
    if done.returncode == 0 and (out_dir / f"{stem}.csv").is_file():
        result = parse_csv(out_dir / f"{stem}.csv")[0]
        return GatewayLoad(True, result.throughput_infer_per_s, result.p50_us / 1000)
    passes = [(float(rate), int(us)) for rate, us in _PASS.findall(output)]
    why = output.strip().splitlines()[-1] if output.strip() else f"exit code {done.returncode}"
    if not passes:
        return GatewayLoad(True, note=f"no measurement: {why}")
    return GatewayLoad(True, sum(r for r, _ in passes) / len(passes), sum(u for _, u in passes) / len(passes) / 1000,
                       note=f"mean of {len(passes)} passes ({why})")


def perf_through(deployment: Deployment, entry: str, input_data: Path, concurrency: int, duration_s: float,
                 out_dir: Path, protocol: str = "grpc") -> GatewayLoad:
    return run_perf(gateway_config(deployment, entry, input_data, concurrency, duration_s, protocol), out_dir,
                    https=protocol == "http")


@dataclass
class RequestRecord:
    sent: float          # time.monotonic()
    seconds: float
    error: str | None


class RequestLog:
    """``concurrency`` threads sending one-row requests (gRPC or HTTP) through the gateway back
    to back, every request's send time, latency and error kept."""

    def __init__(self, url: str, cert: Path, token: str, entry: str, rows: Requests, concurrency: int,
                 protocol: str = "grpc"):
        self.url, self.cert, self.token, self.entry, self.rows = url, cert, token, entry, rows
        self.protocol = protocol
        self.records: list[RequestRecord] = []
        self._halt = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)]

    def _run(self, offset: int) -> None:
        with GatewayClient(self.url, self.cert, self.token, self.protocol) as client:
            i = offset
            while not self._halt.is_set():
                sent = time.monotonic()
                try:
                    client.infer(self.entry, row(self.rows, i), OUTPUTS)
                    self.records.append(RequestRecord(sent, time.monotonic() - sent, None))
                except Exception as error:  # a failed request is the thing measured
                    self.records.append(RequestRecord(sent, time.monotonic() - sent, str(error)[:300]))
                i += len(self._threads)

    def start(self) -> RequestLog:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[RequestRecord]:
        self._halt.set()
        for thread in self._threads:
            thread.join()
        return sorted(self.records, key=lambda r: r.sent)
