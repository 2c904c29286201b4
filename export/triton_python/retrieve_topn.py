"""retrieve_topn: the multi-stage ensemble's candidate generator (retrieval scores -> top N).

Inputs  SCORES     FP32  [B, I]  the retrieval scorer's score for every catalogue item
        SEEN_ITEMS INT64 [B, L]  internal indices to exclude, -1 padded
        IS_KNOWN   BOOL  [B, 1]  False -> the N most popular items instead
Outputs CANDIDATES INT64 [B, N]  raw item ids, best first (-1 where fewer than N remain)

N is the model config parameter ``n_candidates`` (fixed per deployment, so the ranker
always sees the same candidate count). Artifacts beside this file: item_ids.npy,
popularity.npy (the same arrays the retrieval ``topk`` model serves from) and
recdeploy_triton_core.py. Every input comes from earlier steps, so every failure here is
a server fault (INTERNAL).
"""
import json

import numpy as np
from recdeploy_triton_core import execute_requests, load_npy, top_k, version_folder

__all__ = ["TritonPythonModel", "n_candidates", "top_n_candidates"]


def top_n_candidates(scores, seen, is_known, n, popularity, item_ids):
    """-> raw item ids [B, min(N, I)]: ``top_k``'s list without its scores (one ranking rule
    for retrieval and multi-stage)."""
    ids, _ = top_k(scores, seen, is_known, min(n, len(item_ids)), popularity, item_ids)
    return ids


def n_candidates(model_config):
    parameters = model_config.get("parameters") or {}
    value = parameters.get("n_candidates", {}).get("string_value", "")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"retrieve_topn needs parameter n_candidates >= 1, got {value!r}")
    return int(value)


class TritonPythonModel:
    def initialize(self, args):
        folder = version_folder(args)
        self.item_ids = load_npy(folder, "item_ids").astype(np.int64)
        self.popularity = load_npy(folder, "popularity").astype(np.float32)
        self.n = n_candidates(json.loads(args["model_config"]))

    def execute(self, requests):
        return execute_requests("retrieve_topn", requests, self.answer)

    def answer(self, get):
        candidates = top_n_candidates(get("SCORES"), get("SEEN_ITEMS"), get("IS_KNOWN"),
                                      self.n, self.popularity, self.item_ids)
        return {"CANDIDATES": candidates}
