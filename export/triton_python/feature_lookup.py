"""feature_lookup: raw user id -> what the scorer needs, plus the user's seen items.

Inputs  USER_ID  INT64 [B, 1]
Outputs USER_INDEX INT64 [B, 1]   internal index (0 for unknown users; see IS_KNOWN)
        SEEN_ITEMS INT64 [B, L]   internal item indices, right-padded with -1
        IS_KNOWN   BOOL  [B, 1]   False -> cold start: top-K answers with popular items

Artifacts beside this file: user_ids.npy (sorted raw ids), seen_indptr.npy + seen_items.npy
(CSR rows aligned with user_ids; the internal user index of row r is r).

No request field ever reaches the filesystem: files are read once, in initialize(), from
the model's own version folder. Unknown, negative and out-of-vocabulary ids are cold starts;
a USER_ID that is not [batch, 1] integers is the client's mistake (INVALID_ARGUMENT).
recdeploy_triton_core.py (the shared numpy core) lies beside this file.
"""
import numpy as np
from recdeploy_triton_core import execute_requests, load_npy, user_id_column, version_folder

__all__ = ["TritonPythonModel", "UserTable", "load_npy", "lookup_users"]


class UserTable:
    """The feature store for users: sorted raw ids and a CSR of seen items."""

    def __init__(self, user_ids, seen_indptr, seen_items):
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.seen_indptr = np.asarray(seen_indptr, dtype=np.int64)
        self.seen_items = np.asarray(seen_items, dtype=np.int64)
        if len(self.seen_indptr) != len(self.user_ids) + 1:
            raise ValueError("seen_indptr must have one entry more than user_ids")
        if len(self.user_ids) == 0 or np.any(np.diff(self.user_ids) <= 0):
            raise ValueError("user_ids must be non-empty, sorted and unique")
        if self.seen_indptr[0] != 0 or self.seen_indptr[-1] != len(self.seen_items) \
                or np.any(np.diff(self.seen_indptr) < 0):
            raise ValueError("seen_indptr must rise from 0 to len(seen_items)")

    @classmethod
    def load(cls, folder):
        return cls(*(load_npy(folder, name) for name in ("user_ids", "seen_indptr", "seen_items")))


def lookup_users(user_ids, table):
    """user_ids [B] or [B,1] int64 -> (user_index [B,1], seen [B,L] -1 padded, is_known [B,1])."""
    user_ids = user_id_column(user_ids)
    position = np.searchsorted(table.user_ids, user_ids)
    position = np.minimum(position, len(table.user_ids) - 1)
    known = table.user_ids[position] == user_ids
    index = np.where(known, position, 0)
    starts = table.seen_indptr[index]
    lengths = np.where(known, table.seen_indptr[index + 1] - starts, 0)
    width = int(lengths.max()) if len(lengths) else 0
    offsets = np.arange(width)
    mask = offsets[None, :] < lengths[:, None]
    gather = np.where(mask, starts[:, None] + offsets[None, :], 0)
    seen = np.where(mask, table.seen_items[gather] if len(table.seen_items) else -1, -1)
    return index.reshape(-1, 1), seen.astype(np.int64), known.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args):
        self.table = UserTable.load(version_folder(args))

    def execute(self, requests):
        return execute_requests("feature_lookup", requests, self.answer)

    def answer(self, get):
        index, seen, known = lookup_users(get("USER_ID"), self.table)
        return {"USER_INDEX": index, "SEEN_ITEMS": seen, "IS_KNOWN": known}
