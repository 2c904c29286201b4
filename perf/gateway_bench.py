"""``recdeploy gateway-bench``: what the gateway costs and what it survives (minutes, not a test).

    recdeploy gateway-bench --repository model_repository --out reports/gateway \\
        [--new-model other/model.onnx] [--duration 30] [--concurrency 4]

On one deployment of two replicas behind the gateway, measured in this order:
1. the declared-shape request and malformed JSON through the gateway (status, time, the
   replicas' memory growth);
2. throughput with 2 vs 1 replicas in rotation (the other drained), interleaved rounds, gRPC;
   and the gateway's cost: perf_analyzer through it vs straight to a replica, gRPC and HTTP;
3. a rolling update of the entry's swappable model (--new-model; default: the current file
   again) while perf_analyzer runs through the gateway: perf_analyzer exits non-zero on the
   first failed request;
4. one replica SIGKILLed under a logged client load: failed requests, for how long, and
   how long until the supervisor had it serving again.
Writes gateway_bench.json and prints a summary. Numbers from a shared 2-core box are
measured under others' load: read the ratios from the interleaved rounds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios import scenario_named
from recdeploy.perf.gateway_load import GatewayLoad, RequestLog, perf_through, run_perf
from recdeploy.perf.input_data import write_rows_input_data
from recdeploy.perf.soak import OUTPUTS, chosen_entry, entry_rows, load_config, row
from recdeploy.serve.cli import _sigterm_as_interrupt
from recdeploy.serve.gateway_client import GatewayClient
from recdeploy.serve.gateway_probe import bomb_request, malformed_requests, send
from recdeploy.serve.gateway_rollout import Deployment, RolloutStep, fetch_model_config, rolling_update
from recdeploy.serve.processes import tree_rss_bytes
from recdeploy.serve.server import pick_free_ports
from recdeploy.serve.swap import versions

MIB = 1 << 20


@dataclass
class BombResult:
    status: int
    seconds: float
    rss_growth_mib: float           # summed over the replicas, before vs right after
    malformed: dict[str, int]       # request kind -> HTTP status


def bomb_through(deployment: Deployment, entry: str) -> BombResult:
    gateway = deployment.gateway
    assert gateway is not None
    pids = [s.pid for s in deployment.replicas.servers if s is not None and s.pid is not None]
    before = sum(tree_rss_bytes(pid) for pid in pids)
    bomb = bomb_request(fetch_model_config(deployment.replicas.http_urls[0], entry))
    status, seconds, _ = send(gateway.url, gateway.spec.cert_path, deployment.token, f"/v2/models/{entry}/infer", bomb)
    time.sleep(0.5)
    after = max(sum(tree_rss_bytes(pid) for pid in pids), before)
    malformed = {kind: send(gateway.url, gateway.spec.cert_path, deployment.token, f"/v2/models/{entry}/infer",
                            body)[0] for kind, body in malformed_requests().items()}
    return BombResult(status, seconds, (after - before) / MIB, malformed)


@dataclass
class KillResult:
    requests: int
    failures: int
    failure_window_s: float         # first to last failed request (0: none failed)
    restarted_after_s: float | None  # kill -> the supervisor's replacement served
    errors: list[str]


def kill_under_load(deployment: Deployment, entry: str, rows, concurrency: int, duration_s: float,
                    protocol: str = "grpc", replica: int = 0) -> KillResult:
    gateway = deployment.gateway
    assert gateway is not None
    load = RequestLog(gateway.url, gateway.spec.cert_path, deployment.token, entry, rows, concurrency,
                      protocol).start()
    time.sleep(duration_s * 0.3)
    seen = len(deployment.replicas.events)
    killed = time.monotonic()
    deployment.replicas.kill(replica)
    deadline = killed + max(duration_s, 240)
    restarted = None
    while time.monotonic() < deadline and restarted is None:
        restarted = next((e.at for e in deployment.replicas.events[seen:] if e.what == "restarted"), None)
        time.sleep(0.2)
    time.sleep(max(3.0, killed + duration_s * 0.7 - time.monotonic()))
    records = load.stop()
    failed = [r for r in records if r.error is not None]
    window = (failed[-1].sent + failed[-1].seconds - failed[0].sent) if failed else 0.0
    return KillResult(len(records), len(failed), window, None if restarted is None else restarted - killed,
                      sorted({r.error or "" for r in failed})[:5])


@dataclass
class RollingResult:
    loads: list[GatewayLoad]        # perf_analyzer runs, back to back from before to after the update
    witness_requests: int           # one client thread logging every request meanwhile
    witness_failures: list[str]
    steps: list[RolloutStep]

    @property
    def failed(self) -> bool:
        return bool(self.witness_failures) or not all(load.no_failed_request for load in self.loads)


def rolling_under_load(deployment: Deployment, entry: str, input_data: Path, rows, model: str,
                       files: dict[str, Path], concurrency: int, window_s: float, out_dir: Path) -> RollingResult:
    """perf_analyzer runs of ``window_s`` back to back (and one logging client thread, which
    covers the moments between two runs) while ``rolling_update`` goes replica by replica."""
    gateway = deployment.gateway
    assert gateway is not None
    loads: list[GatewayLoad] = []
    done = threading.Event()

    def keep_loading() -> None:
        while True:
            loads.append(perf_through(deployment, entry, input_data, concurrency, window_s, out_dir / "rolling"))
            if done.is_set():
                return

    witness = RequestLog(gateway.url, gateway.spec.cert_path, deployment.token, entry, rows, 1).start()
    runner = threading.Thread(target=keep_loading)
    runner.start()
    time.sleep(window_s / 2)
    try:
        steps = rolling_update(deployment, model, files, progress=lambda _: None)
    finally:
        done.set()
        runner.join()
        records = witness.stop()
    return RollingResult(loads, len(records), [r.error for r in records if r.error is not None][:10], steps)


def replicas_and_cost(deployment: Deployment, entry: str, data: Path, concurrency: int, window_s: float,
                      rounds: int, out_dir: Path) -> dict[str, list[float]]:
    """infer/s per configuration, one value per interleaved round."""
    gateway = deployment.gateway
    assert gateway is not None
    results: dict[str, list[float]] = {}

    def keep(name: str, outcome: GatewayLoad) -> None:
        results.setdefault(name, []).append(outcome.infer_per_s)
        results.setdefault(name + " latency ms", []).append(outcome.latency_ms)
        if outcome.note:
            print(f"    {name}: {outcome.note[-300:]}", flush=True)

    for _ in range(rounds):
        for drained, name in ((set(), "gateway 2 replicas grpc"), ({1}, "gateway 1 replica grpc")):
            gateway.drain(drained)
            keep(name, perf_through(deployment, entry, data, concurrency, window_s, out_dir / "throughput"))
        # 1 replica in rotation still: the cost of the hop against the same replica direct
        keep("gateway 1 replica http", perf_through(deployment, entry, data, concurrency, window_s,
                                                    out_dir / "throughput", protocol="http"))
        for protocol, url in (("grpc", deployment.replicas.grpc_urls[0]), ("http", deployment.replicas.http_urls[0])):
            direct = load_config(url, entry, data, concurrency, window_s)
            keep(f"direct 1 replica {protocol}",
                 run_perf(dataclasses.replace(direct, protocol=protocol), out_dir / "throughput"))
        gateway.drain(set())
    return results


def latency_cost(deployment: Deployment, entry: str, rows, n: int = 300) -> dict[str, dict[str, float]]:
    """One request at a time, the four paths taking turns (so the box's load hits them alike):
    gRPC and HTTP straight to replica 0 vs through the gateway (drained to replica 0).
    Median and p90 milliseconds per path; the difference is what the gateway adds."""
    gateway = deployment.gateway
    assert gateway is not None
    gateway.drain({i for i in range(deployment.replicas.count) if i != 0})
    clients: dict[str, RecommendClient | GatewayClient] = {
        "direct grpc": RecommendClient(deployment.replicas.grpc_urls[0], "grpc", model=entry),
        "direct http": RecommendClient(deployment.replicas.http_urls[0], "http", model=entry),
        "gateway grpc": GatewayClient(gateway.url, gateway.spec.cert_path, deployment.token, "grpc"),
        "gateway http (validated)": GatewayClient(gateway.url, gateway.spec.cert_path, deployment.token, "http"),
    }
    times: dict[str, list[float]] = {name: [] for name in clients}
    try:
        for i in range(n + 10):
            request = row(rows, i)
            for name, client in clients.items():
                started = time.perf_counter()
                if isinstance(client, GatewayClient):
                    client.infer(entry, request, OUTPUTS)
                else:
                    client.infer(request, OUTPUTS)
                if i >= 10:  # the first requests open connections and TLS sessions
                    times[name].append((time.perf_counter() - started) * 1000)
    finally:
        for client in clients.values():
            client.close()
        gateway.drain(set())
    return {name: {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}
            for name, ms in times.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recdeploy gateway-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--entry", default=None, help="entry to load (default: the repository's first)")
    parser.add_argument("--new-model", type=Path, default=None,
                        help="the file the rolling update publishes (default: the current one again)")
    parser.add_argument("--out", type=Path, default=Path("reports/gateway"))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load phase (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=4, help="default: %(default)s")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    entry = chosen_entry(args.repository, args.entry)
    model = scenario_named(entry.scenario).swappable_model(entry)
    newest = args.repository / model / str(max(versions(args.repository / model)))
    new_file = args.new_model or next(p for p in newest.iterdir() if p.name.startswith("model"))
    rows = entry_rows(args.repository, entry, 10)
    data = write_rows_input_data(args.out / "input_data.json", rows)
    port = pick_free_ports("127.0.0.1", 1)[0]
    restore = _sigterm_as_interrupt()  # a SIGTERM stops the replicas and nginx too
    report: dict = {"entry": entry.name, "model": model, "concurrency": args.concurrency, "duration_s": args.duration}
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as work, \
            Deployment(args.repository, 2, Path(work), port, statistics=True) as deployment:
        print("1/4 declared-shape request and malformed JSON through the gateway ...", flush=True)
        report["bomb"] = asdict(bomb_through(deployment, entry.name))
        print(f"    {report['bomb']}\n2/4 throughput: 2 vs 1 replicas, gateway vs direct ...", flush=True)
        report["throughput"] = replicas_and_cost(deployment, entry.name, data, args.concurrency,
                                                 args.duration / 3, args.rounds, args.out)
        for name, values in report["throughput"].items():
            print(f"    {name}: {', '.join(f'{v:.1f}' for v in values)}")
        report["latency"] = latency_cost(deployment, entry.name, rows)
        for name, value in report["latency"].items():
            print(f"    one at a time, {name}: median {value['median_ms']:.2f} ms, p90 {value['p90_ms']:.2f} ms")
        print("3/4 rolling update under perf_analyzer ...", flush=True)
        rolling = rolling_under_load(deployment, entry.name, data, rows, model, {"model" + new_file.suffix: new_file},
                                     args.concurrency, args.duration / 3, args.out)
        report["rolling"] = {**asdict(rolling), "failed": rolling.failed}
        print(f"    failed requests: {rolling.failed} ({len(rolling.loads)} perf_analyzer runs at "
              f"{[round(load.infer_per_s) for load in rolling.loads]} infer/s, witness "
              f"{rolling.witness_requests} requests, {len(rolling.witness_failures)} failed); "
              f"steps {[round(s.publish_s + s.canary_s, 1) for s in rolling.steps]} s", flush=True)
        print("4/4 one replica killed under load, gRPC then HTTP clients ...", flush=True)
        report["kill"] = asdict(kill_under_load(deployment, entry.name, rows, args.concurrency, args.duration))
        print(f"    gRPC: {report['kill']}", flush=True)
        deployment.replicas.wait_all_ready()
        time.sleep(deployment.gateway.spec.fail_timeout_s if deployment.gateway else 5)
        report["kill_http"] = asdict(kill_under_load(deployment, entry.name, rows, args.concurrency, args.duration,
                                                     protocol="http", replica=1))
        print(f"    HTTP: {report['kill_http']}")
    restore()
    (args.out / "gateway_bench.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'gateway_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
