"""history_lookup: raw user id -> the user's recent history for the sequential scorer.

Inputs  USER_ID    INT64 [B, 1]
Outputs HISTORY    INT64 [B, L]   tokens (internal item + 1), right-aligned, 0-padded; the
                                  last L items in time order (L = max_len of the model)
        SEEN_ITEMS INT64 [B, S]   internal item indices to exclude, right-padded with -1
        IS_KNOWN   BOOL  [B, 1]   False -> cold start: empty history, top-K answers popularity

Artifacts beside this file: user_ids.npy (sorted raw ids), history_indptr.npy +
history_items.npy (CSR, time order), seen_indptr.npy + seen_items.npy (CSR), max_len.npy.
Row r of every CSR is the user user_ids[r]. recdeploy_triton_core.py (the shared numpy core)
lies beside this file. Unknown ids are cold starts; a USER_ID that is not [batch, 1]
integers is the client's mistake (INVALID_ARGUMENT).
"""
import numpy as np
from recdeploy_triton_core import execute_requests, load_npy, user_id_column, version_folder

__all__ = ["HistoryTable", "TritonPythonModel", "lookup_histories"]

ARRAYS = ("user_ids", "history_indptr", "history_items", "seen_indptr", "seen_items")


class HistoryTable:
    """The feature store for the sequential scenario: per-user histories and seen items."""

    def __init__(self, user_ids, history_indptr, history_items, seen_indptr, seen_items, max_len):
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.history_indptr = np.asarray(history_indptr, dtype=np.int64)
        self.history_items = np.asarray(history_items, dtype=np.int64)
        self.seen_indptr = np.asarray(seen_indptr, dtype=np.int64)
        self.seen_items = np.asarray(seen_items, dtype=np.int64)
        self.max_len = int(max_len)
        for name in ("history_indptr", "seen_indptr"):
            if len(getattr(self, name)) != len(self.user_ids) + 1:
                raise ValueError(f"{name} must have one entry more than user_ids")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")

    @classmethod
    def load(cls, folder):
        arrays = [load_npy(folder, name) for name in ARRAYS]
        return cls(*arrays, int(load_npy(folder, "max_len")))


def _gather_rows(values, starts, lengths, width, fill):
    """[B, width] of values[starts[b] + j] for j < lengths[b], fill elsewhere (left-aligned)."""
    offsets = np.arange(width)
    mask = offsets[None, :] < lengths[:, None]
    gather = np.where(mask, starts[:, None] + offsets[None, :], 0)
    picked = values[gather] if len(values) else np.zeros(gather.shape, dtype=np.int64)
    return np.where(mask, picked, fill), mask


def lookup_histories(user_ids, table):
    """user_ids [B] or [B,1] -> (history tokens [B, max_len], seen [B, S], is_known [B, 1])."""
    user_ids = user_id_column(user_ids)
    position = np.minimum(np.searchsorted(table.user_ids, user_ids), max(len(table.user_ids) - 1, 0))
    if len(table.user_ids):
        known = table.user_ids[position] == user_ids
    else:
        known = np.zeros(len(user_ids), dtype=bool)
    row = np.where(known, position, 0)

    # the last max_len history items, right-aligned as tokens (item + 1)
    h_len = np.where(known, table.history_indptr[row + 1] - table.history_indptr[row], 0)
    h_len = np.minimum(h_len, table.max_len)
    h_start = table.history_indptr[row + 1] - h_len
    left, mask = _gather_rows(table.history_items, h_start, h_len, table.max_len, -1)
    history = np.zeros((len(row), table.max_len), dtype=np.int64)
    shift = table.max_len - h_len
    cols = np.arange(table.max_len)[None, :] + shift[:, None]
    r, c = np.nonzero(mask)
    history[r, cols[r, c]] = left[r, c] + 1

    s_start = table.seen_indptr[row]
    s_len = np.where(known, table.seen_indptr[row + 1] - s_start, 0)
    width = int(s_len.max()) if len(s_len) else 0
    seen, _ = _gather_rows(table.seen_items, s_start, s_len, width, -1)
    return history, seen.astype(np.int64), known.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args):
        self.table = HistoryTable.load(version_folder(args))

    def execute(self, requests):
        return execute_requests("history_lookup", requests, self.answer)

    def answer(self, get):
        history, seen, known = lookup_histories(get("USER_ID"), self.table)
        return {"HISTORY": history, "SEEN_ITEMS": seen, "IS_KNOWN": known}
