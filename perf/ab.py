"""A/B of a repository's entries, interleaved: in-process per-call time, or served throughput.

    python -m recdeploy.perf.ab --repository model_repository \\
        --model recommend_fused,fused_retrieval_libtorch,fused_retrieval_aoti --batch-size 1,64
    python -m recdeploy.perf.ab ... --served --concurrency 8 --rounds 5    # one server, perf_analyzer
    python -m recdeploy.perf.ab --repository repo --model recommend,recommend_int8 --routed --share 0.5
                                          # users routed by hash + shadow comparison (perf/shadow.py)

In-process, each entry's reference (``Scenario.reference``: ONNX Runtime, TorchScript, an
AOTInductor package, ...) runs on the same real request rows (``Scenario.perf_rows``), round
by round with the order rotating (``compress.measure.interleaved_latency``), so a shared
machine's drift slows every entry alike; medians and the paired ratio to the first entry are
printed as a Markdown table. ``--served`` starts one tritonserver on the repository and runs
perf_analyzer against the entries in the same rotating rounds (one short window each), so
two served paths are compared under the same background load too.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from recdeploy.compress.measure import Timing, interleaved_latency
from recdeploy.export.scenarios import scenario_of
from recdeploy.perf.analyzer import run_level
from recdeploy.perf.config import PerfConfig
from recdeploy.perf.inprocess import row_batches
from recdeploy.perf.input_data import write_rows_input_data
from recdeploy.perf.shadow import render_routed, routed_report
from recdeploy.serve.server import ServerConfig, TritonServer


class PipelineSession:
    """A reference pipeline behind the ``session.run(names, feed)`` call interleaved_latency makes."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def run(self, names, feed):
        return self.pipeline(feed)


def entry_sessions(repo: Path, entries: list[str], threads: int) -> dict[str, object]:
    sessions: dict[str, object] = {}
    for name in entries:
        scenario, entry = scenario_of(repo, name)
        sessions[name] = PipelineSession(scenario.reference(repo, entry, threads))
    return sessions


