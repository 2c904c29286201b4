"""history_lookup: raw user id -> the user's recent history for the sequential scorer.

Inputs  USER_ID    INT64 [B, 1]
Outputs HISTORY    INT64 [B, L]   tokens (internal item + 1), right-aligned, 0-padded; the
                                  last L items in time order (L = max_len of the model)
        SEEN_ITEMS INT64 [B, S]   internal item indices to exclude, right-padded with -1
        IS_KNOWN   BOOL  [B, 1]   False -> cold start: empty history, top-K answers popularity

Artifacts beside this file: user_ids.npy (sorted raw ids), history_indptr.npy +
history_items.npy (CSR, time order), seen_indptr.npy + seen_items.npy (CSR), max_len.npy.
Row r of every CSR is the user user_ids[r]. Or store.json + max_len.npy: a Redis store
holding the same (recdeploy_store.py: file and Redis behind one fetch). recdeploy_triton_core.py (the shared numpy core)
lies beside this file. Unknown ids are cold starts; a USER_ID that is not [batch, 1]
integers is the client's mistake (INVALID_ARGUMENT).
"""
from recdeploy_store import FileStore, open_store
from recdeploy_triton_core import execute_requests, load_npy, user_id_column, version_folder

__all__ = ["HistoryTable", "TritonPythonModel", "lookup_histories", "open_history_store"]

ARRAYS = ("user_ids", "history_indptr", "history_items", "seen_indptr", "seen_items")
FIELDS = ("history", "seen")


class HistoryTable(FileStore):
    """The file store for the sequential scenario: per-user histories and seen items."""

    def __init__(self, user_ids, history_indptr, history_items, seen_indptr, seen_items, max_len):
        super().__init__(user_ids, {"history": (history_indptr, history_items),
                                    "seen": (seen_indptr, seen_items)})
        self.max_len = int(max_len)
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")

    @classmethod
    def load(cls, folder):
        arrays = [load_npy(folder, name) for name in ARRAYS]
        return cls(*arrays, int(load_npy(folder, "max_len")))


def open_history_store(folder):
    """The version's store (Redis when ``store.json`` names it, else the arrays) with ``max_len``."""
    store = open_store(folder, HistoryTable.load)
    if not isinstance(store, HistoryTable):
        store.max_len = int(load_npy(folder, "max_len"))
        if store.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {store.max_len}")
    return store


def lookup_histories(user_ids, table):
    """user_ids [B] or [B,1] -> (history tokens [B, max_len], seen [B, S], is_known [B, 1]).

    ``table``: any store with ``max_len``; the history is its last max_len items, right-aligned
    as tokens (item + 1, 0 = padding)."""
    rows = table.fetch(user_id_column(user_ids), FIELDS)
    history = rows.fields["history"].last(table.max_len, fill=-1) + 1
    return history, rows.fields["seen"].padded(-1), rows.known.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args):
        self.table = open_history_store(version_folder(args))

    def execute(self, requests):
        return execute_requests("history_lookup", requests, self.answer)

    def answer(self, get):
        history, seen, known = lookup_histories(get("USER_ID"), self.table)
        return {"HISTORY": history, "SEEN_ITEMS": seen, "IS_KNOWN": known}
