"""Next-basket scores from a user's own purchases, blended with their item-kNN neighbours.

    model = build_model("basket_knn", n_items=14190, neighbours=20, alpha=0.9, decay=0.8)
    model.fit(baskets, popularity)         # co-occurrence neighbours from training baskets
    scores = model(items, ages)            # history rows B x L (-1 padded) -> B x I

For a user with purchases (item i_r, basket age a_r) the recency-weighted frequency is
f(i) = sum over rows of item i of decay ** a_r, normalised to sum 1 (age 0: the latest
basket). The item-kNN part spreads f over each item's top-N neighbours by basket
co-occurrence (cosine: baskets holding both / sqrt(baskets holding each)), each item's
neighbour weights normalised to sum 1, so both parts are distributions over the catalogue:

    score = alpha * f + (1 - alpha) * f . P + pop_weight * popularity (normalised to sum 1)

alpha = 1 is the personal-frequency baseline (P-TopFreq) and alpha = 0 pure item-kNN;
the small popularity term fills the list past the user's own items. The whole formula is
gathers and scatter-adds, so it exports to ONNX as one graph whose only inputs are the
user's purchase rows: what the served feature store holds (repeats included).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recdeploy.train.config import ConfigError, ModelConfig
from recdeploy.train.models import register_model

TUNE = -1.0   # alpha / decay / pop_weight: chosen on validation from the task's grid


@dataclass(frozen=True)
class BasketKNNConfig(ModelConfig):
    """basket_knn's own settings. A value of -1 (the default) is chosen on the validation
    basket from the next_basket task's grid; any other value is used as given."""
    neighbours: int = -1
    alpha: float = TUNE
    decay: float = TUNE

    def __post_init__(self):
        if self.neighbours != -1 and self.neighbours < 1:
            raise ConfigError(f"neighbours must be >= 1 (or -1: tuned), got {self.neighbours}")
        if self.alpha != TUNE and not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1] (or -1: tuned), got {self.alpha}")
        if self.decay != TUNE and not 0 < self.decay <= 1:
            raise ConfigError(f"decay must be in (0, 1] (or -1: tuned), got {self.decay}")


def cooccurrence_neighbours(baskets: list[np.ndarray], n_items: int,
                            neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (items int64 [I, N], weights float32 [I, N]): each item's N most similar items by
    basket cosine, weights normalised to sum 1 per row; rows with fewer neighbours pad with
    item 0 at weight 0. Ties: the lower item index first."""
    firsts, seconds, counts = [], [], np.zeros(n_items, dtype=np.int64)
    for basket in baskets:
        basket = np.unique(basket)
        counts[basket] += 1
        if len(basket) > 1:
            pairs = np.stack(np.meshgrid(basket, basket, indexing="ij"), -1).reshape(-1, 2)
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
            firsts.append(pairs[:, 0])
            seconds.append(pairs[:, 1])
    items = np.zeros((n_items, neighbours), dtype=np.int64)
    weights = np.zeros((n_items, neighbours), dtype=np.float32)
    if not firsts:
        return items, weights
    codes, together = np.unique(np.concatenate(firsts) * n_items + np.concatenate(seconds),
                                return_counts=True)
    first, second = codes // n_items, codes % n_items
    cosine = together / np.sqrt(counts[first] * counts[second])
    order = np.lexsort((second, -cosine, first))
    first, second, cosine = first[order], second[order], cosine[order]
    rank = np.arange(len(first)) - np.searchsorted(first, first)
    keep = rank < neighbours
    items[first[keep], rank[keep]] = second[keep]
    weights[first[keep], rank[keep]] = cosine[keep]
    weights /= np.maximum(weights.sum(1, keepdims=True), 1e-12)
    return items, weights


class BasketKNN(nn.Module):
    neighbour_items: torch.Tensor
    neighbour_weights: torch.Tensor
    popularity: torch.Tensor

    def __init__(self, n_items: int, neighbours: int = 20, alpha: float = 0.9, decay: float = 0.8,
                 pop_weight: float = 1e-4):
        super().__init__()
        self.n_items, self.neighbours = n_items, neighbours
        self.alpha, self.decay, self.pop_weight = float(alpha), float(decay), float(pop_weight)
        self.register_buffer("neighbour_items", torch.zeros(n_items, neighbours, dtype=torch.long))
        self.register_buffer("neighbour_weights", torch.zeros(n_items, neighbours))
        self.register_buffer("popularity", torch.zeros(n_items))

    def fit(self, baskets: list[np.ndarray], popularity: np.ndarray) -> BasketKNN:
        """Neighbours from training baskets; popularity: purchase counts [I]."""
        items, weights = cooccurrence_neighbours(baskets, self.n_items, self.neighbours)
        popularity = np.asarray(popularity, dtype=np.float64)
        with torch.no_grad():
            self.neighbour_items.copy_(torch.from_numpy(items))
            self.neighbour_weights.copy_(torch.from_numpy(weights))
            self.popularity.copy_(torch.from_numpy(popularity / max(popularity.sum(), 1e-12)).float())
        return self

    def parts(self, items: torch.Tensor, ages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """history rows (items, ages: B x L, -1 padded) -> (own frequency, neighbours' share),
        both B x I distributions (all zero for an empty history)."""
        real = items >= 0
        index = items.clamp(min=0)
        weight = torch.where(real, self.decay ** ages.clamp(min=0).float(), torch.zeros((), dtype=torch.float32))
        weight = weight / weight.sum(1, keepdim=True).clamp(min=1e-12)
        empty = torch.zeros(items.shape[0], self.n_items, dtype=weight.dtype, device=weight.device)
        own = empty.scatter_add(1, index, weight)
        spread = (weight.unsqueeze(-1) * self.neighbour_weights[index]).flatten(1)
        near = empty.scatter_add(1, self.neighbour_items[index].flatten(1), spread)
        return own, near

    def forward(self, items: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        """items, ages int64 B x L (-1 padded) -> scores B x I."""
        own, near = self.parts(items, ages)
        return self.alpha * own + (1 - self.alpha) * near + self.pop_weight * self.popularity


@register_model("basket_knn", task="next_basket", config=BasketKNNConfig)
def build_basket_knn(n_items: int, neighbours: int = 20, alpha: float = 0.9, decay: float = 0.8,
                     pop_weight: float = 1e-4) -> BasketKNN:
    return BasketKNN(n_items, neighbours, alpha, decay, pop_weight)
