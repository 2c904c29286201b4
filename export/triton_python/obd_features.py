"""obd_features: an ad request's context + candidate ads -> the ads ranker's feature tensors.

Inputs  CONTEXT    INT64 [B, 4]      the four hashed user features, each as the integer of
                                     its first 15 hex digits (the dataset's user_feature_k)
        CANDIDATES INT64 [B, N]      raw ad (item) ids to rank, N >= 1, no repeats
Outputs SPARSE     INT64 [B, N, 10]  (4 context fields, item, 3 item attributes, campaign,
                                     slot position) vocabulary indices
        DENSE      FP32  [B, N, 1]   the item's numeric attribute
        VALID      BOOL  [B, N]      all True (rank_topk's input; every candidate is known)

The slot position is the fixed served one (served_position.npy) for every candidate: the
ranker was trained with the logged slot as a feature, and ranks as if each ad were shown in
that slot. A context value never seen in training reads index 0 ("unknown"; the ranker was
trained with such rows), per field: the documented fallback, not an error. Client mistakes
are INVALID_ARGUMENT: a candidate id outside the ad catalogue, a repeated candidate in a
row, an empty candidate list, a CONTEXT that is not [B, 4] integers.

Artifacts beside this file: context_vocab_{0..3}.npy (sorted hashed values seen in
training, index = position + 1), item_ids.npy (sorted raw ids; row r + 1 is the item at
position r), item_sparse.npy [I+1, 5], item_dense.npy [I+1, 1], served_position.npy, and
contexts.npy (real logged contexts: canaries and perf inputs read them, the model does not);
recdeploy_triton_core.py (the shared numpy core).
"""
import numpy as np
from recdeploy_triton_core import BadRequest, PipelineFault, execute_requests, load_npy, version_folder

__all__ = ["AdFeatureStore", "BadRequest", "TritonPythonModel", "ad_features"]

N_CONTEXT = 4


class AdFeatureStore:
    """The lookups of one exported ranker (row 0 of the item tables = unknown)."""

    def __init__(self, context_vocab, item_ids, item_sparse, item_dense, served_position, contexts=None):
        self.context_vocab = [np.asarray(v, dtype=np.int64) for v in context_vocab]
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(self.context_vocab) != N_CONTEXT or any(np.any(np.diff(v) <= 0) for v in self.context_vocab):
            raise PipelineFault(f"need {N_CONTEXT} sorted context vocabularies")
        if np.any(np.diff(self.item_ids) <= 0):
            raise PipelineFault("item_ids must be sorted and unique")
        self.item_sparse = np.asarray(item_sparse, dtype=np.int64)
        self.item_dense = np.asarray(item_dense, dtype=np.float32)
        if len(self.item_sparse) != len(self.item_ids) + 1 or len(self.item_dense) != len(self.item_ids) + 1:
            raise PipelineFault("item tables need one row per item plus the unknown row 0")
        self.served_position = int(np.asarray(served_position).reshape(-1)[0])
        self.contexts = np.zeros((0, N_CONTEXT), np.int64) if contexts is None else np.asarray(contexts, np.int64)

    @classmethod
    def load(cls, folder):
        vocab = [load_npy(folder, f"context_vocab_{k}") for k in range(N_CONTEXT)]
        return cls(vocab, *(load_npy(folder, name) for name in
                            ("item_ids", "item_sparse", "item_dense", "served_position", "contexts")))


def _index(sorted_values, values):
    """Position + 1 of each value in sorted_values, 0 where absent."""
    if len(sorted_values) == 0:
        return np.zeros(values.shape, dtype=np.int64)
    position = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return np.where(sorted_values[position] == values, position + 1, 0).astype(np.int64)


def _check(context, candidates, store):
    context, candidates = np.asarray(context), np.asarray(candidates)
    if context.dtype.kind not in "iu" or candidates.dtype.kind not in "iu":
        raise BadRequest(f"CONTEXT and CANDIDATES must be integer tensors, got {context.dtype} and "
                         f"{candidates.dtype}")
    if context.ndim != 2 or context.shape[1] != N_CONTEXT:
        raise BadRequest(f"CONTEXT must be [batch, {N_CONTEXT}] (the four hashed user features), "
                         f"got {list(context.shape)}")
    # N = 0 would reach the ranker as an empty axis, which its graph cannot reshape (a 500)
    if candidates.ndim != 2 or len(candidates) != len(context) or candidates.shape[1] == 0:
        raise BadRequest(f"CANDIDATES must be [batch, N >= 1] with one row per CONTEXT row "
                         f"({len(context)}), got {list(candidates.shape)}")
    candidates = candidates.astype(np.int64)
    known = _index(store.item_ids, candidates) > 0
    if not known.all():
        unknown = sorted(set(candidates[~known].tolist()))[:5]
        raise BadRequest(f"CANDIDATES holds ids outside the ad catalogue ({len(store.item_ids)} ads): "
                         f"{unknown}")
    ordered = np.sort(candidates, axis=1)
    repeats = ordered[:, 1:] == ordered[:, :-1]
    if repeats.any():
        row, col = (int(v[0]) for v in np.nonzero(repeats))
        raise BadRequest(f"CANDIDATES row {row} repeats ad {int(ordered[row, col])}: each ad at most once")
    return context.astype(np.int64), candidates


def ad_features(context, candidates, store):
    """-> (sparse [B,N,10] int64, dense [B,N,1] fp32, valid [B,N] bool); BadRequest as above."""
    context, candidates = _check(context, candidates, store)
    batch, n = candidates.shape
    context_index = np.stack([_index(v, context[:, k]) for k, v in enumerate(store.context_vocab)], axis=1)
    rows = _index(store.item_ids, candidates)
    sparse = np.concatenate([np.broadcast_to(context_index[:, None, :], (batch, n, N_CONTEXT)),
                             store.item_sparse[rows],
                             np.full((batch, n, 1), store.served_position, dtype=np.int64)], axis=2)
    return sparse.astype(np.int64), store.item_dense[rows], np.ones((batch, n), dtype=bool)


class TritonPythonModel:
    def initialize(self, args):
        self.store = AdFeatureStore.load(version_folder(args))

    def execute(self, requests):
        return execute_requests("obd_features", requests, self.answer)

    def answer(self, get):
        sparse, dense, valid = ad_features(get("CONTEXT"), get("CANDIDATES"), self.store)
        return {"SPARSE": sparse, "DENSE": dense, "VALID": valid}
