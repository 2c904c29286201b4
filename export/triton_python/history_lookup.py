"""history_lookup: raw user id -> the user's recent history for the sequential scorer.

Inputs  USER_ID    INT64 [B, 1]
Outputs HISTORY    INT64 [B, L]   tokens (internal item + 1), right-aligned, 0-padded; the
                                  last L items in time order (L = max_len of the model)
        SEEN_ITEMS INT64 [B, S]   internal item indices to exclude, right-padded with -1
        IS_KNOWN   BOOL  [B, 1]   False -> cold start: empty history, top-K answers popularity

Artifacts beside this file: user_ids.npy (sorted raw ids), history_indptr.npy +
history_items.npy (CSR, time order), seen_indptr.npy + seen_items.npy (CSR), max_len.npy.
Row r of every CSR is the user user_ids[r].
"""
import os

import numpy as np

try:  # present inside Triton's python backend; absent when tests import the numpy core
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover
    pb_utils = None

ARRAYS = ("user_ids", "history_indptr", "history_items", "seen_indptr", "seen_items")


class HistoryTable:
    """The feature store for the sequential scenario: per-user histories and seen items."""

    def __init__(self, user_ids, history_indptr, history_items, seen_indptr, seen_items, max_len):
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.history_indptr = np.asarray(history_indptr, dtype=np.int64)
        self.history_items = np.asarray(history_items, dtype=np.int64)
        self.seen_indptr = np.asarray(seen_indptr, dtype=np.int64)
        self.seen_items = np.asarray(seen_items, dtype=np.int64)
        self.max_len = int(max_len)
        for name in ("history_indptr", "seen_indptr"):
            if len(getattr(self, name)) != len(self.user_ids) + 1:
                raise ValueError(f"{name} must have one entry more than user_ids")
        if self.max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {self.max_len}")

    @classmethod
    def load(cls, folder):
        arrays = [np.load(os.path.join(folder, f"{name}.npy")) for name in ARRAYS]
        return cls(*arrays, int(np.load(os.path.join(folder, "max_len.npy"))))


def _gather_rows(values, starts, lengths, width, fill):
    """[B, width] of values[starts[b] + j] for j < lengths[b], fill elsewhere (left-aligned)."""
    offsets = np.arange(width)
    mask = offsets[None, :] < lengths[:, None]
    gather = np.where(mask, starts[:, None] + offsets[None, :], 0)
    picked = values[gather] if len(values) else np.zeros(gather.shape, dtype=np.int64)
    return np.where(mask, picked, fill), mask


def lookup_histories(user_ids, table):
    """user_ids [B] or [B,1] -> (history tokens [B, max_len], seen [B, S], is_known [B, 1])."""
    user_ids = np.asarray(user_ids).reshape(-1)
    if user_ids.dtype.kind not in "iu":
        raise ValueError(f"USER_ID must be an integer tensor, got {user_ids.dtype}")
    user_ids = user_ids.astype(np.int64)
    position = np.minimum(np.searchsorted(table.user_ids, user_ids), max(len(table.user_ids) - 1, 0))
    if len(table.user_ids):
        known = table.user_ids[position] == user_ids
    else:
        known = np.zeros(len(user_ids), dtype=bool)
    row = np.where(known, position, 0)

    # the last max_len history items, right-aligned as tokens (item + 1)
    h_len = np.where(known, table.history_indptr[row + 1] - table.history_indptr[row], 0)
    h_len = np.minimum(h_len, table.max_len)
    h_start = table.history_indptr[row + 1] - h_len
    left, mask = _gather_rows(table.history_items, h_start, h_len, table.max_len, -1)
    history = np.zeros((len(row), table.max_len), dtype=np.int64)
    shift = table.max_len - h_len
    cols = np.arange(table.max_len)[None, :] + shift[:, None]
    r, c = np.nonzero(mask)
    history[r, cols[r, c]] = left[r, c] + 1

    s_start = table.seen_indptr[row]
    s_len = np.where(known, table.seen_indptr[row + 1] - s_start, 0)
    width = int(s_len.max()) if len(s_len) else 0
    seen, _ = _gather_rows(table.seen_items, s_start, s_len, width, -1)
    return history, seen.astype(np.int64), known.reshape(-1, 1)


class TritonPythonModel:
    def initialize(self, args):
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.table = HistoryTable.load(folder)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                user_ids = pb_utils.get_input_tensor_by_name(request, "USER_ID").as_numpy()
                history, seen, known = lookup_histories(user_ids, self.table)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("HISTORY", history),
                    pb_utils.Tensor("SEEN_ITEMS", seen),
                    pb_utils.Tensor("IS_KNOWN", known),
                ]))
            except Exception as err:  # one bad request must not take the others down
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"history_lookup: {err}")))
        return responses
