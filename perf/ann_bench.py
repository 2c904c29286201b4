"""Recall and speed of ANN retrieval against exact search, by catalogue size and index setting.

    recdeploy ann-bench                                  # 10^5 and 10^6 items + the real ML-100k model
    recdeploy ann-bench --sizes 100000,1000000,10000000 --out reports/ann --docs docs/ann.md

For each catalogue: the exact top-10 (seen items removed) of a few hundred query users is
the ground truth; every index setting (HNSW efSearch; IVF-PQ code size and nprobe) is timed
at batch 1 and 64 through the very ``AnnSearcher`` the served ``ann_<kind>`` step runs
(candidate search, seen filter, exact re-rank, exact fallback), next to exact search (one
GEMM + the ``topk`` model's numpy top-K). All in-process (no Triton hop on either side).
Catalogues beyond the real one are synthetic but *shaped like the trained item tower*: item
and user vectors are drawn from Gaussians with the mean and covariance of a trained
two-tower's tables (bias column included), so their spectrum, norms and bias spread are the
trained model's, not isotropic noise (on which every ANN method does much worse).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from recdeploy.export.ann_index import (
    PRESETS,
    AnnConfig,
    build_index,
    choose_overfetch,
    index_bytes,
    recall_at_k,
    seen_rows,
)
from recdeploy.export.ann_index import ann_module as ann_search
from recdeploy.export.ann_index import topk_module as topk_core

K = 10
HNSW_EF = (16, 32, 64, 128, 256)
IVFPQ_CODES = (16, 32)            # bytes per vector (sub-quantizers of 8 bits)
IVFPQ_NPROBE = (8, 16, 32, 64)
# synthetic seen lists are random (not the user's best items): a small over-fetch suffices;
# the real model's over-fetch is measured as at export (export/ann.py choose_overfetch)
SYNTHETIC_OVERFETCH = 0.25


@dataclass
class Catalogue:
    """Query users [Q, D] (constant 1 included), items [I, D] (bias column), seen [Q, L]."""
    name: str
    users: np.ndarray
    items: np.ndarray
    seen: np.ndarray
    item_ids: np.ndarray
    popularity: np.ndarray
    overfetch: float = SYNTHETIC_OVERFETCH
    truth: np.ndarray = field(default_factory=lambda: np.zeros((0, K), np.int64))

    @property
    def n_items(self) -> int:
        return len(self.items)


def gaussian_like(reference: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n rows from a Gaussian with ``reference``'s mean and covariance (float32, in chunks)."""
    mean = reference.mean(axis=0)
    root = np.linalg.cholesky(np.cov(reference, rowvar=False) + 1e-6 * np.eye(reference.shape[1]))
    out = np.empty((n, reference.shape[1]), np.float32)
    for start in range(0, n, 1 << 20):
        rows = min(n, start + (1 << 20)) - start
        out[start:start + rows] = mean + rng.standard_normal((rows, reference.shape[1]), dtype=np.float32) @ root.T
    return out


def tower_shaped(n_items: int, users: np.ndarray, items: np.ndarray, queries: int = 256,
                 seen_per_user: int = 20, seed: int = 0) -> Catalogue:
    """A synthetic catalogue of ``n_items`` shaped like a trained model's tables (users [U, D]
    ending in the constant 1, items [I, D] ending in the bias)."""
    rng = np.random.default_rng(seed)
    query_users = np.c_[gaussian_like(users[:, :-1], queries, rng), np.ones(queries, np.float32)]
    seen = np.sort(rng.integers(0, n_items, size=(queries, seen_per_user)), axis=1)
    popularity = np.floor(1e5 / np.arange(1, n_items + 1) ** 1.05).astype(np.float32)
    rng.shuffle(popularity)
    return Catalogue(f"synthetic {n_items:,}", query_users.astype(np.float32), gaussian_like(items, n_items, rng),
                     seen.astype(np.int64), np.arange(1, n_items + 1, dtype=np.int64), popularity)


def real_catalogue(name: str, users: np.ndarray, items: np.ndarray, features, queries: int = 256,
                   seed: int = 0) -> Catalogue:
    """The trained model itself: real users, their real seen items."""
    rows = np.sort(np.random.default_rng(seed).choice(len(users), size=min(queries, len(users)), replace=False))
    return Catalogue(name, users[rows].astype(np.float32), items.astype(np.float32), seen_rows(features, rows),
                     features.item_ids, features.popularity, overfetch=-1.0)


