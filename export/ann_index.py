"""ANN indexes and their measurement, numpy + faiss only (export/ann.py writes the served models).

    config, = parse_ann("hnsw:ef_search=128")
    index = build_index(items, config)                 # items [I, D] FP32, bias folded in
    recall_at_k(approximate_ids, exact_top(users, items, seen, 10))

Kept apart from the Triton writing so benchmarks run where only numpy and faiss are
installed (a lent GPU machine's CPUs, say).
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import faiss
import numpy as np

from recdeploy.export.triton_python import load_python_model

ann_module = load_python_model("ann_search")
topk_module = load_python_model("topk")

KINDS = ("hnsw", "ivfpq")
LABEL = re.compile(r"[a-z0-9_]{1,32}")
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
    rerank: how the catalogue for the candidates' re-rank and the exact fallback is held:
    fp32 (exact scores), or int8 (compress/rowwise.py's row-wise codes: about a quarter of the
    resident bytes; scores, fallback included, carry the quantization error, docs/ann.md).
    label: names a second setting of one kind in one repository (``ivfpq:nprobe=8:label=np8``
    -> ann_ivfpq_np8 / recommend_ann_ivfpq_np8); settings that share a ``build_key`` share
    one index build (a served sweep of search settings builds each index once).
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
    rerank: str = "fp32"
    label: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise AnnConfigError(f"unknown ANN index {self.kind!r}; valid: {', '.join(KINDS)}")
        if min(self.m, self.ef_construction, self.ef_search, self.nprobe, self.pq_m) < 1 \
                or self.nlist < 0 or self.k_factor < 1:
            raise AnnConfigError(f"{self.kind}: m, ef_*, nprobe, pq_m must be >= 1, nlist >= 0, "
                                 f"k_factor >= 1 (got {asdict(self)})")
        if self.pq_bits not in (4, 6, 8):
            raise AnnConfigError(f"{self.kind}: pq_bits must be 4, 6 or 8, got {self.pq_bits}")
        if self.rerank not in ann_module.RERANKS:
            raise AnnConfigError(f"{self.kind}: rerank must be one of {', '.join(ann_module.RERANKS)}, "
                                 f"got {self.rerank!r}")
        if self.label and not LABEL.fullmatch(self.label):
            raise AnnConfigError(f"{self.kind}: label must be lower-case letters, digits and '_' "
                                 f"(it becomes part of a model name), got {self.label!r}")

    @property
    def key(self) -> str:
        """What names the served model: ann_<key>, recommend_ann_<key>."""
        return f"{self.kind}_{self.label}" if self.label else self.kind

    def build_key(self) -> tuple:
        """The settings the index is built from (the rest are read at search time)."""
        if self.kind == "hnsw":
            return self.kind, self.m, self.ef_construction
        return self.kind, self.nlist, self.pq_m, self.pq_bits

    def settings(self) -> dict:
        return {"kind": self.kind, "ef_search": self.ef_search, "nprobe": self.nprobe,
                "k_factor": self.k_factor, "overfetch": self.overfetch, "rerank": self.rerank}


PRESETS = {"hnsw": AnnConfig("hnsw"), "ivfpq": AnnConfig("ivfpq", nprobe=32, pq_m=16, k_factor=4.0)}


def parse_ann(text: str) -> tuple[AnnConfig, ...]:
    """``hnsw,ivfpq`` or ``hnsw:ef_search=128,ivfpq:nprobe=8:pq_m=32:rerank=int8`` -> configs."""
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
            fields[key] = _field_value(part, key, value)
        configs.append(replace(PRESETS[name], **fields))
    if len({c.key for c in configs}) != len(configs):
        raise AnnConfigError(f"{text!r} names an index kind twice (give each a label=...)")
    return tuple(configs)


def _field_value(part: str, key: str, value: str) -> float | int | str:
    if key in ("rerank", "label"):
        return value
    try:
        return float(value) if key in ("k_factor", "overfetch") else int(value)
    except ValueError:
        kind = "a number" if key in ("k_factor", "overfetch") else "an integer"
        raise AnnConfigError(f"{part!r}: {key} must be {kind}, got {value!r}") from None


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
              item_ids: np.ndarray | None = None, chunk_bytes: int = 1 << 28) -> np.ndarray:
    """Exact top-k ids [B, k] (``item_ids`` of them; default internal indices) with seen items
    removed, by the ``topk`` model's rule; a few users at a time, so the score matrix stays
    within ``chunk_bytes`` (256 users x 10^7 items would be 10 GB)."""
    ids = np.arange(len(items), dtype=np.int64) if item_ids is None else np.asarray(item_ids, np.int64)
    rows = max(1, chunk_bytes // (4 * max(1, len(items))))
    parts = []
    for start in range(0, len(users), rows):
        chunk = slice(start, start + rows)
        known = np.ones((len(users[chunk]), 1), bool)
        top, _ = topk_module.top_k(users[chunk] @ items.T, seen[chunk], known, k,
                                   np.zeros(len(items), np.float32), ids)
        parts.append(top)
    return np.concatenate(parts) if parts else np.zeros((0, k), np.int64)


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


def seen_rows(features, rows: np.ndarray) -> np.ndarray:
    """The seen items of internal users ``rows`` as feature_lookup serves them ([B, L], -1 padded)."""
    starts, ends = features.seen_indptr[rows], features.seen_indptr[rows + 1]
    width = int((ends - starts).max(initial=0))
    offsets = np.arange(width)
    mask = offsets[None, :] < (ends - starts)[:, None]
    gather = np.where(mask, starts[:, None] + offsets[None, :], 0)
    return np.where(mask, features.seen_items[gather] if len(features.seen_items) else -1, -1).astype(np.int64)
