"""criteo_features: raw Criteo features of N candidate impressions -> the ranker's tensors.

Inputs  DENSE       FP32  [B, N, 13]  raw counts I1..I13 (NaN = missing)
        CATEGORICAL INT64 [B, N, 26]  raw 32-bit ids C1..C26 (the 8 hex digits as an integer;
                                      -1 = missing)
        CANDIDATES  INT64 [B, N]      the candidates' ids (ads), -1 = padding
Outputs DENSE_X     FP32  [B, N, 13]  log(1 + max(x, 0)), missing as 0
        SPARSE      INT64 [B, N, 26]  each field's embedding row: 0 missing, 1 out of
                                      vocabulary, kept ids by vocabulary, dropped ids of a
                                      capped field hashed to its extra rows
        VALID       BOOL  [B, N]      False for padding (-1) and repeated candidates

Cached tables (``criteo_features_cached``, the same file under a config with the parameter
``cache_rows``): SPARSE is not sent on; the rows are looked up here, through a CLOCK cache of
``cache_rows`` rows over ``table.npy`` memory-mapped from the version folder, and sent as
        EMBEDDINGS  FP32  [B, N, 26, D]   each field's table row (``table_offsets.npy``: the
                                      first row of each field in the one table)
to a ranker that holds only the dense part. Its hits and lookups are counters on Triton's
metrics port (``recdeploy_cache_hits_total``, ``recdeploy_cache_lookups_total``).

The same transforms as training (``recdeploy.train.criteo``; a test holds them equal on the
same rows). Artifacts beside this file: vocab_keys / vocab_rows / vocab_offsets / vocab_sizes
/ hash_rows .npy, recdeploy_triton_core.py and recdeploy_cache.py. A wrong shape, an id
outside -1..2^32-1 or an infinite count is the client's mistake (INVALID_ARGUMENT).
"""
import json
import os

import numpy as np
import recdeploy_triton_core as core
from recdeploy_cache import CachedTable
from recdeploy_triton_core import BadRequest, execute_requests, load_npy, version_folder

N_DENSE, N_SPARSE = 13, 26
MISSING_ROW, OOV_ROW, RESERVED_ROWS = 0, 1, 2
HASH_MULT = np.uint64(0x9E3779B1)
VOCAB_FILES = ("vocab_keys", "vocab_rows", "vocab_offsets", "vocab_sizes", "hash_rows")

__all__ = ["BadRequest", "CachedTable", "TritonPythonModel", "Vocab", "cache_rows", "candidate_valid",
           "dense_features", "embed"]


def dense_features(raw):
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 3 or raw.shape[2] != N_DENSE:
        raise BadRequest(f"DENSE must be [B, N, {N_DENSE}], got {list(raw.shape)}")
    if np.isinf(raw).any():
        raise BadRequest("DENSE holds an infinite count; send NaN for a missing value")
    x = np.nan_to_num(raw.astype(np.float64), nan=0.0)
    return np.log1p(np.maximum(x, 0.0)).astype(np.float32)


