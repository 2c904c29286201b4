"""The ads CTR ranker's features on the Open Bandit Dataset, as numpy: the time split, the
lookups from raw hashed values to vocabulary indices, and feature rows for any (context,
item, position).

    split = time_split(ds)
    arrays, item_vocab = build_arrays(ds, split.train)
    sparse, dense = features(arrays, context_indices(arrays, ds_contexts(ds))[ds.users], ds.items + 1, 1)

The served ``obd_features`` model (export/triton_python/obd_features.py) does the same from
the arrays ``ContextArrays`` holds; export checks the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recdeploy.train.data import Dataset, Split
from recdeploy.train.models.dcn_v2_context import CONTEXT_FIELDS, SPARSE_FIELDS

FRACTIONS = (0.7, 0.1, 0.2)
ITEM_ATTRIBUTES = ("item_feature_1", "item_feature_2", "item_feature_3")


def time_split(ds: Dataset, fractions=FRACTIONS) -> Split:
    """Rows in time order (ties: row order) cut into train / valid / test by the fractions."""
    order = np.argsort(ds.timestamps, kind="stable")
    n_train = int(round(fractions[0] * len(order)))
    n_valid = int(round(fractions[1] * len(order)))
    return Split(np.sort(order[:n_train]), np.sort(order[n_train:n_train + n_valid]),
                 np.sort(order[n_train + n_valid:]))


@dataclass(frozen=True)
class ContextArrays:
    """The model's lookups as numpy (what ``ContextTables`` holds): per context field the
    sorted hashed values seen in training; item rows (row 0 unknown)."""
    context_vocab: tuple[np.ndarray, ...]   # 4 x int64 [V_k - 1]
    item_ids: np.ndarray                    # int64 [I]
    item_sparse: np.ndarray                 # int64 [I+1, 5]: item, 3 attributes, campaign
    item_dense: np.ndarray                  # float32 [I+1, 1]

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        return tuple(len(v) + 1 for v in self.context_vocab)


def _index(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Vocabulary index (position + 1) of each value, 0 where it is not in the vocabulary."""
    if len(sorted_values) == 0:
        return np.zeros(values.shape, dtype=np.int64)
    position = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return np.where(sorted_values[position] == values, position + 1, 0).astype(np.int64)


def build_arrays(ds: Dataset, train_rows: np.ndarray) -> tuple[ContextArrays, tuple[int, ...]]:
    """-> (lookups, item attribute vocabulary sizes). Item attributes are catalogue content,
    known for every item up front; context values only from the training rows."""
    contexts = ds_contexts(ds)
    vocab = tuple(np.unique(contexts[ds.users[train_rows], k]) for k in range(len(CONTEXT_FIELDS)))
    attributes, sizes = [], []
    for name in ITEM_ATTRIBUTES:
        values = np.unique(ds.item_features[name])
        attributes.append(_index(values, ds.item_features[name]))
        sizes.append(len(values) + 1)
    item_sparse = np.stack([np.arange(1, ds.n_items + 1), *attributes,
                            ds.item_features["campaign"] + 1], axis=1).astype(np.int64)
    item_dense = ds.item_features["item_feature_0"].astype(np.float32)[:, None]
    with_unknown = [np.concatenate([np.zeros((1, t.shape[1]), t.dtype), t]) for t in (item_sparse, item_dense)]
    return ContextArrays(vocab, ds.item_ids.astype(np.int64), *with_unknown), tuple(sizes)


def ds_contexts(ds: Dataset) -> np.ndarray:
    """int64 [U, 4]: each internal user's (context's) hashed feature values."""
    return np.stack([ds.user_features[f] for f in CONTEXT_FIELDS], axis=1).astype(np.int64)


def context_indices(arrays: ContextArrays, contexts: np.ndarray) -> np.ndarray:
    """Raw hashed context values [..., 4] -> vocabulary indices [..., 4] (0 = unseen)."""
    return np.stack([_index(v, contexts[..., k]) for k, v in enumerate(arrays.context_vocab)], axis=-1)


def features(arrays: ContextArrays, context_index: np.ndarray, item_rows: np.ndarray,
             positions: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """context indices [..., 4], item rows [...] (internal index + 1), positions [...] or one
    int, broadcast together -> sparse int64 [..., 10], dense float32 [..., 1]."""
    item_rows, positions = np.asarray(item_rows, dtype=np.int64), np.asarray(positions, dtype=np.int64)
    lead = np.broadcast_shapes(context_index.shape[:-1], item_rows.shape, positions.shape)
    context_index = np.broadcast_to(context_index, (*lead, context_index.shape[-1]))
    item_rows = np.broadcast_to(item_rows, lead)
    position = np.broadcast_to(positions, lead)[..., None]
    sparse = np.concatenate([context_index, arrays.item_sparse[item_rows], position], axis=-1)
    assert sparse.shape[-1] == len(SPARSE_FIELDS)
    return sparse.astype(np.int64), arrays.item_dense[item_rows]


def load_arrays(model, arrays: ContextArrays) -> None:
    tables = model.tables
    for k, values in enumerate(arrays.context_vocab):
        tables.context_vocab(k).copy_(torch.from_numpy(values))
    for name in ("item_ids", "item_sparse", "item_dense"):
        getattr(tables, name).copy_(torch.from_numpy(getattr(arrays, name)))


def arrays_of(model) -> ContextArrays:
    t = model.tables
    return ContextArrays(tuple(t.context_vocab(k).numpy() for k in range(len(CONTEXT_FIELDS))),
                         t.item_ids.numpy(), t.item_sparse.numpy(), t.item_dense.numpy())