def request_batches(repo: Path, entry: str, batch_sizes: list[int], k: int, n: int = 512) -> dict[int, list[dict]]:
    scenario, found = scenario_of(repo, entry)
    rows = scenario.perf_rows(repo, found, k, n=max(n, max(batch_sizes)))
    return {batch: row_batches(rows, batch)[:max(1, n // batch)] for batch in batch_sizes}


def render(timings: dict[str, dict[int, Timing]], threads: int, rounds: int) -> str:
    """One row per entry and batch size: median per call, spread, rows/s, paired ratio to the first."""
    names = list(timings)
    lines = [f"In-process, {threads} threads, {rounds} interleaved rounds (median per call; IQR; "
             f"ratio = median of per-round ratios to {names[0]})", "",
             "| entry | batch | ms / call | IQR ms | recs/s | × first |", "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        for batch, timing in timings[name].items():
            first = timings[names[0]][batch]["samples_ms"]
            ratio = statistics.median(a / b for a, b in zip(timing["samples_ms"], first))
            lines.append(f"| {name} | {batch} | {timing['ms']:.3f} | {timing['spread_ms']:.3f} | "
                         f"{timing['per_s']:,.0f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def served_ab(repo: Path, entries: list[str], batch_sizes: list[int], concurrency: int, rounds: int, k: int,
              work: Path, interval_ms: int = 2000, protocol: str = "http") -> dict[str, dict[int, list[float]]]:
    """{entry: {batch: served recs/s per round}}: one server, perf_analyzer rounds with the order rotating."""
    scenario, found = scenario_of(repo, entries[0])
    data = write_rows_input_data(work / "input.json", scenario.perf_rows(repo, found, k, n=2048))
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batch_sizes} for name in entries}
    with TritonServer(ServerConfig(model_repository=repo)) as server:
        url = server.http_url if protocol == "http" else server.grpc_url
        for r in range(rounds):
            for name in entries[r % len(entries):] + entries[:r % len(entries)]:
                for batch in batch_sizes:
                    config = PerfConfig(model_name=name, url=url, protocol=protocol, concurrency=(concurrency,),
                                        batch_size=batch, input_data=data, measurement_interval_ms=interval_ms,
                                        stability_percentage=50, max_trials=4)
                    rows = run_level(config, work / f"round{r}").rows
                    samples[name][batch].append(max(row.throughput_infer_per_s for row in rows))
                    print(f"round {r} {name} batch {batch}: {samples[name][batch][-1]:,.0f} recs/s", flush=True)
    return samples


def render_served(samples: dict[str, dict[int, list[float]]], concurrency: int, protocol: str, rounds: int) -> str:
    names = list(samples)
    lines = [f"Served, {protocol}, concurrency {concurrency}, {rounds} interleaved rounds "
             f"(median recs/s; range; ratio = median of per-round ratios to {names[0]})", "",
             "| entry | batch | recs/s | range | × first |", "|---|---:|---:|---:|---:|"]
    for name in names:
        for batch, values in samples[name].items():
            ratio = statistics.median(a / b for a, b in zip(values, samples[names[0]][batch]))
            lines.append(f"| {name} | {batch} | {statistics.median(values):,.0f} | {min(values):,.0f}–"
                         f"{max(values):,.0f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def routed_table(repo: Path, entries: list[str], url: str | None, share: float, salt: str, requests: int,
                 k: int, concurrency: int, shadow_share: float = 1.0) -> str:
    champion, challenger = entries
    if url:
        return render_routed(routed_report(repo, url, champion, challenger, share, salt, requests, k, concurrency,
                                           shadow_share))
    with TritonServer(ServerConfig(model_repository=repo)) as server:
        return render_routed(routed_report(repo, server.grpc_url, champion, challenger, share, salt, requests, k,
                                           concurrency, shadow_share))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.perf.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--model", required=True, help="comma-separated entries; the first is the baseline")
    parser.add_argument("--batch-size", default="1,64", help="comma-separated [%(default)s]")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime [%(default)s]")
    parser.add_argument("--out", type=Path, help="also write the table here")
    served = parser.add_argument_group("served A/B (one tritonserver on the repository)")
    served.add_argument("--served", action="store_true", help="perf_analyzer against the served entries instead")
    served.add_argument("--concurrency", type=int, default=8)
    served.add_argument("--protocol", choices=("grpc", "http"), default="http")
    served.add_argument("--measurement-interval-ms", type=int, default=2000)
    routed = parser.add_argument_group("routed A/B and shadow (two entries: champion,challenger; one server)")
    routed.add_argument("--routed", action="store_true",
                        help="route real users by a stable hash, then shadow the challenger (perf/shadow.py)")
    routed.add_argument("--share", type=float, default=0.5, help="the challenger's share of users [%(default)s]")
    routed.add_argument("--salt", default="ab", help="hash salt: a new one reshuffles the arms")
    routed.add_argument("--requests", type=int, default=2000)
    routed.add_argument("--shadow-share", type=float, default=1.0,
                        help="share of users also scored by the challenger in the shadow run [%(default)s]")
    routed.add_argument("--url", default=None, help="a running server's gRPC address (default: start one)")
    args = parser.parse_args(argv)
    entries = [name.strip() for name in args.model.split(",") if name.strip()]
    batch_sizes = [int(b) for b in args.batch_size.split(",")]
    if args.routed:
        if len(entries) != 2:
            parser.error("--routed takes exactly two entries: --model CHAMPION,CHALLENGER")
        table = routed_table(args.repository, entries, args.url, args.share, args.salt, args.requests, args.k,
                             args.concurrency, args.shadow_share)
    elif args.served:
        with tempfile.TemporaryDirectory() as work:
            samples = served_ab(args.repository, entries, batch_sizes, args.concurrency, args.rounds, args.k,
                                Path(work), args.measurement_interval_ms, args.protocol)
        table = render_served(samples, args.concurrency, args.protocol, args.rounds)
    else:
        sessions = entry_sessions(args.repository, entries, args.threads)
        requests = request_batches(args.repository, entries[0], batch_sizes, args.k)
        timings = interleaved_latency(sessions, requests, rounds=args.rounds, progress=True)
        table = render(timings, args.threads, args.rounds)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