def with_truth(catalogue: Catalogue) -> Catalogue:
    """Exact top-K ids of every query user (the same code as the exact rows' timing)."""
    catalogue.truth = exact_answer(catalogue)(np.arange(len(catalogue.users)), catalogue.seen)
    return catalogue


# ------------------------------------------------------------------ timing

@dataclass(frozen=True)
class Timing:
    b1_recs_per_s: float
    b1_p99_ms: float
    b64_recs_per_s: float


def time_calls(answer, catalogue: Catalogue, b1_calls: int, b64_calls: int) -> tuple[Timing, np.ndarray]:
    """answer(rows, seen) -> ids; batch-1 calls over the first queries, then batch-64 calls.
    -> (timing, the ids of every query at batch 64, for recall)."""
    users = len(catalogue.users)
    latencies = []
    answer(np.arange(1), catalogue.seen[:1])   # warm-up
    for row in range(min(b1_calls, users)):
        started = time.perf_counter()
        answer(np.array([row]), catalogue.seen[row:row + 1])
        latencies.append(time.perf_counter() - started)
    ids, spent, batches = [], 0.0, 0
    for start in range(0, users, 64):
        rows = np.arange(start, min(users, start + 64))
        started = time.perf_counter()
        ids.append(answer(rows, catalogue.seen[rows]))
        if batches < b64_calls:
            spent, batches = spent + time.perf_counter() - started, batches + 1
    b64 = sum(min(64, users - 64 * b) for b in range(batches)) / spent
    return Timing(1.0 / float(np.mean(latencies)), float(np.percentile(latencies, 99) * 1e3), b64), np.concatenate(ids)


# rows scored at once by exact search: the score matrix stays ~120 MB (10^7 items: 3 rows)
EXACT_CHUNK_SCORES = 3e7


