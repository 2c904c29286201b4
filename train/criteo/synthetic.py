"""Seeded synthetic click logs in the Criteo schema, with a planted signal and its Bayes AUC.

    data = SyntheticCriteo(rows=10_000_000)                # Kaggle's per-field cardinalities
    data = SyntheticCriteo(rows=200_000, scale=0.01)       # the same shape, 100x fewer ids
    for chunk in data.chunks():                            # RawChunk, chunk_rows at a time
        p = data.click_probability(chunk)                  # the truth the labels were drawn from
    expected_auc(p)                                        # the Bayes AUC: no model can beat it

Why it looks like Criteo: per-field vocabularies of Kaggle's sizes (times ``scale``), ids
drawn with Zipf-skewed frequencies (a few hot ids, a long tail seen once or never), ids
written as 32-bit hashes (a bijective mix of the id's popularity rank, so rank is not
visible), some fields often missing, 13 heavy-tailed counts with missing values and a few
negatives (as I2 has). Why AUC means something: the label is Bernoulli(sigmoid(logit)) with
logit = bias + per-id effects of a few fields (two of them 10^6-10^7-id fields, so rare ids
carry signal no model can learn from one sighting) + a latent dot product between two fields
(what DLRM's pairwise interaction and DCN's cross layers model) + a linear term in the
log-transformed counts. Each chunk is drawn from its own seeded generator, so a chunk is
reproducible without drawing the ones before it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from recdeploy.train.criteo.schema import KAGGLE_CARDINALITIES, MISSING_ID, N_DENSE, N_SPARSE, dense_transform
from recdeploy.train.criteo.tsv import RawChunk

_MULT = 2654435761                        # odd, so rank -> rank * MULT mod 2^32 is a bijection
_INV = pow(_MULT, -1, 1 << 32)
_MASK = np.uint64((1 << 32) - 1)
# field index -> std of its per-id effect on the logit (C1, C2, C3, C6, C9, C10, C12, C14, C24)
EFFECT_STD = {0: 0.6, 1: 0.5, 2: 0.8, 5: 0.4, 8: 0.3, 9: 0.4, 11: 0.5, 13: 0.3, 23: 0.5}
INTERACTION = (6, 10)                     # C7 x C11: latent vectors whose dot enters the logit
INTERACTION_DIM = 4
BIAS = -1.6                               # a click rate near Criteo's ~25 %
# share of rows with the field missing (Criteo has fields empty in ~40 % of rows)
MISSING_RATE = tuple(0.4 if f in (18, 19, 21, 24, 25) else 0.05 if f in (12, 15, 23) else 0.0
                     for f in range(N_SPARSE))
DENSE_MU = np.linspace(0.3, 4.0, N_DENSE)
DENSE_MISSING = np.array([0.45, 0.0, 0.2, 0.2, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.2])
DENSE_WEIGHT = np.array([0.3, -0.2, 0.25, 0.0, 0.0, -0.15, 0.2, 0.0, 0.0, 0.3, 0.0, 0.0, 0.1])


def expected_auc(p: np.ndarray) -> float:
    """The AUC a scorer ranking by the true probability p reaches in expectation over the
    labels (pairs of distinct rows weighted p_i (1 - p_j)): the Bayes AUC of these rows."""
    p = np.sort(np.asarray(p, dtype=np.float64))
    neg = 1.0 - p
    below = np.cumsum(neg) - neg                      # negative weight of rows ranked lower
    numerator = float(np.sum(p * below))
    denominator = float(p.sum() * neg.sum() - np.sum(p * neg))
    return numerator / denominator


@dataclass
class SyntheticCriteo:
    rows: int = 200_000
    scale: float = 1.0                    # multiplies every field's cardinality (at least 2 ids)
    zipf: float = 1.1                     # id frequency ~ rank^-zipf
    seed: int = 0
    chunk_rows: int = 250_000
    cardinalities: tuple[int, ...] = KAGGLE_CARDINALITIES
    _effects: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.rows < 1 or self.chunk_rows < 1 or self.scale <= 0 or self.zipf <= 1.0:
            raise ValueError("SyntheticCriteo needs rows >= 1, chunk_rows >= 1, scale > 0, zipf > 1")
        if len(self.cardinalities) != N_SPARSE:
            raise ValueError(f"cardinalities: one per categorical field ({N_SPARSE}), "
                             f"got {len(self.cardinalities)}")

    @property
    def sizes(self) -> tuple[int, ...]:
        """Ids per field after ``scale``."""
        return tuple(max(2, int(round(c * self.scale))) for c in self.cardinalities)

    def _salt(self, f: int) -> np.uint64:
        return np.uint64(np.random.default_rng([self.seed, 7919, f]).integers(0, 1 << 32))

    def _effect(self, f: int) -> np.ndarray:
        if f not in self._effects:
            rng = np.random.default_rng([self.seed, 104729, f])
            self._effects[f] = (EFFECT_STD[f] * rng.standard_normal(self.sizes[f])).astype(np.float32)
        return self._effects[f]

    def _latent(self, f: int) -> np.ndarray:
        key = ("latent", f)
        if key not in self._effects:
            rng = np.random.default_rng([self.seed, 15485863, f])
            self._effects[key] = (0.5 * rng.standard_normal((self.sizes[f], INTERACTION_DIM))
                                  ).astype(np.float32)
        return self._effects[key]

    def _ranks(self, ids: np.ndarray, f: int) -> np.ndarray:
        """raw ids of field f -> popularity ranks (the inverse of the hash)."""
        mixed = (ids.astype(np.uint64) ^ self._salt(f)) * np.uint64(_INV)
        return (mixed & _MASK).astype(np.int64)

    def chunk(self, index: int) -> RawChunk:
        start = index * self.chunk_rows
        n = min(self.chunk_rows, self.rows - start)
        if n <= 0:
            raise IndexError(f"chunk {index} is past the {self.rows} rows")
        rng = np.random.default_rng([self.seed, index])
        ids = np.empty((n, N_SPARSE), dtype=np.int64)
        s = self.zipf
        for f, size in enumerate(self.sizes):
            u = rng.random(n)
            top = (size + 1.0) ** (1.0 - s)
            rank = np.floor(((top - 1.0) * u + 1.0) ** (1.0 / (1.0 - s))).astype(np.int64) - 1
            rank = np.clip(rank, 0, size - 1).astype(np.uint64)
            raw = ((rank * np.uint64(_MULT)) & _MASK) ^ self._salt(f)
            ids[:, f] = np.where(rng.random(n) < MISSING_RATE[f], MISSING_ID, raw.astype(np.int64))
        counts = np.floor(np.exp(DENSE_MU + 1.2 * rng.standard_normal((n, N_DENSE))) - 1.0)
        counts[:, 1] -= 3 * (rng.random(n) < 0.1)          # I2 has small negatives
        dense = np.where(rng.random((n, N_DENSE)) < DENSE_MISSING, np.nan, counts)
        partial = RawChunk(np.zeros(n, np.float32), dense, ids)
        labels = (rng.random(n) < self.click_probability(partial)).astype(np.float32)
        return RawChunk(labels, dense, ids)

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[RawChunk]:
        """Chunks ``start`` .. ``stop`` - 1 (default: all of them)."""
        stop = self.n_chunks if stop is None else min(stop, self.n_chunks)
        for index in range(start, stop):
            yield self.chunk(index)

    @property
    def n_chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    def logits(self, chunk: RawChunk) -> np.ndarray:
        """The planted logit of every row (what the labels were drawn from)."""
        logit = np.full(len(chunk), BIAS, dtype=np.float64)
        for f in EFFECT_STD:
            present = chunk.ids[:, f] != MISSING_ID
            ranks = self._ranks(chunk.ids[present, f], f)
            logit[present] += self._effect(f)[ranks]
        a, b = INTERACTION
        both = (chunk.ids[:, a] != MISSING_ID) & (chunk.ids[:, b] != MISSING_ID)
        u = self._latent(a)[self._ranks(chunk.ids[both, a], a)]
        v = self._latent(b)[self._ranks(chunk.ids[both, b], b)]
        logit[both] += (u * v).sum(axis=1)
        dense = dense_transform(chunk.dense).astype(np.float64)
        logit += ((dense - DENSE_MU) / 1.2) @ DENSE_WEIGHT
        return logit

    def click_probability(self, chunk: RawChunk) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(chunk)))
