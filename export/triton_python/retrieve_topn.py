"""retrieve_topn: the multi-stage ensemble's candidate generator (retrieval scores -> top N).

Inputs  SCORES     FP32  [B, I]  the retrieval scorer's score for every catalogue item
        SEEN_ITEMS INT64 [B, L]  internal indices to exclude, -1 padded
        IS_KNOWN   BOOL  [B, 1]  False -> the N most popular items instead
Outputs CANDIDATES INT64 [B, N]  raw item ids, best first (-1 where fewer than N remain)

N is the model config parameter ``n_candidates`` (fixed per deployment, so the ranker
always sees the same candidate count). Artifacts beside this file: item_ids.npy,
popularity.npy (the same arrays the retrieval ``topk`` model serves from).
"""
import json
import os

import numpy as np

try:  # present inside Triton's python backend; absent when tests import the numpy core
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover
    pb_utils = None


def top_n_candidates(scores, seen, is_known, n, popularity, item_ids):
    """-> raw item ids [B, N]; seen items removed, unknown users ranked by popularity."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[1] != len(item_ids):
        raise ValueError(f"SCORES must be [batch, {len(item_ids)}], got {list(scores.shape)}")
    known = np.asarray(is_known).reshape(-1).astype(bool)
    scores = np.where(known[:, None], scores, popularity[None, :]).astype(np.float32)
    seen = np.asarray(seen, dtype=np.int64).reshape(len(scores), -1)
    rows, cols = np.nonzero(seen >= 0)
    scores[rows, seen[rows, cols]] = -np.inf
    n = min(n, scores.shape[1])
    if n < scores.shape[1]:
        chosen = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    else:
        chosen = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    chosen_scores = np.take_along_axis(scores, chosen, axis=1)
    order = np.lexsort((chosen, -chosen_scores), axis=1)
    best = np.take_along_axis(chosen, order, axis=1)
    finite = np.isfinite(np.take_along_axis(chosen_scores, order, axis=1))
    return np.where(finite, item_ids[best], -1).astype(np.int64)


def n_candidates(model_config):
    parameters = model_config.get("parameters") or {}
    value = parameters.get("n_candidates", {}).get("string_value", "")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"retrieve_topn needs parameter n_candidates >= 1, got {value!r}")
    return int(value)


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.item_ids = np.load(os.path.join(folder, "item_ids.npy")).astype(np.int64)
        self.popularity = np.load(os.path.join(folder, "popularity.npy")).astype(np.float32)
        self.n = n_candidates(json.loads(args["model_config"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                def get(name):
                    return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                candidates = top_n_candidates(get("SCORES"), get("SEEN_ITEMS"), get("IS_KNOWN"),
                                              self.n, self.popularity, self.item_ids)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("CANDIDATES", candidates)]))
            except Exception as err:  # one bad request must not take the others down
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"retrieve_topn: {err}")))
        return responses
