"""rank_topk: the K best of N scored candidates, invalid candidates last.

Inputs  SCORES     FP32  [B, N]  the ranker's logit per candidate
        CANDIDATES INT64 [B, N]  raw item ids, as requested
        VALID      BOOL  [B, N]  False: unknown id or a repeat (see ranking_features)
        K          INT32 [B, 1]  how many items (the same K for every row of a request)
Outputs ITEM_IDS   INT64 [B, K]  best first; -1 (score -inf) where fewer than K are valid
        TOP_SCORES FP32  [B, K]

Ties keep the candidates' request order, so served and offline lists agree exactly.
"""
import numpy as np

try:  # present inside Triton's python backend; absent when tests import the numpy core
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover
    pb_utils = None


class BadRequest(ValueError):
    pass


def parse_k(k, n_candidates):
    """One K for the request, 1 <= K <= N, else BadRequest saying what is valid."""
    k = np.asarray(k).reshape(-1)
    if k.size == 0 or k.dtype.kind not in "iu":
        raise BadRequest(f"K must be one integer per row, got {k.dtype} with {k.size} values")
    if np.any(k != k[0]):
        raise BadRequest(f"K must be the same for every row of a request, got {sorted(set(k.tolist()))}")
    value = int(k[0])
    if not 1 <= value <= n_candidates:
        raise BadRequest(f"K must be between 1 and the number of candidates {n_candidates}, got {value}")
    return value


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
        responses = []
        for request in requests:
            try:
                def get(name):
                    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                scores = get("SCORES")
                k = parse_k(get("K"), scores.shape[1])
                ids, best = rank_top_k(scores, get("CANDIDATES"), get("VALID"), k)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("ITEM_IDS", ids), pb_utils.Tensor("TOP_SCORES", best)]))
            except Exception as err:  # one bad request must not take the others down
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"rank_topk: {err}")))
        return responses
