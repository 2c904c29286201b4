"""Routed A/B and shadow on one server: per-arm throughput and p99, the shadow comparison and
each arm's offline quality, in one report.

    python -m recdeploy.perf.ab --repository repo --model recommend,recommend_int8 --routed --share 0.5
    report = routed_report(repo, url, "recommend", "recommend_int8", share=0.5, requests=2000)

Users (real ones, ``Scenario.perf_rows``) are sent one per request from ``concurrency``
threads through ``clients.router.ABRouter``: first routed (each user to its arm by the stable
hash; per-arm latency percentiles and recommendations/s of wall time), then in shadow mode
(everyone served by the champion, the challenger scored on the same requests in the
background: overlap@K, Spearman, score drift; the champion's p99 with the shadow running).
Offline quality per arm: ``Scenario.quality`` of its in-process pipeline (agreement of its
top-K with the full model's; 1.0 for the full model itself).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from recdeploy.clients.router import ABRouter, ShadowStats
from recdeploy.export.scenarios import scenario_of


def _drive(router: ABRouter, users: np.ndarray, k: int, concurrency: int) -> tuple[dict[int, list[float]], float]:
    """One user per request from ``concurrency`` threads; -> ({arm: latencies s}, wall s)."""
    latencies: dict[int, list[float]] = {0: [], 1: []}
    lock = threading.Lock()

    def one(user: int) -> None:
        start = time.perf_counter()
        _, _, arms = router.recommend([user], k)
        elapsed = time.perf_counter() - start
        with lock:
            latencies[int(arms[0])].append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, users.tolist()))
    return latencies, time.perf_counter() - started


def _arm_row(name: str, latencies: list[float], wall: float) -> dict:
    if not latencies:
        return {"entry": name, "requests": 0, "recs_per_s": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.array(latencies) * 1000
    return {"entry": name, "requests": len(ms), "recs_per_s": len(ms) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def routed_report(repo: Path, url: str, champion: str, challenger: str, share: float = 0.5, salt: str = "ab",
                  requests: int = 1000, k: int = 10, concurrency: int = 4, shadow_share: float = 1.0) -> dict:
    scenario, entry = scenario_of(repo, champion)
    users = scenario.perf_rows(repo, entry, k, n=requests)["USER_ID"][:, 0]
    routed = ABRouter(url, champion, challenger, share=share, salt=salt)
    latencies, wall = _drive(routed, users, k, concurrency)
    arms = [_arm_row(champion, latencies[0], wall), _arm_row(challenger, latencies[1], wall)]
    shadow = ABRouter(url, champion, challenger, salt=salt, shadow=True, shadow_share=shadow_share)
    shadow_latencies, shadow_wall = _drive(shadow, users, k, concurrency)
    stats: ShadowStats = shadow.wait()
    shadow.close()
    quality = {}
    for name in (champion, challenger):
        arm_scenario, arm_entry = scenario_of(repo, name)
        quality[name] = arm_scenario.quality(repo, arm_entry, arm_scenario.reference(repo, arm_entry), k)
    return {"share": share, "salt": salt, "shadow_share": shadow_share, "concurrency": concurrency,
            "requests": int(len(users)), "arms": arms,
            "shadow": {**stats.as_dict(), **{f"champion_{key}": value for key, value in
                                             _arm_row(champion, shadow_latencies[0], shadow_wall).items()
                                             if key != "entry"}},
            "offline_quality": quality}


def render_routed(report: dict) -> str:
    lines = [f"Routed A/B on one server: {report['requests']} users, one per request, concurrency "
             f"{report['concurrency']}, challenger share {report['share']:.0%} (stable hash, salt "
             f"{report['salt']!r})", "",
             "| arm | entry | requests | recs/s | p50 ms | p99 ms | offline quality |",
             "|---|---|---:|---:|---:|---:|---|"]
    for label, arm in zip(("champion", "challenger"), report["arms"]):
        quality = ", ".join(f"{k} {v:.3f}" for k, v in report["offline_quality"][arm["entry"]].items())
        lines.append(f"| {label} | {arm['entry']} | {arm['requests']} | {arm['recs_per_s']:,.0f} | "
                     f"{arm['p50_ms']:.2f} | {arm['p99_ms']:.2f} | {quality} |")
    s = report["shadow"]
    lines += ["", f"Shadow (everyone served by the champion, challenger scored on the same {s['rows']} requests, "
              f"{report.get('shadow_share', 1.0):.0%} of users): "
              f"overlap@K {s['overlap_at_k']:.3f}, Spearman {s['spearman']:.3f}, score drift "
              f"{s['score_drift']:.4f}, identical lists {s['identical_lists']:.1%}, shadow errors "
              f"{s['shadow_errors']}; champion with the shadow running: {s['champion_recs_per_s']:,.0f} recs/s, "
              f"p99 {s['champion_p99_ms']:.2f} ms"]
    return "\n".join(lines) + "\n"
