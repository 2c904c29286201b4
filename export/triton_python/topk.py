"""topk: the K best unseen items per user, popular items for cold-start users.

Inputs  SCORES     FP32  [B, I]  the scorer's score for every catalogue item
        SEEN_ITEMS INT64 [B, L]  internal indices to exclude, -1 padded
        IS_KNOWN   BOOL  [B, 1]  False -> rank by popularity instead of SCORES
        K          INT32 [B, 1]  how many items (the same K for every row of a request)
Outputs ITEM_IDS   INT64 [B, K]  raw item ids, best first (-1 where fewer than K remain)
        TOP_SCORES FP32  [B, K]

Artifacts beside this file: item_ids.npy (raw id per internal index), popularity.npy, and
recdeploy_triton_core.py (the shared numpy core: top_k, parse_k, the execute adapter).
No request field ever reaches the filesystem: both arrays are read once, in initialize().
A bad K is the client's mistake (INVALID_ARGUMENT); SCORES / SEEN_ITEMS that disagree with
the arrays are a broken deployment (INTERNAL).
"""
import numpy as np
from recdeploy_triton_core import BadRequest, PipelineFault, execute_requests, load_npy, parse_k, top_k, version_folder

__all__ = ["BadRequest", "PipelineFault", "TritonPythonModel", "load_npy", "parse_k", "top_k"]


class TritonPythonModel:
    def initialize(self, args):
        folder = version_folder(args)
        self.item_ids = load_npy(folder, "item_ids").astype(np.int64)
        self.popularity = load_npy(folder, "popularity").astype(np.float32)
        if self.item_ids.ndim != 1 or self.popularity.shape != self.item_ids.shape:
            raise ValueError(f"{folder}: item_ids.npy {list(self.item_ids.shape)} and "
                             f"popularity.npy {list(self.popularity.shape)} must be equal 1-D")

    def execute(self, requests):
        return execute_requests("topk", requests, self.answer)

    def answer(self, get):
        k = parse_k(get("K"), len(self.item_ids))
        ids, best = top_k(get("SCORES"), get("SEEN_ITEMS"), get("IS_KNOWN"), k,
                          self.popularity, self.item_ids)
        return {"ITEM_IDS": ids, "TOP_SCORES": best}
