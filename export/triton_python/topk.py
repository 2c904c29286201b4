"""topk: the K best unseen items per user, popular items for cold-start users.

Inputs  SCORES     FP32  [B, I]  the scorer's score for every catalogue item
        SEEN_ITEMS INT64 [B, L]  internal indices to exclude, -1 padded
        IS_KNOWN   BOOL  [B, 1]  False -> rank by popularity instead of SCORES
        K          INT32 [B, 1]  how many items (the same K for every row of a request)
Outputs ITEM_IDS   INT64 [B, K]  raw item ids, best first (-1 where fewer than K remain)
        TOP_SCORES FP32  [B, K]

Artifacts beside this file: item_ids.npy (raw id per internal index), popularity.npy.
No request field ever reaches the filesystem: both are read once, in initialize().
"""
import os

import numpy as np

try:  # present inside Triton's python backend; absent when tests import the numpy core
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover
    pb_utils = None


class BadRequest(ValueError):
    pass


def parse_k(k, batch_size, n_items):
    """One K for the request, 1 <= K <= catalogue size, else BadRequest saying what is valid."""
    k = np.asarray(k).reshape(-1)
    if k.size == 0:
        raise BadRequest("K is empty; send one positive integer per row")
    if k.dtype.kind not in "iu":
        raise BadRequest(f"K must be an integer tensor, got {k.dtype}")
    if np.any(k != k[0]):
        raise BadRequest(f"K must be the same for every row of a request, got {sorted(set(k.tolist()))}")
    value = int(k[0])
    if not 1 <= value <= n_items:
        raise BadRequest(f"K must be between 1 and the catalogue size {n_items}, got {value}")
    return value


def top_k(scores, seen, is_known, k, popularity, item_ids):
    """-> (raw item ids [B,K], scores [B,K]); seen items removed, unknown users get popularity."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[1] != len(item_ids):
        raise BadRequest(f"SCORES must be [batch, {len(item_ids)}], got {list(scores.shape)}")
    known = np.asarray(is_known).reshape(-1).astype(bool)
    if len(known) != len(scores):
        raise BadRequest(f"IS_KNOWN has {len(known)} rows, SCORES {len(scores)}")
    scores = np.where(known[:, None], scores, popularity[None, :]).astype(np.float32)
    seen = np.asarray(seen, dtype=np.int64).reshape(len(scores), -1)
    if seen.size and seen.max() >= scores.shape[1]:
        raise BadRequest(f"SEEN_ITEMS holds index {int(seen.max())}, beyond the catalogue "
                         f"({scores.shape[1]} items)")
    rows, cols = np.nonzero(seen >= 0)
    scores[rows, seen[rows, cols]] = -np.inf
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    # stable order: by score, ties by item index, so served and offline lists agree exactly
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    best = np.take_along_axis(candidates, order, axis=1)
    best_scores = np.take_along_axis(candidate_scores, order, axis=1)
    ids = np.where(np.isfinite(best_scores), item_ids[best], -1)
    return ids.astype(np.int64), best_scores.astype(np.float32)


def load_npy(folder, name):
    """np.load(<folder>/<name>.npy) whose error names the file (a truncated copy, say)."""
    path = os.path.join(folder, f"{name}.npy")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"cannot load {path}: {type(error).__name__}: {error}") from error


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.item_ids = load_npy(folder, "item_ids").astype(np.int64)
        self.popularity = load_npy(folder, "popularity").astype(np.float32)
        if self.item_ids.ndim != 1 or self.popularity.shape != self.item_ids.shape:
            raise ValueError(f"{folder}: item_ids.npy {list(self.item_ids.shape)} and "
                             f"popularity.npy {list(self.popularity.shape)} must be equal 1-D")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                def get(name):
                    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                scores = get("SCORES")
                k = parse_k(get("K"), len(scores), len(self.item_ids))
                ids, best = top_k(scores, get("SEEN_ITEMS"), get("IS_KNOWN"), k,
                                  self.popularity, self.item_ids)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("ITEM_IDS", ids), pb_utils.Tensor("TOP_SCORES", best)]))
            except Exception as err:  # one bad request must not take the others down
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"topk: {err}")))
        return responses
