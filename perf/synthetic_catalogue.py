"""Synthetic retrieval models of any catalogue size, for scale benchmarks (no training needed).

    fused, features = synthetic_fused(n_items=1_000_000, n_users=10_000, dim=64)

Speed does not depend on what the vectors learned, so random vectors with a realistic
popularity skew and seen-item lists measure the same work as a trained model of that shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recdeploy.export.fused import FusedRetrieval


@dataclass(frozen=True)
class SyntheticFeatures:
    user_ids: np.ndarray
    seen_indptr: np.ndarray
    seen_items: np.ndarray
    item_ids: np.ndarray
    popularity: np.ndarray
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_bias: np.ndarray


def synthetic_features(n_items: int, n_users: int = 10_000, dim: int = 64, seen_per_user: int = 20,
                       seed: int = 0) -> SyntheticFeatures:
    rng = np.random.default_rng(seed)
    popularity = np.floor(1e5 / np.arange(1, n_items + 1) ** 1.05).astype(np.float32)
    rng.shuffle(popularity)
    seen = rng.integers(0, n_items, size=(n_users, seen_per_user))
    seen.sort(axis=1)
    return SyntheticFeatures(
        user_ids=np.arange(1, n_users + 1, dtype=np.int64),
        seen_indptr=np.arange(0, n_users * seen_per_user + 1, seen_per_user, dtype=np.int64),
        seen_items=seen.reshape(-1).astype(np.int64),
        item_ids=np.arange(1, n_items + 1, dtype=np.int64), popularity=popularity,
        user_vectors=rng.standard_normal((n_users, dim), dtype=np.float32) / np.sqrt(dim),
        item_vectors=rng.standard_normal((n_items, dim), dtype=np.float32),
        item_bias=(rng.standard_normal(n_items, dtype=np.float32) * 0.1))


def synthetic_fused(n_items: int, n_users: int = 10_000, dim: int = 64, seed: int = 0,
                    half: bool = False):
    features = synthetic_features(n_items, n_users, dim, seed=seed)
    fused = FusedRetrieval(features.user_vectors, features.item_vectors, features.item_bias,
                           features.popularity, features.user_ids, features.seen_indptr,
                           features.seen_items, features.item_ids, half=half)
    return fused, features
