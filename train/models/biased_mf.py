"""Biased matrix factorisation: r̂(u, i) = μ + b_u + b_i + p_u · q_i (Koren, Bell, Volinsky 2009).

    recdeploy train --model biased_mf --dataset ml-1m --out runs/biased_mf-ml1m

Trained on explicit ratings by the ``rating`` task (RMSE). For the retrieval scenario the
same formula scores the whole catalogue, so it exports as "USER_INDEX -> SCORES" through
``retrieval_scorer()``: one gather and one B x (D+2) by (D+2) x I product.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recdeploy.train.config import ConfigError, ModelConfig
from recdeploy.train.models import register_model
from recdeploy.train.models.two_tower import DotProductScorer


@dataclass(frozen=True)
class BiasedMFConfig(ModelConfig):
    """Biased MF's own setting (read by the rating tasks)."""
    # L2 per example on the factors and biases a batch touches (SGD-style, as Surprise's SVD)
    reg: float = 0.05

    def __post_init__(self):
        if self.reg < 0:
            raise ConfigError(f"reg must be >= 0, got {self.reg}")


class BiasedMF(nn.Module):
    global_mean: torch.Tensor

    def __init__(self, n_users: int, n_items: int, dim: int = 64, global_mean: float = 0.0):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user_factors = nn.Embedding(n_users, dim)
        self.item_factors = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        # the training mean, fixed before training: the biases then only learn deviations
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        for table in (self.user_factors, self.item_factors):
            nn.init.normal_(table.weight, std=0.01)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users, items (B) -> predicted ratings (B)"""
        dot = (self.user_factors(users) * self.item_factors(items)).sum(-1)
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + dot

    def l2(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per-example squared norm of the parameters a batch touches (B): the SGD-style penalty."""
        return (self.user_factors(users).pow(2).sum(-1) + self.item_factors(items).pow(2).sum(-1)
                + self.user_bias(users)[:, 0].pow(2) + self.item_bias(items)[:, 0].pow(2))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """user indices (B) -> predicted ratings for every item (B x I)"""
        return (self.global_mean + self.user_bias(users) + self.item_bias.weight[:, 0]
                + self.user_factors(users) @ self.item_factors.weight.T)

    def item_vectors(self) -> torch.Tensor:
        """Every item's factor vector (I x D): what similar items compare."""
        return self.item_factors.weight.detach().clone()

    def retrieval_scorer(self) -> nn.Module:
        """USER_INDEX (B x 1) -> SCORES (B x I), the biases folded into two extra columns."""
        ones_u = torch.ones(self.n_users, 1)
        ones_i = torch.ones(self.n_items, 1)
        users = torch.cat([self.user_factors.weight, self.user_bias.weight + self.global_mean, ones_u], 1)
        items = torch.cat([self.item_factors.weight, ones_i, self.item_bias.weight], 1)
        return DotProductScorer(users.detach(), items.detach())


@register_model("biased_mf", task="rating", also=("rating_cv",), config=BiasedMFConfig)
def build_biased_mf(n_users: int, n_items: int, dim: int = 64, global_mean: float = 0.0) -> BiasedMF:
    return BiasedMF(n_users, n_items, dim, global_mean)
