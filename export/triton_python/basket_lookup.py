"""basket_lookup: raw user id -> the user's purchase history for the next-basket scorer.

Inputs  USER_ID        INT64 [B, 1]
Outputs HISTORY_ITEMS  INT64 [B, L]  internal items the user bought, every purchase (repeats
                                     included), most recent last, -1 padded on the right
        HISTORY_AGES   INT64 [B, L]  baskets after each purchase's own (0: the latest), -1 padded
        SEEN_ITEMS     INT64 [B, 1]  all -1: nothing is excluded, repeat purchases are what a
                                     grocery basket is made of (the contract's seen-item policy)
        IS_KNOWN       BOOL  [B, 1]  False -> no orders on file: top-K answers popularity

L is the longest history in the batch. Artifacts beside this file: user_ids.npy (sorted raw
ids), history_indptr.npy + history_items.npy + history_ages.npy (CSR rows aligned with user_ids), and
recdeploy_triton_core.py (the shared numpy core). Unknown ids (no orders) are cold starts;
a USER_ID that is not [batch, 1] integers is the client's mistake (INVALID_ARGUMENT).
"""
import numpy as np
from recdeploy_triton_core import execute_requests, load_npy, user_id_column, version_folder

__all__ = ["BasketTable", "TritonPythonModel", "lookup_baskets"]

ARRAYS = ("user_ids", "history_indptr", "history_items", "history_ages")


class BasketTable:
    """The grocery feature store: every user's purchases (item, basket age) in time order."""

    def __init__(self, user_ids, history_indptr, history_items, history_ages):
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.history_indptr = np.asarray(history_indptr, dtype=np.int64)
        self.history_items = np.asarray(history_items, dtype=np.int64)
        self.history_ages = np.asarray(history_ages, dtype=np.int64)
        if len(self.history_indptr) != len(self.user_ids) + 1:
            raise ValueError("history_indptr must have one entry more than user_ids")
        if np.any(np.diff(self.user_ids) <= 0):
            raise ValueError("user_ids must be sorted and unique")
        if self.history_ages.shape != self.history_items.shape:
            raise ValueError("history_ages and history_items must have the same length")

    @classmethod
    def load(cls, folder):
        return cls(*(load_npy(folder, name) for name in ARRAYS))


def lookup_baskets(user_ids, table):
    """user_ids [B] or [B,1] -> (items [B, L], ages [B, L], seen [B, 1], is_known [B, 1])."""
    user_ids = user_id_column(user_ids)
    position = np.minimum(np.searchsorted(table.user_ids, user_ids), max(len(table.user_ids) - 1, 0))
    known = table.user_ids[position] == user_ids if len(table.user_ids) else np.zeros(len(user_ids), bool)
    row = np.where(known, position, 0)
    starts = table.history_indptr[row]
    lengths = np.where(known, table.history_indptr[row + 1] - starts, 0)
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    offsets = np.arange(width)
    mask = offsets[None, :] < lengths[:, None]
    gather = np.where(mask, starts[:, None] + offsets[None, :], 0)
    if len(table.history_items):
        items = np.where(mask, table.history_items[gather], -1)
        ages = np.where(mask, table.history_ages[gather], -1)
    else:
        items = ages = np.full(mask.shape, -1, dtype=np.int64)
    seen = np.full((len(user_ids), 1), -1, dtype=np.int64)
    return items.astype(np.int64), ages.astype(np.int64), seen, known.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args):
        self.table = BasketTable.load(version_folder(args))

    def execute(self, requests):
        return execute_requests("basket_lookup", requests, self.answer)

    def answer(self, get):
        items, ages, seen, known = lookup_baskets(get("USER_ID"), self.table)
        return {"HISTORY_ITEMS": items, "HISTORY_AGES": ages, "SEEN_ITEMS": seen, "IS_KNOWN": known}