def candidate_valid(candidates):
    """False for padding (-1) and for a candidate repeated earlier in its row."""
    candidates = np.asarray(candidates, dtype=np.int64)
    order = np.argsort(candidates, axis=1, kind="stable")
    ranked = np.take_along_axis(candidates, order, axis=1)
    first = np.ones(candidates.shape, dtype=bool)
    first[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    valid = np.empty(candidates.shape, dtype=bool)
    np.put_along_axis(valid, order, first, axis=1)
    return valid & (candidates >= 0)


class Vocab:
    """The per-field vocabularies written by export: raw ids -> embedding rows."""

    def __init__(self, keys, rows, offsets, sizes, hash_rows):
        self.keys, self.rows = np.asarray(keys, np.int64), np.asarray(rows, np.int64)
        self.offsets, self.sizes = np.asarray(offsets, np.int64), np.asarray(sizes, np.int64)
        self.hash_rows = np.asarray(hash_rows, np.int64)

    @classmethod
    def load(cls, folder):
        return cls(*(load_npy(folder, name) for name in VOCAB_FILES))

    def lookup(self, ids):
        """ids int64 [..., 26] -> rows int64 [..., 26]"""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise BadRequest(f"CATEGORICAL must be integer ids, got {ids.dtype}")
        if ids.ndim != 3 or ids.shape[2] != N_SPARSE:
            raise BadRequest(f"CATEGORICAL must be [B, N, {N_SPARSE}], got {list(ids.shape)}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < -1 or ids.max() > 0xFFFFFFFF):
            raise BadRequest("CATEGORICAL ids must be 32-bit (0..4294967295) or -1 for missing")
        flat = ids.reshape(-1, N_SPARSE)
        out = np.empty(flat.shape, dtype=np.int64)
        for f in range(N_SPARSE):
            keys = self.keys[self.offsets[f]:self.offsets[f + 1]]
            column = flat[:, f]
            if len(keys):
                pos = np.minimum(np.searchsorted(keys, column), len(keys) - 1)
                found, rows = keys[pos] == column, self.rows[self.offsets[f] + pos]
            else:
                found, rows = np.zeros(len(column), bool), np.zeros(len(column), np.int64)
            if self.hash_rows[f]:
                mixed = (column.astype(np.uint64) * HASH_MULT) & np.uint64(0xFFFFFFFF)
                unknown = (RESERVED_ROWS + self.sizes[f]
                           + (mixed >> np.uint64(7)) % np.uint64(self.hash_rows[f])).astype(np.int64)
            else:
                unknown = np.full(len(column), OOV_ROW, dtype=np.int64)
            out[:, f] = np.where(column == -1, MISSING_ROW, np.where(found, rows, unknown))
        return out.reshape(ids.shape)


def transform(dense, categorical, candidates, vocab):
    """-> (DENSE_X, SPARSE, VALID) for one request."""
    x = dense_features(dense)
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.ndim != 2 or x.shape[:2] != candidates.shape:
        raise BadRequest(f"CANDIDATES [B, N] must match DENSE's first two axes {list(x.shape[:2])}, "
                         f"got {list(candidates.shape)}")
    sparse = vocab.lookup(categorical)
    if sparse.shape[:2] != candidates.shape:
        raise BadRequest(f"CATEGORICAL must be [B, N, 26] with [B, N] = {list(candidates.shape)}, "
                         f"got {list(sparse.shape)}")
    return x, sparse, candidate_valid(candidates)


def embed(sparse, table_offsets, table):
    """SPARSE [B, N, 26] (each field's rows) -> EMBEDDINGS [B, N, 26, D] through ``table``
    (a CachedTable over every field's rows, field f's starting at table_offsets[f])."""
    sparse = np.asarray(sparse, dtype=np.int64)
    return table.rows(sparse + table_offsets).reshape(*sparse.shape, -1)


def cache_rows(model_config):
    """The config's ``cache_rows`` parameter (JSON, as the backend passes it); 0 = uncached."""
    parameters = json.loads(model_config).get("parameters", {})
    value = parameters.get("cache_rows", {}).get("string_value", "0")
    if not value.isdigit():
        raise ValueError(f"parameter cache_rows must be a whole number of rows, got {value!r}")
    return int(value)


class CacheCounters:
    """The cache's hits and lookups as Prometheus counters (the backend's custom metrics)."""

    def __init__(self, model, table):
        self.table, self.seen = table, (0, 0)
        self.families = [core.pb_utils.MetricFamily(name=f"recdeploy_cache_{what}_total", description=text,
                                                    kind=core.pb_utils.MetricFamily.COUNTER)
                         for what, text in (("hits", "embedding rows answered from the cache"),
                                            ("lookups", "embedding rows looked up"))]
        self.metrics = [family.Metric(labels={"model": model}) for family in self.families]

    def update(self):
        now = (self.table.hits, self.table.lookups)
        for metric, new, old in zip(self.metrics, now, self.seen):
            if new > old:
                metric.increment(new - old)
        self.seen = now

    def close(self):
        self.metrics.clear()            # a Metric goes before its MetricFamily
        self.families.clear()


class TritonPythonModel:
    def initialize(self, args):
        folder = version_folder(args)
        self.vocab = Vocab.load(folder)
        self.table = self.counters = None
        capacity = cache_rows(args["model_config"])
        if capacity:
            self.table = CachedTable(os.path.join(folder, "table.npy"), capacity)
            self.table_offsets = load_npy(folder, "table_offsets")
            if core.pb_utils is not None and hasattr(core.pb_utils, "MetricFamily"):
                self.counters = CacheCounters(args["model_name"], self.table)

    def execute(self, requests):
        responses = execute_requests("criteo_features", requests, self.answer)
        if self.counters is not None:
            self.counters.update()
        return responses

    def answer(self, get):
        x, sparse, valid = transform(get("DENSE"), get("CATEGORICAL"), get("CANDIDATES"), self.vocab)
        if self.table is None:
            return {"DENSE_X": x, "SPARSE": sparse, "VALID": valid}
        return {"DENSE_X": x, "EMBEDDINGS": embed(sparse, self.table_offsets, self.table), "VALID": valid}

    def finalize(self):
        if self.counters is not None:
            self.counters.close()
