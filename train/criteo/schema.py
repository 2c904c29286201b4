"""The Criteo display-advertising schema and the two feature transforms every stage shares.

One row: ``label \t I1..I13 \t C1..C26`` — the label 0/1, 13 integer count features, 26
categorical features hashed to 32 bits and written as 8 hex digits; any feature may be empty
(missing). This is the layout of the Kaggle Display Advertising Challenge ``train.txt`` and of
the Criteo 1TB Click Logs ``day_N`` files.

Transforms (the DLRM reference's): a dense value becomes ``log(1 + max(x, 0))`` with missing
as 0; a categorical id becomes an embedding row through the field's vocabulary (row 0 =
missing, row 1 = out of vocabulary, rows 2.. = kept ids, most frequent first). The served
feature step (``export/triton_python/criteo_features.py``, numpy only) implements the same
two functions; a test holds the two equal on the same rows.
"""
from __future__ import annotations

import numpy as np

N_DENSE = 13
N_SPARSE = 26
DENSE_COLUMNS = tuple(f"I{i}" for i in range(1, N_DENSE + 1))
SPARSE_COLUMNS = tuple(f"C{i}" for i in range(1, N_SPARSE + 1))
COLUMNS = ("label", *DENSE_COLUMNS, *SPARSE_COLUMNS)
MISSING_ID = -1                 # a categorical left empty, as an int64 raw id
MISSING_ROW, OOV_ROW = 0, 1     # reserved embedding rows of every field
RESERVED_ROWS = 2

# Distinct values per categorical field in the Kaggle challenge's 45.8M rows (the counts the
# DLRM reference prints for its Kaggle run): three fields past 10^6 ids, five past 5 x 10^6,
# most under 10^4. The synthetic generator draws ids from vocabularies of these sizes.
KAGGLE_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                        286181, 105, 142572)


def dense_transform(raw: np.ndarray) -> np.ndarray:
    """raw counts [..., 13] (NaN = missing) -> float32 log(1 + max(x, 0)), missing as 0."""
    x = np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0)
    return np.log1p(np.maximum(x, 0.0)).astype(np.float32)


def hex_ids(column: np.ndarray) -> np.ndarray:
    """bytes like b"68fd1e64" (b"" = missing) -> int64 raw ids (MISSING_ID for missing).

    Vectorized: the 8 hex digits are looked up as bytes, no Python loop per value. A value
    that is not 1..8 hex digits raises ValueError naming it.
    """
    column = np.asarray(column, dtype="S8")
    digits = np.frombuffer(column.tobytes(), dtype=np.uint8).reshape(len(column), 8)
    lengths = np.char.str_len(column)
    values = _HEX[digits].astype(np.int64)
    present = np.arange(8)[None, :] < lengths[:, None]
    if np.any(present & (values < 0)):
        bad = column[np.flatnonzero(np.any(present & (values < 0), axis=1))[0]]
        raise ValueError(f"categorical value {bad!r} is not 8 hex digits")
    shift = 4 * (lengths[:, None] - 1 - np.arange(8)[None, :])
    ids = np.where(present, values << np.maximum(shift, 0), 0).sum(axis=1)
    return np.where(lengths > 0, ids, MISSING_ID).astype(np.int64)


_HEX = np.full(256, -1, dtype=np.int16)
for _k, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _k
for _k, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _k