def exact_answer(catalogue: Catalogue):
    """The exact step's work in-process: scores of every item (one GEMM), then ``topk``,
    in row chunks whose score matrix stays small (what a server would do at 10^7 items)."""
    chunk = max(1, int(EXACT_CHUNK_SCORES // catalogue.n_items))

    def answer(rows, seen):
        return np.concatenate([
            topk_core.top_k(catalogue.users[rows[s:s + chunk]] @ catalogue.items.T, seen[s:s + chunk],
                            np.ones((len(rows[s:s + chunk]), 1), bool), K, catalogue.popularity,
                            catalogue.item_ids)[0] for s in range(0, len(rows), chunk)])
    return answer


@dataclass(frozen=True)
class BenchRow:
    catalogue: str
    items: int
    method: str                # exact | hnsw | ivfpq
    setting: str
    recall: float
    b1_recs_per_s: float
    b1_p99_ms: float
    b64_recs_per_s: float
    index_mib: float           # the index alone (HNSW holds the vectors; IVF-PQ only codes)
    flat_mib: float            # the FP32 catalogue (exact search; the ANN step's re-rank)
    build_s: float = 0.0
    fallback_rate: float = 0.0
    overfetch: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def searcher_for(index, catalogue: Catalogue, settings: dict, threads: int):
    return ann_search.AnnSearcher(index, catalogue.users, catalogue.items, catalogue.item_ids,
                                  catalogue.popularity, settings, threads)


def measure_setting(searcher, catalogue: Catalogue, method: str, setting: str, index_mib: float,
                    build_s: float, b1_calls: int, b64_calls: int) -> BenchRow:
    known = np.ones((64, 1), bool)
    searcher.fallbacks = 0
    timing, ids = time_calls(lambda rows, seen: searcher.top_k(rows, seen, known[:len(rows)], K)[0],
                             catalogue, b1_calls, b64_calls)
    calls = min(b1_calls, len(catalogue.users)) + 1 + len(catalogue.users)
    return BenchRow(catalogue.name, catalogue.n_items, method, setting, recall_at_k(ids, catalogue.truth),
                    **asdict(timing), index_mib=index_mib, flat_mib=catalogue.items.nbytes / 2 ** 20,
                    build_s=build_s, fallback_rate=searcher.fallbacks / calls,
                    overfetch=float(searcher.settings["overfetch"]))


def chosen_overfetch(searcher, catalogue: Catalogue) -> float:
    """The catalogue's fixed over-fetch, or (real model) the one export would choose."""
    if catalogue.overfetch >= 0:
        return catalogue.overfetch
    rows = np.arange(min(128, len(catalogue.users)))
    return choose_overfetch(searcher, rows, catalogue.seen[rows], catalogue.truth[rows], K)[0]


def index_plan(n_items: int, methods=("hnsw", "ivfpq"), hnsw_ef=HNSW_EF, codes=IVFPQ_CODES,
               nprobes=IVFPQ_NPROBE, max_nlist: int = 4096, hnsw: AnnConfig = PRESETS["hnsw"]
               ) -> list[tuple[AnnConfig, list[tuple[str, int, str]]]]:
    """(index config, [(search setting, value, label)]) per index to build for this size.
    hnsw: its build settings (a lighter graph, m=16 ef_construction=40, builds ~4x faster)."""
    plan = []
    if "hnsw" in methods:
        tag = "" if (hnsw.m, hnsw.ef_construction) == (32, 80) else f"M{hnsw.m} "
        plan.append((hnsw, [("ef_search", ef, f"{tag}efSearch {ef}") for ef in hnsw_ef]))
    if "ivfpq" in methods:
        nlist = min(max_nlist, int(4 * np.sqrt(n_items)), n_items // 39)
        plan += [(AnnConfig("ivfpq", nlist=nlist, pq_m=m, k_factor=4.0),
                  [("nprobe", p, f"PQ{m} nprobe {p}") for p in nprobes]) for m in codes]
    return plan


def exact_row(catalogue: Catalogue, b1_calls: int, b64_calls: int) -> BenchRow:
    calls = min(b1_calls, 50 if catalogue.n_items <= 1_000_000 else 10)
    timing, ids = time_calls(exact_answer(catalogue), catalogue, calls, b64_calls)
    return BenchRow(catalogue.name, catalogue.n_items, "exact", "FP32 GEMM + top-K", recall_at_k(ids, catalogue.truth),
                    **asdict(timing), index_mib=0.0, flat_mib=catalogue.items.nbytes / 2 ** 20)


def sweep_index(index, config: AnnConfig, settings, catalogue: Catalogue, exact: BenchRow, build_s: float,
                threads: int = 2, b1_calls: int = 200, b64_calls: int = 4) -> list[BenchRow]:
    """Every search setting of one built index, timed through the served step's searcher."""
    searcher = searcher_for(index, catalogue, {**config.settings(), "overfetch": 0.0}, threads)
    searcher.settings["overfetch"] = chosen_overfetch(searcher, catalogue)
    rows = []
    for key, value, label in tqdm(settings, desc=f"{catalogue.name} {config.kind}", leave=False):
        searcher.settings[key] = value
        rows.append(measure_setting(searcher, catalogue, config.kind, label, index_bytes(index) / 2 ** 20,
                                    build_s, b1_calls, b64_calls))
        print(f"ann-bench {catalogue.name} {config.kind} {label}: recall@{K} {rows[-1].recall:.3f}, "
              f"{rows[-1].b1_recs_per_s:,.0f}/s at batch 1 ({rows[-1].b1_recs_per_s / exact.b1_recs_per_s:.1f}x "
              f"exact), {rows[-1].b64_recs_per_s:,.0f}/s at batch 64", flush=True)
    return rows


def bench_catalogue(catalogue: Catalogue, threads: int = 2, b1_calls: int = 200, b64_calls: int = 4,
                    methods=("hnsw", "ivfpq"), hnsw_ef=HNSW_EF, codes=IVFPQ_CODES, nprobes=IVFPQ_NPROBE,
                    max_nlist: int = 4096) -> list[BenchRow]:
    """Exact, then every index setting on one catalogue (ground truth computed here)."""
    with_truth(catalogue)
    rows = [exact_row(catalogue, b1_calls, b64_calls)]
    for config, settings in index_plan(catalogue.n_items, methods, hnsw_ef, codes, nprobes, max_nlist):
        started = time.perf_counter()
        index = build_index(catalogue.items, config)
        rows += sweep_index(index, config, settings, catalogue, rows[0], time.perf_counter() - started,
                            threads, b1_calls, b64_calls)
        del index
    return rows
