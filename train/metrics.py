"""Full-ranking metrics: the held-out item ranked against every item in the catalogue.

Items the user already interacted with (in the rows the model saw) are excluded before
ranking, the protocol of RecBole's full-sort evaluation. Sampled metrics (100 negatives)
are several times higher and are not what this module reports (Krichene & Rendle 2020).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankingMetrics:
    hr_at_10: float
    ndcg_at_10: float
    n_users: int

    def as_dict(self) -> dict[str, float]:
        return {"hr@10": round(self.hr_at_10, 4), "ndcg@10": round(self.ndcg_at_10, 4),
                "users": self.n_users}


def rank_of_target(scores: np.ndarray, targets: np.ndarray, exclude: list[np.ndarray]) -> np.ndarray:
    """0-based rank of each row's target among all items, excluded items removed.

    scores: B x I; targets: B; exclude: B arrays of item indices (the target is never excluded).
    Ties count against the target (a pessimistic rank), so a constant scorer earns nothing.
    """
    scores = scores.astype(np.float64, copy=True)
    for row, items in enumerate(exclude):
        scores[row, items] = -np.inf
    target_scores = scores[np.arange(len(targets)), targets]
    scores[np.arange(len(targets)), targets] = -np.inf
    return (scores >= target_scores[:, None]).sum(axis=1)


def hr_ndcg_at_k(ranks: np.ndarray, k: int = 10) -> tuple[float, float]:
    hits = ranks < k
    ndcg = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(hits.mean()) if len(ranks) else 0.0, float(ndcg.mean()) if len(ranks) else 0.0


def evaluate_full_ranking(score_users: Callable[[np.ndarray], np.ndarray], users: np.ndarray,
                          targets: np.ndarray, exclude: list[np.ndarray],
                          batch_size: int = 512) -> RankingMetrics:
    """score_users(user indices B) -> B x I scores; exclude[u] lists user u's known items."""
    batch_ranks: list[np.ndarray] = []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        scores = score_users(batch)
        excluded = [np.setdiff1d(exclude[u], [t]) for u, t in
                    zip(batch, targets[start:start + batch_size])]
        batch_ranks.append(rank_of_target(scores, targets[start:start + batch_size], excluded))
    ranks = np.concatenate(batch_ranks) if batch_ranks else np.zeros(0, dtype=np.int64)
    hr, ndcg = hr_ndcg_at_k(ranks, 10)
    return RankingMetrics(hr_at_10=hr, ndcg_at_10=ndcg, n_users=len(users))


def popularity_scorer(popularity: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The most-popular baseline: every user gets the item counts as scores."""
    return lambda users: np.broadcast_to(popularity, (len(users), len(popularity)))
