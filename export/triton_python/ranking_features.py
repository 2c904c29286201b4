"""ranking_features: user id + candidate item ids -> the CTR ranker's feature tensors.

Inputs  USER_ID    INT64 [B, 1]     raw user id
        CANDIDATES INT64 [B, N]     raw item ids to score
Outputs SPARSE     INT64 [B, N, 6]  (user, gender, age, occupation, zip prefix, item) indices
        GENRES     FP32  [B, N, G]  the item's genres, multi-hot
        DENSE      FP32  [B, N, 3]  (user activity, release year, item activity), standardized
        VALID      BOOL  [B, N]     False for an unknown id or a repeat of an earlier candidate

Unknown users read the reserved row 0 (every user field "unknown"; the ranker was trained
with such rows, so they get a population-average ranking). Unknown candidate ids (and -1
padding) also read row 0 and come back VALID False, as does every repeat of a candidate
after its first position in the row: the top-K step scores those -inf and puts them last.

Artifacts beside this file: user_ids.npy (sorted raw ids; table row r + 1 is the user at
position r), item_ids.npy (raw id of internal item i; table row i + 1), and the tables
user_sparse.npy, user_dense.npy, item_sparse.npy, item_genres.npy, item_dense.npy; and
recdeploy_triton_core.py (the shared numpy core). Ids that are not integers are the
client's mistake (INVALID_ARGUMENT).
"""
import numpy as np
from recdeploy_triton_core import BadRequest, execute_requests, load_npy, user_id_column, version_folder

__all__ = ["TABLES", "FeatureStore", "TritonPythonModel", "candidate_features", "first_occurrence"]

TABLES = ("user_sparse", "user_dense", "item_sparse", "item_genres", "item_dense")


class FeatureStore:
    """Raw id -> table row for users and items, and the feature tables (row 0 = unknown)."""

    def __init__(self, user_ids, item_ids, user_sparse, user_dense, item_sparse, item_genres,
                 item_dense):
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        if np.any(np.diff(self.user_ids) <= 0):
            raise ValueError("user_ids must be sorted and unique")
        item_ids = np.asarray(item_ids, dtype=np.int64)
        self.item_order = np.argsort(item_ids, kind="stable")
        self.sorted_item_ids = item_ids[self.item_order]
        self.user_sparse = np.asarray(user_sparse, dtype=np.int64)
        self.user_dense = np.asarray(user_dense, dtype=np.float32)
        self.item_sparse = np.asarray(item_sparse, dtype=np.int64)
        self.item_genres = np.asarray(item_genres, dtype=np.float32)
        self.item_dense = np.asarray(item_dense, dtype=np.float32)
        if len(self.user_sparse) != len(self.user_ids) + 1 or len(self.item_sparse) != len(item_ids) + 1:
            raise ValueError("feature tables need one row per id plus the unknown row 0")

    @classmethod
    def load(cls, folder):
        return cls(*(load_npy(folder, name) for name in ("user_ids", "item_ids", *TABLES)))

    def user_rows(self, user_ids):
        return _rows(self.user_ids, None, user_ids)

    def item_rows(self, item_ids):
        return _rows(self.sorted_item_ids, self.item_order, item_ids)


def _rows(sorted_ids, order, ids):
    """Table rows (position + 1) of raw ids; 0 where an id is unknown."""
    if len(sorted_ids) == 0:
        return np.zeros(ids.shape, dtype=np.int64)
    position = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    known = sorted_ids[position] == ids
    index = position if order is None else order[position]
    return np.where(known, index + 1, 0).astype(np.int64)


def first_occurrence(candidates):
    """[B, N] -> BOOL [B, N]: True at the first position of each distinct id in its row."""
    order = np.argsort(candidates, axis=1, kind="stable")
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeat = np.zeros(candidates.shape, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.empty(candidates.shape, dtype=bool)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def candidate_features(user_ids, candidates, store):
    """-> (sparse [B,N,6] int64, genres [B,N,G] fp32, dense [B,N,3] fp32, valid [B,N] bool)."""
    user_ids = np.asarray(user_ids)
    candidates = np.asarray(candidates)
    if user_ids.dtype.kind not in "iu" or candidates.dtype.kind not in "iu":
        raise BadRequest(f"USER_ID and CANDIDATES must be integer tensors, got "
                         f"{user_ids.dtype} and {candidates.dtype}")
    user_ids = user_id_column(user_ids)
    # N = 0 would reach the ranker as an empty axis, which its graph cannot reshape (a 500)
    if candidates.ndim != 2 or len(candidates) != len(user_ids) or candidates.shape[1] == 0:
        raise BadRequest(f"CANDIDATES must be [batch, N >= 1] with one row per USER_ID row "
                         f"({len(user_ids)}), got {list(candidates.shape)}")
    candidates = candidates.astype(np.int64)
    users = store.user_rows(user_ids)
    items = store.item_rows(candidates)
    valid = (items > 0) & first_occurrence(candidates)
    batch, n = candidates.shape
    user_sparse = np.broadcast_to(store.user_sparse[users][:, None, :],
                                  (batch, n, store.user_sparse.shape[1]))
    user_dense = np.broadcast_to(store.user_dense[users][:, None, :],
                                 (batch, n, store.user_dense.shape[1]))
    sparse = np.concatenate([user_sparse, store.item_sparse[items]], axis=2)
    dense = np.concatenate([user_dense, store.item_dense[items]], axis=2)
    return sparse, store.item_genres[items], dense.astype(np.float32), valid


class TritonPythonModel:
    def initialize(self, args):
        self.store = FeatureStore.load(version_folder(args))

    def execute(self, requests):
        return execute_requests("ranking_features", requests, self.answer)

    def answer(self, get):
        sparse, genres, dense, valid = candidate_features(get("USER_ID"), get("CANDIDATES"), self.store)
        return {"SPARSE": sparse, "GENRES": genres, "DENSE": dense, "VALID": valid}
