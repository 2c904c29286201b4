"""``recdeploy bench-criteo --cached-serve``: criteo_rank_cached against criteo_rank, one server.

    recdeploy bench-criteo --preset small --train-rows 30000 --cached-serve --cache-share 0.01

Both entries in one repository served by one tritonserver: the canary first holds the cached
entry to the full ranker (scores within 1e-5), then perf_analyzer measures each entry per batch
size (requests of 20 candidate impressions drawn from the held-out ones, as every criteo perf
run) while Triton's statistics give each step's compute time and the feature step's counters
on the metrics port give the cache's hit rate over that measurement.
"""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path

from recdeploy.export.scenarios import entries_of, scenario_named
from recdeploy.export.scenarios.criteo import export_criteo
from recdeploy.export.scenarios.criteo_cached import ENTRY, add_cached_tables
from recdeploy.perf.analyzer import run_sweep
from recdeploy.perf.config import PerfConfig
from recdeploy.perf.input_data import write_rows_input_data
from recdeploy.perf.lab import model_statistics, step_times
from recdeploy.serve.canary import run_canary
from recdeploy.serve.server import ServerConfig, TritonServer

ENTRIES = ("criteo_rank", ENTRY)


def cache_counters(metrics_text: str, model: str = "criteo_features_cached") -> tuple[float, float]:
    """(hits, lookups) from Triton's Prometheus text; (0, 0) before the first request."""
    def value(what: str) -> float:
        found = re.search(rf'^recdeploy_cache_{what}_total{{model="{model}"}} (\S+)$', metrics_text, re.M)
        return float(found.group(1)) if found else 0.0
    return value("hits"), value("lookups")


def _counters(server: TritonServer) -> tuple[float, float]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return cache_counters(response.read().decode())


def serve_cached(model, data, out: Path, share: float, batches=(1, 64), concurrency=(1, 4)) -> dict:
    """Export criteo_rank + criteo_rank_cached (a cache of ``share`` of the rows), serve both,
    measure each entry at each batch size."""
    repo = Path(out) / "repository-cached"
    export_criteo(model, data, repo)
    capacity = max(1, int(share * data.n_items))
    add_cached_tables(model, repo, capacity)
    scenario, entries = scenario_named("criteo"), entries_of(repo)
    rows = []
    with TritonServer(ServerConfig(model_repository=repo)) as server:
        canary = run_canary(repo, server.grpc_url, "grpc")
        for name in ENTRIES:
            requests = scenario.perf_rows(repo, entries[name])
            steps = ["criteo_features", "criteo_ranker", "rank_topk"] if name == "criteo_rank" else \
                ["criteo_features_cached", "criteo_ranker_dense", "rank_topk"]
            for batch in batches:
                perf = PerfConfig(model_name=name, url=server.grpc_url, protocol="grpc", batch_size=batch,
                                  concurrency=tuple(concurrency),
                                  input_data=write_rows_input_data(Path(out) / "inputs" / f"{name}-b{batch}.json",
                                                                   requests, batch_size=batch))
                hits, lookups = _counters(server)
                before = model_statistics(server.http_url)
                peak = run_sweep(perf, Path(out) / "perf-cached", progress=False, skip_failed_levels=True).peak()
                after = model_statistics(server.http_url)
                hits, lookups = (new - old for new, old in zip(_counters(server), (hits, lookups)))
                rows.append({"entry": name, "batch": batch, "requests_per_s": round(peak.throughput_infer_per_s, 1),
                             "concurrency": peak.concurrency, "p50_ms": round(peak.p50_us / 1e3, 2),
                             "p99_ms": round(peak.p99_us / 1e3, 2),
                             "hit_rate": round(hits / lookups, 4) if lookups else None,
                             "steps_ms": {s.model: round(s.compute_ms, 3) for s in step_times(before, after, steps)}})
                print(f"  {name} batch {batch}: {rows[-1]}", flush=True)
    return {"table_rows": data.n_items, "cache_rows": capacity, "cache_share": share,
            "canary": canary.summary(), "max_abs_score_diff": canary.max_abs_score_diff, "rows": rows}


def render_cached(report: dict) -> str:
    lines = [f"Served: criteo_rank vs criteo_rank_cached ({report['cache_rows']:,} of {report['table_rows']:,} "
             f"rows cached, {report['cache_share']:.0%}); canary: {report['canary']}", "",
             "| entry | batch (requests of 20) | requests/s | at concurrency | p50 ms | p99 ms | hit rate | "
             "feature step ms | ranker ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        steps = list(r["steps_ms"].values())
        hit = f"{r['hit_rate']:.3f}" if r["hit_rate"] is not None else "—"
        lines.append(f"| {r['entry']} | {r['batch']} | {r['requests_per_s']:,} | {r['concurrency']} | {r['p50_ms']} | "
                     f"{r['p99_ms']} | {hit} | {steps[0] if steps else ''} | {steps[1] if len(steps) > 1 else ''} |")
    return "\n".join(lines) + "\n"
