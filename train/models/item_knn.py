"""Item-based k-nearest-neighbour recommendation (Sarwar et al. 2001; RecBole's ItemKNN).

    recdeploy train --model item_knn --dataset ml-1m --out runs/item_knn-ml1m

Fitted in closed form on the training interactions (binary): the cosine between items over
the users who chose them, s_ij = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink), kept for each
item j's ``neighbours`` most similar items i. A user's score for item j sums the similarities
of j's neighbours the user chose: score(u, j) = sum over i in N(j) of r_ui s_ij.

For the retrieval scenario that is a dot product, so it exports as "USER_INDEX -> SCORES"
through ``retrieval_scorer()``: the user's interaction row (U x I) times the neighbour
matrix (I x I). Both are dense tables in the ONNX graph, I x (U + I) floats.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recdeploy.train.config import ClosedFormConfig, ConfigError
from recdeploy.train.models import register_model
from recdeploy.train.models.two_tower import DotProductScorer
from recdeploy.train.similarity import cosine_similarity, densify, interaction_matrix, top_neighbours


@dataclass(frozen=True)
class ItemKNNConfig(ClosedFormConfig):
    # k, the neighbours kept per item, and the cosine's shrinkage: RecBole's best on ML-1M
    # (its hyper-parameter search over k 10..400, shrink 0..2)
    neighbours: int = 250
    shrink: float = 1.2

    def __post_init__(self):
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be >= 1, got {self.neighbours}")
        if self.shrink < 0:
            raise ConfigError(f"shrink must be >= 0, got {self.shrink}")


class ItemKNN(nn.Module):
    """Neighbour lists (I x N) and the users' training interactions (CSR), as buffers."""
    neighbour_index: torch.Tensor
    neighbour_scores: torch.Tensor
    history_indptr: torch.Tensor
    history_items: torch.Tensor

    def __init__(self, n_users: int, n_items: int, neighbours: int = 1, n_history: int = 0):
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.register_buffer("neighbour_index", torch.full((n_items, neighbours), -1, dtype=torch.long))
        self.register_buffer("neighbour_scores", torch.zeros(n_items, neighbours))
        self.register_buffer("history_indptr", torch.zeros(n_users + 1, dtype=torch.long))
        self.register_buffer("history_items", torch.zeros(n_history, dtype=torch.long))
        self._weights: torch.Tensor | None = None     # dense I x I, built on first use

    def fit(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, options: ItemKNNConfig) -> ItemKNN:
        """Training pairs (internal indices; ratings unused: implicit feedback)."""
        matrix = interaction_matrix(users, items, self.n_users, self.n_items)
        similarity = cosine_similarity(matrix, options.shrink)
        index, scores = top_neighbours(similarity, min(options.neighbours, self.n_items - 1))
        rows, cols = np.nonzero(matrix)     # row-major: grouped by user, items sorted
        self.neighbour_index = torch.from_numpy(index)
        self.neighbour_scores = torch.from_numpy(np.where(index >= 0, scores, 0.0).astype(np.float32))
        self.history_indptr = torch.from_numpy(np.searchsorted(rows, np.arange(self.n_users + 1)).astype(np.int64))
        self.history_items = torch.from_numpy(cols.astype(np.int64))
        self._weights = None
        return self

    def model_args(self) -> dict:
        return {"n_users": self.n_users, "n_items": self.n_items,
                "neighbours": int(self.neighbour_index.shape[1]), "n_history": int(len(self.history_items))}

    def neighbour_matrix(self) -> torch.Tensor:
        """W (I x I): W[j, i] = s_ij where i is one of j's neighbours, else 0."""
        if self._weights is None:
            self._weights = torch.from_numpy(densify(self.neighbour_index.numpy(), self.neighbour_scores.numpy(),
                                                     self.n_items))
        return self._weights

    def interactions(self, users: torch.Tensor) -> torch.Tensor:
        """The users' training interactions as dense rows (B x I)."""
        indptr, items = self.history_indptr, self.history_items
        rows = torch.zeros(len(users), self.n_items)
        for row, user in enumerate(users.tolist()):
            rows[row, items[indptr[user]:indptr[user + 1]]] = 1.0
        return rows

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """user indices (B) -> scores over the catalogue (B x I)"""
        return self.interactions(users) @ self.neighbour_matrix().T

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.score_all(users)

    def retrieval_scorer(self) -> nn.Module:
        """USER_INDEX (B x 1) -> SCORES (B x I): every user's interaction row times W^T."""
        return DotProductScorer(self.interactions(torch.arange(self.n_users)), self.neighbour_matrix())

    def _load_from_state_dict(self, *args, **kwargs):
        self._weights = None     # the cache belongs to the old buffers
        super()._load_from_state_dict(*args, **kwargs)


@register_model("item_knn", task="retrieval_random", config=ItemKNNConfig)
def build_item_knn(n_users: int, n_items: int, neighbours: int = 1, n_history: int = 0) -> ItemKNN:
    return ItemKNN(n_users, n_items, neighbours, n_history)
