"""Per-field vocabularies: raw 32-bit ids -> embedding rows, frequency-thresholded and hashed.

    vocab = build_vocabulary(train_chunks, min_count=2, max_vocab=500_000, hash_rows=2_000_000)
    rows = vocab.lookup(chunk.ids)          # int64 [n, 26]: each field's own row numbers
    vocab.rows_per_field                    # the embedding table sizes the model is built with

Rows of every field: 0 = missing, 1 = out of vocabulary, then the ids seen at least
``min_count`` times in training, most frequent first (so "the hot rows" are a prefix, which
frequency-aware compression uses), at most ``max_vocab`` of them. With ``hash_rows`` > 0, a
field whose kept ids were capped sends the ids it dropped to ``hash_rows`` more rows by a
multiplicative hash (the hashing trick DLRM uses for the Terabyte data) instead of to the
single OOV row. Only training rows build it, so nothing leaks from the held-out rows.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.train.criteo.schema import MISSING_ID, MISSING_ROW, N_SPARSE, OOV_ROW, RESERVED_ROWS
from recdeploy.train.criteo.tsv import RawChunk

HASH_MULT = np.uint64(0x9E3779B1)
FILES = ("vocab_keys", "vocab_rows", "vocab_offsets", "vocab_sizes", "hash_rows")


def hashed_rows(ids: np.ndarray, first: int, count: int) -> np.ndarray:
    """ids -> rows first .. first + count - 1 (a multiplicative hash of the 32-bit id)."""
    mixed = (ids.astype(np.uint64) * HASH_MULT) & np.uint64(0xFFFFFFFF)
    return (first + (mixed >> np.uint64(7)) % np.uint64(count)).astype(np.int64)


@dataclass(frozen=True)
class Vocabulary:
    keys: np.ndarray      # int64 [T] kept raw ids, field after field, sorted within a field
    rows: np.ndarray      # int64 [T] the row of each kept id within its field
    offsets: np.ndarray   # int64 [27] field f's keys are keys[offsets[f]:offsets[f+1]]
    sizes: np.ndarray     # int64 [26] kept ids per field
    hash_rows: np.ndarray  # int64 [26] hashed rows after the kept ids (0: OOV row instead)

    @property
    def rows_per_field(self) -> tuple[int, ...]:
        return tuple(int(RESERVED_ROWS + s + h) for s, h in zip(self.sizes, self.hash_rows))

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """raw ids int64 [n, 26] -> rows int64 [n, 26] (per field, see the module docstring)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty(ids.shape, dtype=np.int64)
        for f in range(N_SPARSE):
            keys = self.keys[self.offsets[f]:self.offsets[f + 1]]
            column = ids[:, f]
            pos = np.minimum(np.searchsorted(keys, column), max(len(keys) - 1, 0))
            found = keys[pos] == column if len(keys) else np.zeros(len(column), dtype=bool)
            rows = self.rows[self.offsets[f] + pos] if len(keys) else np.zeros(len(column), np.int64)
            unknown = (hashed_rows(column, RESERVED_ROWS + int(self.sizes[f]), int(self.hash_rows[f]))
                       if self.hash_rows[f] else np.full(len(column), OOV_ROW, dtype=np.int64))
            out[:, f] = np.where(column == MISSING_ID, MISSING_ROW, np.where(found, rows, unknown))
        return out

    def raw_ids(self, rows: np.ndarray) -> np.ndarray:
        """rows int [n, 26] -> raw ids that ``lookup`` maps back to the same rows, where one
        exists: missing for row 0, an id outside the vocabulary for row 1 and hashed rows."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty(rows.shape, dtype=np.int64)
        for f in range(N_SPARSE):
            keys = self.keys[self.offsets[f]:self.offsets[f + 1]]
            inverse = np.full(RESERVED_ROWS + int(self.sizes[f]), -2, dtype=np.int64)
            inverse[self.rows[self.offsets[f]:self.offsets[f + 1]]] = keys
            inverse[MISSING_ROW] = MISSING_ID
            inverse[OOV_ROW] = int(np.setdiff1d(np.arange(len(keys) + 1), keys)[0])  # never kept
            column = np.minimum(rows[:, f], len(inverse) - 1)
            out[:, f] = np.where(rows[:, f] < len(inverse), inverse[column], inverse[OOV_ROW])
        return out

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in zip(FILES, (self.keys, self.rows, self.offsets, self.sizes, self.hash_rows)):
            np.save(folder / f"{name}.npy", array)

    @classmethod
    def load(cls, folder: Path) -> Vocabulary:
        return cls(*(np.load(Path(folder) / f"{name}.npy") for name in FILES))


def _merge(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]):
    ids, inverse = np.unique(np.concatenate([a[0], b[0]]), return_inverse=True)
    return ids, np.bincount(inverse, weights=np.concatenate([a[1], b[1]]), minlength=len(ids)).astype(np.int64)


def count_ids(chunks: Iterable[RawChunk]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(sorted raw ids, counts) per field over the chunks, missing values left out."""
    counts = [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in range(N_SPARSE)]
    for chunk in chunks:
        for f in range(N_SPARSE):
            column = chunk.ids[:, f]
            ids, n = np.unique(column[column != MISSING_ID], return_counts=True)
            counts[f] = _merge(counts[f], (ids, n))
    return counts


def build_vocabulary(chunks: Iterable[RawChunk], min_count: int = 1, max_vocab: int = 0,
                     hash_rows: int = 0) -> Vocabulary:
    """max_vocab 0: no cap. hash_rows: rows for a capped field's dropped ids (0: OOV row)."""
    if min_count < 1 or max_vocab < 0 or hash_rows < 0:
        raise ValueError("build_vocabulary needs min_count >= 1, max_vocab >= 0, hash_rows >= 0")
    keys, rows, sizes, hashed = [], [], [], []
    for ids, n in count_ids(chunks):
        keep = np.flatnonzero(n >= min_count)
        by_frequency = keep[np.lexsort((ids[keep], -n[keep]))]
        capped = bool(max_vocab) and len(by_frequency) > max_vocab
        by_frequency = by_frequency[:max_vocab] if max_vocab else by_frequency
        row_of = np.empty(len(ids), dtype=np.int64)
        row_of[by_frequency] = RESERVED_ROWS + np.arange(len(by_frequency))
        kept = np.sort(by_frequency)            # ids are sorted, so kept ids stay sorted
        keys.append(ids[kept])
        rows.append(row_of[kept])
        sizes.append(len(kept))
        hashed.append(hash_rows if capped else 0)
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    return Vocabulary(np.concatenate(keys).astype(np.int64), np.concatenate(rows).astype(np.int64),
                      offsets, np.array(sizes, dtype=np.int64), np.array(hashed, dtype=np.int64))
