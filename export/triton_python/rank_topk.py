"""rank_topk: the K best of N scored candidates, invalid candidates last.

Inputs  SCORES     FP32  [B, N]  the ranker's logit per candidate
        CANDIDATES INT64 [B, N]  raw item ids, as requested
        VALID      BOOL  [B, N]  False: unknown id or a repeat (see ranking_features)
        K          INT32 [B, 1]  how many items (the same K for every row of a request)
Outputs ITEM_IDS   INT64 [B, K]  best first; -1 (score -inf) where fewer than K are valid
        TOP_SCORES FP32  [B, K]

Ties keep the candidates' request order, so served and offline lists agree exactly.
A K outside 1..N is the client's mistake (INVALID_ARGUMENT). Artifact beside this file:
recdeploy_triton_core.py.
"""
import numpy as np
from recdeploy_triton_core import BadRequest, execute_requests, parse_k

__all__ = ["BadRequest", "TritonPythonModel", "parse_k", "rank_top_k"]


def rank_top_k(scores, candidates, valid, k):
    """-> (raw item ids [B,K], scores [B,K]) best first; invalid candidates -inf, id -1."""
    scores = np.asarray(scores, dtype=np.float32)
    candidates = np.asarray(candidates, dtype=np.int64).reshape(scores.shape)
    valid = np.asarray(valid, dtype=bool).reshape(scores.shape)
    scores = np.where(valid, scores, np.float32(-np.inf))
    position = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((position, -scores), axis=1)[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    ids = np.where(np.isfinite(best), np.take_along_axis(candidates, order, axis=1), -1)
    return ids.astype(np.int64), best.astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        return execute_requests("rank_topk", requests, self.answer)

    def answer(self, get):
        scores = get("SCORES")
        k = parse_k(get("K"), scores.shape[1], "the number of candidates")
        ids, best = rank_top_k(scores, get("CANDIDATES"), get("VALID"), k)
        return {"ITEM_IDS": ids, "TOP_SCORES": best}
