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

The same transforms as training (``recdeploy.train.criteo``; a test holds them equal on the
same rows). Artifacts beside this file: vocab_keys / vocab_rows / vocab_offsets / vocab_sizes
/ hash_rows .npy, and recdeploy_triton_core.py. A wrong shape, an id outside -1..2^32-1 or an
infinite count is the client's mistake (INVALID_ARGUMENT).
"""
import numpy as np
from recdeploy_triton_core import BadRequest, execute_requests, load_npy, version_folder

N_DENSE, N_SPARSE = 13, 26
MISSING_ROW, OOV_ROW, RESERVED_ROWS = 0, 1, 2
HASH_MULT = np.uint64(0x9E3779B1)
VOCAB_FILES = ("vocab_keys", "vocab_rows", "vocab_offsets", "vocab_sizes", "hash_rows")

__all__ = ["BadRequest", "TritonPythonModel", "Vocab", "candidate_valid", "dense_features"]


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


class TritonPythonModel:
    def initialize(self, args):
        self.vocab = Vocab.load(version_folder(args))

    def execute(self, requests):
        return execute_requests("criteo_features", requests, self.answer)

    def answer(self, get):
        x, sparse, valid = transform(get("DENSE"), get("CATEGORICAL"), get("CANDIDATES"), self.vocab)
        return {"DENSE_X": x, "SPARSE": sparse, "VALID": valid}
