"""neighbours: the first K of an item's precomputed most similar items (the query excluded).

Inputs  ITEM_INDEX INT64 [B, 1]   internal item index (from item_lookup)
        IS_KNOWN   BOOL  [B, 1]   False -> the K most popular items instead
        K          INT32 [B, 1]   how many items (the same K for every row of a request)
Outputs ITEM_IDS   INT64 [B, K]   raw item ids, most similar first (-1 where the item has
                                  fewer than K neighbours with a positive similarity)
        SCORES     FP32  [B, K]   similarities (-inf at -1); for unknown items the
                                  popular items' interaction counts

Artifacts beside this file: neighbour_index.npy (int64 [I, N] internal indices, best first,
-1 padded), neighbour_scores.npy (float32 [I, N], -inf padded), item_ids.npy (raw id per
internal index), popularity.npy, and recdeploy_triton_core.py (the shared numpy core). One
model per similarity method, each with its own lists. A K outside 1..N (the list length) is
the client's mistake (INVALID_ARGUMENT); an ITEM_INDEX past the lists is a broken pipeline
(INTERNAL). Read once, in initialize(); no request field reaches the filesystem.
"""
import numpy as np
from recdeploy_triton_core import PipelineFault, execute_requests, load_npy, parse_k, version_folder

__all__ = ["NeighbourTable", "TritonPythonModel", "load_npy", "nearest"]

ARRAYS = ("neighbour_index", "neighbour_scores", "item_ids", "popularity")


class NeighbourTable:
    """Precomputed neighbour lists plus what maps them to raw ids and the cold-start list."""

    def __init__(self, neighbour_index, neighbour_scores, item_ids, popularity):
        self.index = np.asarray(neighbour_index, dtype=np.int64)
        self.scores = np.asarray(neighbour_scores, dtype=np.float32)
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        popularity = np.asarray(popularity, dtype=np.float32)
        n_items = len(self.item_ids)
        if self.index.ndim != 2 or self.index.shape != self.scores.shape or len(self.index) != n_items:
            raise ValueError(f"neighbour_index {list(self.index.shape)} and neighbour_scores "
                             f"{list(self.scores.shape)} must both be [{n_items}, N]")
        if popularity.shape != self.item_ids.shape:
            raise ValueError(f"popularity.npy has {popularity.shape} entries, item_ids.npy {n_items}")
        if self.index.size and (self.index.max() >= n_items or self.index.min() < -1):
            raise ValueError(f"neighbour_index must hold -1 or internal indices below {n_items}")
        self.popular = np.argsort(-popularity, kind="stable")[:self.index.shape[1]]
        self.popular_scores = popularity[self.popular]

    @property
    def length(self):
        return self.index.shape[1]

    @classmethod
    def load(cls, folder):
        return cls(*(load_npy(folder, name) for name in ARRAYS))


def nearest(item_index, is_known, k, table):
    """-> (raw item ids [B, K], scores [B, K]): each known item's first K neighbours, the K
    most popular items for an unknown one."""
    index = np.asarray(item_index, dtype=np.int64).reshape(-1)
    known = np.asarray(is_known).reshape(-1).astype(bool)
    if len(known) != len(index):
        raise PipelineFault(f"IS_KNOWN has {len(known)} rows, ITEM_INDEX {len(index)}")
    if index.size and (index.min() < 0 or index.max() >= len(table.item_ids)):
        raise PipelineFault(f"ITEM_INDEX holds {int(index.max())}, beyond the catalogue "
                            f"({len(table.item_ids)} items)")
    rows = table.index[index, :k]
    scores = table.scores[index, :k]
    rows = np.where(known[:, None], rows, table.popular[None, :k])
    scores = np.where(known[:, None], scores, table.popular_scores[None, :k])
    ids = np.where(rows >= 0, table.item_ids[np.maximum(rows, 0)], -1)
    return ids.astype(np.int64), scores.astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        self.name = args.get("model_name", "neighbours")     # one model per method: say which
        self.table = NeighbourTable.load(version_folder(args))

    def execute(self, requests):
        return execute_requests(self.name, requests, self.answer)

    def answer(self, get):
        k = parse_k(get("K"), self.table.length, "the neighbour-list length")
        ids, scores = nearest(get("ITEM_INDEX"), get("IS_KNOWN"), k, self.table)
        return {"ITEM_IDS": ids, "SCORES": scores}
