"""The ANN step's re-rank catalogue, FP32 against row-wise INT8: interleaved A/B on one index.

    python -m recdeploy.perf.ann_rerank --items 1000000 --tables tables.npz --out reports/ann/rerank

One catalogue shaped like a trained model's towers (``--tables``: an npz of its ``users`` and
``items``, bias folded in, as perf/scale.py's ``tower_tables`` returns them), one IVF-PQ
index (by default the served 10^6 setting of docs/ann.md), and two ``AnnSearcher``s over it
that differ only in the catalogue they re-rank from (and fall back to): the FP32 rows, or
compress/rowwise.py's INT8 codes as ``--ann ivfpq:rerank=int8`` writes them. Rounds alternate
FP32, INT8, FP32, INT8 ... so a shared box's load drifts over both alike; the median round
is reported. Recall@10 is against exact FP32 search; "overlap" is the INT8 answers' share of
the FP32 re-rank's; "scan recall" is what the INT8 exact fallback (a full INT8 scan) would
answer. Memory is what the searcher holds: the index plus the re-rank catalogue.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recdeploy.compress.rowwise import int8_rows
from recdeploy.export.ann_index import ann_module, build_index, index_bytes, parse_ann, recall_at_k
from recdeploy.perf.ann_bench import Catalogue, K, time_calls, topk_core, tower_shaped, with_truth

DEFAULT_ANN = "ivfpq:nlist=1024:pq_m=16:nprobe=16:k_factor=4:overfetch=0.25"


@dataclass(frozen=True)
class RerankRow:
    rerank: str                # fp32 | int8
    recall: float              # recall@10 against exact FP32 search
    overlap_fp32: float        # share of the FP32 re-rank's answers this one returns
    scan_recall: float         # the exact fallback's recall (a full scan of this catalogue)
    b1_recs_per_s: float       # median round
    b1_p99_ms: float
    b64_recs_per_s: float
    index_mib: float
    catalogue_mib: float       # the re-rank catalogue as the searcher holds it
    fallback_rate: float
    rounds: int

    @property
    def resident_mib(self) -> float:
        return self.index_mib + self.catalogue_mib

    def to_dict(self) -> dict:
        return {**asdict(self), "resident_mib": self.resident_mib}


def scan_answer(catalogue, items, seen: np.ndarray, users: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Exact top-K over every item of a re-rank catalogue: the exact fallback's answer."""
    known = np.ones((chunk, 1), bool)
    return np.concatenate([topk_core.top_k(catalogue.scores(users[s:s + chunk]), seen[s:s + chunk],
                                           known[:len(users[s:s + chunk])], K, items.popularity,
                                           items.item_ids)[0] for s in range(0, len(users), chunk)])


def measure_rerank(catalogue: Catalogue, ann: str = DEFAULT_ANN, rounds: int = 3, b1_calls: int = 200,
                   threads: int = 2) -> list[RerankRow]:
    """Both re-rank catalogues over one index of ``catalogue``, rounds interleaved."""
    config = parse_ann(ann)[0]
    with_truth(catalogue)
    started = time.perf_counter()
    index = build_index(catalogue.items, config)
    print(f"ann-rerank: {config.kind} index over {catalogue.n_items:,} items in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    stores = {"fp32": ann_module.Fp32Catalogue(catalogue.items),
              "int8": ann_module.Int8Catalogue(*int8_rows(catalogue.items))}
    settings = {**config.settings(), "overfetch": max(config.overfetch, 0.0)}
    searchers = {name: ann_module.AnnSearcher(index, catalogue.users, store, catalogue.item_ids,
                                              catalogue.popularity, settings, threads)
                 for name, store in stores.items()}
    known = np.ones((64, 1), bool)
    timings: dict[str, list] = {name: [] for name in searchers}
    answers: dict[str, np.ndarray] = {}
    for number in range(rounds):
        for name, searcher in searchers.items():
            timing, answers[name] = time_calls(lambda rows, seen, s=searcher: s.top_k(rows, seen, known[:len(rows)],
                                                                                        K)[0],
                                               catalogue, b1_calls, 4)
            timings[name].append(timing)
            print(f"ann-rerank round {number + 1} {name}: {timing.b1_recs_per_s:,.0f}/s b1, "
                  f"{timing.b64_recs_per_s:,.0f}/s b64", flush=True)
    calls = rounds * (min(b1_calls, len(catalogue.users)) + 1 + len(catalogue.users))
    rows = []
    for name, searcher in searchers.items():
        median = sorted(timings[name], key=lambda t: t.b1_recs_per_s)[rounds // 2]
        b64 = float(np.median([t.b64_recs_per_s for t in timings[name]]))
        scan = scan_answer(searcher.catalogue, catalogue, catalogue.seen, catalogue.users)
        rows.append(RerankRow(name, recall_at_k(answers[name], catalogue.truth),
                              recall_at_k(answers[name], answers["fp32"]), recall_at_k(scan, catalogue.truth),
                              median.b1_recs_per_s, median.b1_p99_ms, b64, index_bytes(index) / 2 ** 20,
                              searcher.catalogue.nbytes / 2 ** 20, searcher.fallbacks / calls, rounds))
    return rows


def render_markdown(rows: list[RerankRow], note: str) -> str:
    lines = [note, "", "| re-rank catalogue | recall@10 | overlap with FP32 re-rank | fallback scan recall@10 | "
             "recs/s b1 | p99 ms b1 | recs/s b64 | index MiB | catalogue MiB | resident MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.rerank.upper()} | {r.recall:.3f} | {r.overlap_fp32:.3f} | {r.scan_recall:.3f} | "
              f"{r.b1_recs_per_s:,.0f} | {r.b1_p99_ms:.2f} | {r.b64_recs_per_s:,.0f} | {r.index_mib:.1f} | "
              f"{r.catalogue_mib:.1f} | {r.resident_mib:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.perf.ann_rerank", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--tables", type=Path, required=True, help="npz of a trained model's users / items")
    parser.add_argument("--ann", default=DEFAULT_ANN, help=f"one index setting (default {DEFAULT_ANN})")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per catalogue (default 3)")
    parser.add_argument("--b1-calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/ann/rerank"))
    args = parser.parse_args(argv)
    reference = np.load(args.tables)
    catalogue = tower_shaped(args.items, reference["users"], reference["items"])
    rows = measure_rerank(catalogue, args.ann, args.rounds, args.b1_calls, args.threads)
    load = [round(x, 1) for x in os.getloadavg()]
    note = (f"Measured by `python -m recdeploy.perf.ann_rerank` on {time.strftime('%Y-%m-%d')}: {catalogue.name} "
            f"items, `{args.ann}`, {args.rounds} interleaved rounds (median), {args.threads} threads, in-process; "
            f"load average at the end {load}.")
    text = render_markdown(rows, note)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ann_rerank.json").write_text(json.dumps({"rows": [r.to_dict() for r in rows], "load": load,
                                                          "ann": args.ann, "items": args.items}, indent=2))
    (args.out / "ann_rerank.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
