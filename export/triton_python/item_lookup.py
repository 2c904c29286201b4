"""item_lookup: raw item id -> the item's internal index, and whether the catalogue has it.

Inputs  ITEM_ID    INT64 [B, 1]
Outputs ITEM_INDEX INT64 [B, 1]   internal index (0 for unknown items; see IS_KNOWN)
        IS_KNOWN   BOOL  [B, 1]   False -> the neighbours step answers with popular items

Artifacts beside this file: item_ids.npy (sorted raw ids; the internal index of row r is r)
and recdeploy_triton_core.py (the shared numpy core). Unknown, negative and
out-of-vocabulary ids are not errors (the documented fallback: popular items); an ITEM_ID
that is not [batch, 1] integers is the client's mistake (INVALID_ARGUMENT).
"""
import numpy as np
from recdeploy_triton_core import execute_requests, id_column, load_npy, version_folder

__all__ = ["ItemTable", "TritonPythonModel", "load_npy", "lookup_items"]


class ItemTable:
    """The catalogue's raw ids, sorted."""

    def __init__(self, item_ids):
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        if self.item_ids.ndim != 1 or len(self.item_ids) == 0 or np.any(np.diff(self.item_ids) <= 0):
            raise ValueError("item_ids must be a non-empty, sorted, unique 1-D array")

    @classmethod
    def load(cls, folder):
        return cls(load_npy(folder, "item_ids"))


def lookup_items(item_ids, table):
    """item_ids [B] or [B, 1] integers -> (item_index int64 [B, 1], is_known bool [B, 1])."""
    item_ids = id_column(item_ids, "ITEM_ID")
    position = np.minimum(np.searchsorted(table.item_ids, item_ids), len(table.item_ids) - 1)
    known = table.item_ids[position] == item_ids
    return np.where(known, position, 0).reshape(-1, 1), known.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args):
        self.table = ItemTable.load(version_folder(args))

    def execute(self, requests):
        return execute_requests("item_lookup", requests, self.answer)

    def answer(self, get):
        index, known = lookup_items(get("ITEM_ID"), self.table)
        return {"ITEM_INDEX": index, "IS_KNOWN": known}
