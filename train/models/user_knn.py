"""User-based k-nearest-neighbour rating prediction with mean-centred Pearson similarity.

    recdeploy train --model user_knn --dataset ml-1m --out runs/user_knn-ml1m
    recdeploy train --model user_knn --task rating_cv --dataset ml-100k --out runs/user_knn-cv

The classic neighbourhood formulas (Resnick et al. 1994; Herlocker et al. 1999):

    sim(u, v)  = sum_i (r_ui - mean_u)(r_vi - mean_v) / sqrt(sum_i (r_ui - mean_u)^2 sum_i (r_vi - mean_v)^2)
                 over the items i both rated; mean_u over all of u's training ratings;
                 times n_uv / (n_uv + shrink) for n_uv co-rated items (shrink 0: none)
    N_k(u; i)  = the k users most similar to u (similarity > 0) who rated i
    r^(u, i)   = mean_u + sum_{v in N_k} sim(u, v) (r_vi - mean_v) / sum_{v in N_k} |sim(u, v)|

A user with no such neighbour gets mean_u; a user with no training rating the global mean.
Fitted in closed form on the training ratings of the ``rating`` / ``rating_cv`` protocols.
Not served: a served catalogue scorer would need, per request, the user's similarity row
(U floats) and the top-k raters of every item, or a precomputed U x I prediction table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recdeploy.train.config import ClosedFormConfig, ConfigError
from recdeploy.train.models import register_model
from recdeploy.train.similarity import interaction_matrix, pearson_similarity


class NotServableError(ValueError):
    """A model that predicts ratings pairwise and has no catalogue scorer to export."""


@dataclass(frozen=True)
class UserKNNConfig(ClosedFormConfig):
    # k: the neighbours who rated the item that vote (Surprise's KNNWithMeans uses 40)
    neighbours: int = 40
    # Pearson's shrinkage toward 0 by co-rated items, n / (n + shrink); 0: the plain coefficient.
    # Chosen on validation RMSE (docs/results-notes.md)
    shrink: float = 10.0

    def __post_init__(self):
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be >= 1, got {self.neighbours}")
        if self.shrink < 0:
            raise ConfigError(f"shrink must be >= 0, got {self.shrink}")


class UserKNN(nn.Module):
    """The training ratings (buffers) and the settings; the similarity is computed on first use."""
    users: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor
    settings: torch.Tensor

    def __init__(self, n_users: int, n_items: int, n_ratings: int = 0):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.register_buffer("users", torch.zeros(n_ratings, dtype=torch.long))
        self.register_buffer("items", torch.zeros(n_ratings, dtype=torch.long))
        self.register_buffer("ratings", torch.zeros(n_ratings))
        self.register_buffer("settings", torch.tensor([40.0, 0.0]))     # neighbours, shrink
        self._state: _Neighbourhood | None = None

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, options: UserKNNConfig) -> UserKNN:
        self.users = torch.from_numpy(np.asarray(users, np.int64))
        self.items = torch.from_numpy(np.asarray(items, np.int64))
        self.ratings = torch.from_numpy(np.asarray(ratings, np.float32))
        self.settings = torch.tensor([float(options.neighbours), float(options.shrink)])
        self._state = None
        return self

    def model_args(self) -> dict:
        return {"n_users": self.n_users, "n_items": self.n_items, "n_ratings": int(len(self.ratings))}

    def neighbourhood(self) -> _Neighbourhood:
        if self._state is None:
            self._state = _Neighbourhood(self.users.numpy(), self.items.numpy(), self.ratings.numpy(),
                                         self.n_users, self.n_items, int(self.settings[0]), float(self.settings[1]))
        return self._state

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users, items (B) -> predicted ratings (B)"""
        return torch.from_numpy(self.neighbourhood().predict(users.numpy(), items.numpy()))

    def retrieval_scorer(self) -> nn.Module:
        raise NotServableError("user_knn predicts ratings pair by pair and has no catalogue scorer to "
                               "serve; export biased_mf or item_knn instead")

    def _load_from_state_dict(self, *args, **kwargs):
        self._state = None     # computed from the old buffers
        super()._load_from_state_dict(*args, **kwargs)


class _Neighbourhood:
    """The fitted arrays: user means, the user-user similarity and each item's raters."""

    def __init__(self, users, items, ratings, n_users: int, n_items: int, k: int, shrink: float):
        self.k = k
        self.global_mean = float(ratings.mean()) if len(ratings) else 0.0
        counts = np.bincount(users, minlength=n_users)
        sums = np.bincount(users, ratings, minlength=n_users)
        self.means = np.where(counts > 0, sums / np.maximum(counts, 1), self.global_mean).astype(np.float32)
        matrix = interaction_matrix(users, items, n_users, n_items, ratings)
        mask = interaction_matrix(users, items, n_users, n_items) > 0
        self.similarity = pearson_similarity(matrix, shrink, mask)
        order = np.argsort(items, kind="stable")
        self.item_indptr = np.searchsorted(items[order], np.arange(n_items + 1))
        self.raters = users[order]
        self.deviations = (ratings[order] - self.means[users[order]]).astype(np.float32)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        predicted = self.means[users].astype(np.float64)
        order = np.argsort(items, kind="stable")
        bounds = np.flatnonzero(np.r_[True, items[order][1:] != items[order][:-1], True])
        for start, stop in zip(bounds[:-1], bounds[1:]):
            rows = order[start:stop]
            item = items[rows[0]]
            raters = self.raters[self.item_indptr[item]:self.item_indptr[item + 1]]
            if len(raters) == 0:
                continue
            deviations = self.deviations[self.item_indptr[item]:self.item_indptr[item + 1]]
            sims = self.similarity[users[rows]][:, raters]             # B_i x R_i
            sims = np.where(sims > 0, sims, 0.0)
            if sims.shape[1] > self.k:                                  # the k most similar raters
                top = np.argpartition(-sims, self.k - 1, axis=1)[:, :self.k]
                sims, near = np.take_along_axis(sims, top, 1), deviations[top]
                vote = (sims * near).sum(1)
            else:
                vote = sims @ deviations
            weight = sims.sum(1)
            predicted[rows] += np.divide(vote, weight, out=np.zeros_like(vote), where=weight > 0)
        return predicted.astype(np.float32)


@register_model("user_knn", task="rating", also=("rating_cv",), config=UserKNNConfig)
def build_user_knn(n_users: int, n_items: int, n_ratings: int = 0) -> UserKNN:
    return UserKNN(n_users, n_items, n_ratings)
