"""Approximate nearest-neighbour (FAISS) retrieval steps, built at export beside the exact ones.

    recdeploy export --run runs/demo --ann hnsw,ivfpq     # + recommend_ann_hnsw, recommend_ann_ivfpq

Exact retrieval scores every item for every request; its cost grows with the catalogue. An
ANN index (HNSW: a navigable graph; IVF-PQ: inverted lists of product-quantized codes) looks
at a small part of it. The index is built over the served scorer's item matrix, whose last
column already holds the item bias against a constant 1 in every user vector, so the
index's inner product is the model's exact score. ``ann_search.py`` (the python model) holds
the serving code; this module builds its folder: the index, the vectors, and the settings,
among them the over-fetch factor measured here (``choose_overfetch``).
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recdeploy.export.repository import npy_bytes, write_model
from recdeploy.export.retrieval_specs import ann_ensemble_spec, ann_spec
from recdeploy.export.triton_config import EnsembleSpec, ModelSpec, build_ensemble_config, build_model_config
from recdeploy.export.triton_python import load_python_model, python_model_files

ann_module = load_python_model("ann_search")
topk_module = load_python_model("topk")

KINDS = ("hnsw", "ivfpq")
# over-fetch candidates tried at export, smallest first: fetch k + ceil(overfetch * seen) items
OVERFETCH_CANDIDATES = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0)
# the share of known users an over-fetch may send to the exact fallback
MAX_FALLBACK = 0.02
# ... and the recall it may give up against the largest over-fetch tried
RECALL_SLACK = 0.005


class AnnConfigError(ValueError):
    pass


@dataclass(frozen=True)
class AnnConfig:
    """One index and its search settings.

    hnsw: m graph neighbours per node (memory ~ 2 m ints a vector), ef_construction build
    beam, ef_search search beam (recall and cost grow with it; never below the fetch size).
    ivfpq: nlist inverted lists (0: about 4 sqrt(I)), nprobe lists searched, pq_m bytes of code
    per vector (the width is zero-padded to a multiple of it), k_factor: how many times the
    fetch size the index returns before the exact re-rank (PQ scores are coarse).
    overfetch: measured at export unless set (< 0 = measure).
    """
    kind: str
    m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int = 0
    nprobe: int = 16
    pq_m: int = 16
    pq_bits: int = 8
    k_factor: float = 1.0
    overfetch: float = -1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise AnnConfigError(f"unknown ANN index {self.kind!r}; valid: {', '.join(KINDS)}")
        if min(self.m, self.ef_construction, self.ef_search, self.nprobe, self.pq_m) < 1 \
                or self.nlist < 0 or self.k_factor < 1:
            raise AnnConfigError(f"{self.kind}: m, ef_*, nprobe, pq_m must be >= 1, nlist >= 0, "
                                 f"k_factor >= 1 (got {asdict(self)})")
        if self.pq_bits not in (4, 6, 8):
            raise AnnConfigError(f"{self.kind}: pq_bits must be 4, 6 or 8, got {self.pq_bits}")

    def settings(self) -> dict:
        return {"kind": self.kind, "ef_search": self.ef_search, "nprobe": self.nprobe,
                "k_factor": self.k_factor, "overfetch": self.overfetch}


PRESETS = {"hnsw": AnnConfig("hnsw"), "ivfpq": AnnConfig("ivfpq", nprobe=32, pq_m=16, k_factor=4.0)}


def parse_ann(text: str) -> tuple[AnnConfig, ...]:
    """``hnsw,ivfpq`` or ``hnsw:ef_search=128,ivfpq:nprobe=8:pq_m=32`` -> configs."""
    configs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, *assignments = part.split(":")
        if name not in PRESETS:
            raise AnnConfigError(f"unknown ANN index {name!r}; valid: {', '.join(PRESETS)}")
        fields: dict[str, Any] = {}
        for assignment in assignments:
            key, _, value = assignment.partition("=")
            if key not in AnnConfig.__dataclass_fields__ or key == "kind" or not value:
                raise AnnConfigError(f"{part!r}: {assignment!r} is not KEY=VALUE of "
                                     f"{', '.join(f for f in AnnConfig.__dataclass_fields__ if f != 'kind')}")
            fields[key] = float(value) if key in ("k_factor", "overfetch") else int(value)
        configs.append(replace(PRESETS[name], **fields))
    if len({c.kind for c in configs}) != len(configs):
        raise AnnConfigError(f"{text!r} names an index kind twice")
    return tuple(configs)


def fold_bias(user_vectors: np.ndarray, item_vectors: np.ndarray, item_bias: np.ndarray):
    """users [U, D], items [I, D], bias [I] -> users [U, D+1] (a constant 1), items [I, D+1]
    (the bias): one inner product is the score u.v + b."""
    users = np.c_[user_vectors, np.ones(len(user_vectors))].astype(np.float32)
    items = np.c_[item_vectors, item_bias].astype(np.float32)
    return users, items


def default_nlist(n_items: int) -> int:
    """About 4 sqrt(I) lists, at least 8 and never more than I / 39 (faiss's k-means floor)."""
    return int(max(1, min(max(8, 4 * np.sqrt(n_items)), n_items // 39)))


def build_index(items: np.ndarray, config: AnnConfig, seed: int = 0) -> faiss.Index:
    """The index over ``items`` [I, D] FP32 for inner-product search; ids = row numbers.

    Graph and cluster search work poorly on raw inner products of vectors of unequal norms,
    so the index holds [v, sqrt(R^2 - |v|^2)] (R the largest norm) under L2: for a query
    [u, 0], |q - x|^2 = |u|^2 + R^2 - 2 u.v, the same order as u.v (Bachrach et al., 2014).
    The searcher pads queries with zeros to the index's width, so this column needs nothing
    at query time."""
    n, width = items.shape
    # the L2 column, then IVF-PQ's zero padding to a multiple of its sub-quantizers: one copy
    padded = width + 1 if config.kind == "hnsw" else -(-(width + 1) // config.pq_m) * config.pq_m
    data = np.zeros((n, padded), np.float32)
    data[:, :width] = items
    norms = np.einsum("id,id->i", data, data)
    data[:, width] = np.sqrt(np.maximum(norms.max(initial=0.0) - norms, 0.0))
    del norms
    if config.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(padded, config.m, faiss.METRIC_L2)
        hnsw.hnsw.efConstruction = config.ef_construction
        hnsw.add(data)
        return hnsw
    nlist = config.nlist or default_nlist(n)
    quantizer = faiss.IndexFlatL2(padded)
    index = faiss.IndexIVFPQ(quantizer, padded, nlist, config.pq_m, config.pq_bits, faiss.METRIC_L2)
    index.cp.seed = seed
    # k-means over a sample: 40 points per list (faiss's floor is 39) keeps 10^7 items trainable
    sample = data[np.random.default_rng(seed).choice(n, size=min(n, max(40 * nlist, 2 ** config.pq_bits * 40)),
                                                     replace=False)]
    index.train(sample)
    index.add(data)
    return index


def index_bytes(index: faiss.Index) -> int:
    """Bytes of the serialized index (what index.faiss holds and roughly what it takes in RAM)."""
    return int(faiss.serialize_index(index).size)


def exact_top(users: np.ndarray, items: np.ndarray, seen: np.ndarray, k: int,
              item_ids: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k ids [B, k] (``item_ids`` of them; default internal indices) with seen items
    removed, by the ``topk`` model's rule."""
    known = np.ones((len(users), 1), bool)
    ids = np.arange(len(items), dtype=np.int64) if item_ids is None else np.asarray(item_ids, np.int64)
    top, _ = topk_module.top_k(users @ items.T, seen, known, k, np.zeros(len(items), np.float32), ids)
    return top


def recall_at_k(got: np.ndarray, want: np.ndarray) -> float:
    """Mean share of each row's exact top-k (ids >= 0) found in the approximate list."""
    hits = [len(set(g[g >= 0]) & set(w[w >= 0])) / max(1, int((w >= 0).sum())) for g, w in zip(got, want)]
    return float(np.mean(hits)) if hits else 1.0


@dataclass(frozen=True)
class OverfetchTrial:
    overfetch: float
    fallback_rate: float     # share of known users answered by exact search
    recall: float            # recall@k against exact, fallbacks included
    ms_per_user: float


def choose_overfetch(searcher, user_rows: np.ndarray, seen: np.ndarray, exact: np.ndarray, k: int = 10,
                     candidates=OVERFETCH_CANDIDATES, max_fallback: float = MAX_FALLBACK):
    """Try each over-fetch on real users (batch 1, as served at low load) and keep the smallest
    whose exact-fallback rate is at most ``max_fallback`` and whose recall is within
    ``RECALL_SLACK`` of the best trial's: a larger one only fetches more. Seen items crowd
    the candidate list (a trained model scores them high), so too small a fetch shows as
    fallbacks (HNSW) or as lost recall (IVF-PQ, whose coarse codes need the re-rank's margin).
    -> (chosen, trials). ``searcher``: an AnnSearcher; its settings are left at the choice."""
    trials = []
    known = np.ones((1, 1), bool)
    for overfetch in candidates:
        searcher.settings["overfetch"] = float(overfetch)
        searcher.fallbacks = 0
        answers = []
        started = time.perf_counter()
        for row in range(len(user_rows)):
            answers.append(searcher.top_k(user_rows[row:row + 1], seen[row:row + 1], known, k)[0][0])
        elapsed = time.perf_counter() - started
        trials.append(OverfetchTrial(float(overfetch), searcher.fallbacks / len(user_rows),
                                     recall_at_k(np.array(answers), exact), elapsed / len(user_rows) * 1e3))
    best = max(t.recall for t in trials)
    chosen = next((t.overfetch for t in trials if t.fallback_rate <= max_fallback
                   and t.recall >= best - RECALL_SLACK), float(candidates[-1]))
    searcher.settings["overfetch"] = chosen
    return chosen, trials


@dataclass(frozen=True)
class AnnExport:
    model: ModelSpec
    ensemble: EnsembleSpec
    info: dict           # what ann.json holds: settings, measurements, memory


def write_ann_model(repo: Path, config: AnnConfig, users: np.ndarray, items: np.ndarray, features,
                    k: int = 10, check_users: int = 256, threads: int = 1, seed: int = 0) -> AnnExport:
    """Build ``config``'s index over ``items`` and write ann_<kind> + recommend_ann_<kind>.

    users [U, D] / items [I, D]: the served scorer's tables (bias folded in); features: the
    retrieval FeatureArrays (item ids, popularity, the users' seen items). The over-fetch
    (unless the config sets one) and the recall@k against exact search are measured on up to
    ``check_users`` real users and written to ann.json with the index's memory.
    """
    started = time.perf_counter()
    index = build_index(items, config, seed)
    build_s = time.perf_counter() - started
    model, ensemble = ann_spec(config.kind, threads=threads), ann_ensemble_spec(config.kind)
    info = {**config.settings(), "config": asdict(config), "build_seconds": round(build_s, 2),
            "index_bytes": index_bytes(index), "flat_bytes": int(items.nbytes), "n_items": len(items)}
    files: Mapping[str, Path | bytes] = {
        **python_model_files("ann_search"), "index.faiss": faiss.serialize_index(index).tobytes(),
        "user_vectors.npy": npy_bytes(users.astype(np.float32)),
        "catalogue.npy": npy_bytes(items.astype(np.float32)),
        "item_ids.npy": npy_bytes(features.item_ids), "popularity.npy": npy_bytes(features.popularity),
        "ann.json": json.dumps({**info, "overfetch": max(config.overfetch, 0.0)}).encode()}
    folder = write_model(repo, build_model_config(model), files) / "1"
    searcher = ann_module.AnnSearcher.load(str(folder), threads)
    rows = np.sort(np.random.default_rng(seed).choice(len(users), size=min(check_users, len(users)),
                                                      replace=False))
    seen = seen_rows(features, rows)
    exact = exact_top(users[rows], items, seen, min(k, len(items)), features.item_ids)
    # a set over-fetch is measured too (one trial): recall and fallback rate go to ann.json either way
    candidates = OVERFETCH_CANDIDATES if config.overfetch < 0 else (config.overfetch,)
    chosen, trials = choose_overfetch(searcher, rows, seen, exact, min(k, len(items)), candidates)
    trial = next(t for t in trials if t.overfetch == chosen)
    info.update(overfetch=chosen, recall_at_k=trial.recall, fallback_rate=trial.fallback_rate, k=k,
                overfetch_trials=[asdict(t) for t in trials])
    (folder / "ann.json").write_text(json.dumps(info, indent=2))
    write_model(repo, build_ensemble_config(ensemble), {})
    return AnnExport(model, ensemble, info)


def seen_rows(features, rows: np.ndarray) -> np.ndarray:
    """The seen items of internal users ``rows`` as feature_lookup serves them ([B, L], -1 padded)."""
    starts, ends = features.seen_indptr[rows], features.seen_indptr[rows + 1]
    width = int((ends - starts).max(initial=0))
    offsets = np.arange(width)
    mask = offsets[None, :] < (ends - starts)[:, None]
    gather = np.where(mask, starts[:, None] + offsets[None, :], 0)
    return np.where(mask, features.seen_items[gather] if len(features.seen_items) else -1, -1).astype(np.int64)


class InProcessAnn:
    """recommend_ann_<kind> in-process: the repository's feature_lookup and the same index,
    through the same ``AnnSearcher`` the python model runs."""

    def __init__(self, lookup_folder: Path, ann_folder: Path, threads: int = 1):
        lookup = load_python_model("feature_lookup")
        self.lookup = lookup.lookup_users
        self.table = lookup.UserTable.load(str(lookup_folder))
        self.searcher = ann_module.AnnSearcher.load(str(ann_folder), threads)

    def recommend(self, user_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index, seen, known = self.lookup(np.asarray(user_ids, dtype=np.int64), self.table)
        k = ann_module.parse_k(np.array([k], dtype=np.int32), len(self.searcher.item_ids))
        return self.searcher.top_k(index, seen, known, k)
