"""feature_lookup: raw user id -> what the scorer needs, plus the user's seen items.

Inputs  USER_ID  INT64 [B, 1]
Outputs USER_INDEX INT64 [B, 1]   internal index (0 for unknown users; see IS_KNOWN)
        SEEN_ITEMS INT64 [B, L]   internal item indices, right-padded with -1
        IS_KNOWN   BOOL  [B, 1]   False -> cold start: top-K answers with popular items

Artifacts beside this file: user_ids.npy (sorted raw ids), seen_indptr.npy + seen_items.npy
(CSR rows aligned with user_ids; the internal user index of row r is r) -- or store.json,
naming a Redis store holding the same (recdeploy_store.py: file and Redis behind one fetch).

No request field ever reaches the filesystem: files are read once, in initialize(), from
the model's own version folder. Unknown, negative and out-of-vocabulary ids are cold starts;
a USER_ID that is not [batch, 1] integers is the client's mistake (INVALID_ARGUMENT).
recdeploy_triton_core.py (the shared numpy core) lies beside this file.
"""
from recdeploy_store import FileStore, open_store
from recdeploy_triton_core import execute_requests, load_npy, user_id_column, version_folder

__all__ = ["TritonPythonModel", "UserTable", "load_npy", "lookup_users", "open_user_store"]

FIELDS = ("seen",)


class UserTable(FileStore):
    """The file store for users: sorted raw ids and a CSR of seen items."""

    def __init__(self, user_ids, seen_indptr, seen_items):
        if len(user_ids) == 0:
            raise ValueError("user_ids must be non-empty, sorted and unique")
        super().__init__(user_ids, {"seen": (seen_indptr, seen_items)})

    @classmethod
    def load(cls, folder):
        return cls(*(load_npy(folder, name) for name in ("user_ids", "seen_indptr", "seen_items")))


def open_user_store(folder):
    """The version's store: Redis when ``store.json`` names it, else the baked arrays."""
    return open_store(folder, UserTable.load)


def lookup_users(user_ids, store):
    """user_ids [B] or [B,1] int64 -> (user_index [B,1], seen [B,L] -1 padded, is_known [B,1])."""
    rows = store.fetch(user_id_column(user_ids), FIELDS)
    return rows.index.reshape(-1, 1), rows.fields["seen"].padded(-1), rows.known.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args):
        self.table = open_user_store(version_folder(args))

    def execute(self, requests):
        return execute_requests("feature_lookup", requests, self.answer)

    def answer(self, get):
        index, seen, known = lookup_users(get("USER_ID"), self.table)
        return {"USER_INDEX": index, "SEEN_ITEMS": seen, "IS_KNOWN": known}
