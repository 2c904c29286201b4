"""Two-tower retrieval: a user tower and an item tower whose dot product (+ item bias) scores.

Trained with a full softmax over the catalogue (the catalogues here have 10^3-10^4 items, so
the exact softmax is cheaper than sampling and has no sampling bias). Serving precomputes the
item tower once: scoring a user is one gather and one B x D by D x I matrix product.
"""
from __future__ import annotations

import torch
from torch import nn

from recdeploy.train.models import register_model


class UserTower(nn.Module):
    """user index (B) -> B x D"""

    def __init__(self, n_users: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_users, dim)
        nn.init.normal_(self.embedding.weight, std=0.05)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.embedding(users)


class ItemTower(nn.Module):
    """item index (B) -> B x D, plus a per-item bias that absorbs popularity"""

    def __init__(self, n_items: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_items, dim)
        self.bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.embedding.weight, std=0.05)
        nn.init.zeros_(self.bias.weight)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.embedding(items)

    def catalogue(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's vector (I x D) and bias (I)."""
        return self.embedding.weight, self.bias.weight.squeeze(1)


class TwoTower(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int = 64):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user_tower = UserTower(n_users, dim)
        self.item_tower = ItemTower(n_items, dim)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """user indices (B) -> scores over the whole catalogue (B x I)"""
        vectors, bias = self.item_tower.catalogue()
        return self.user_tower(users) @ vectors.T + bias

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.score_all(users)


class RetrievalScorer(nn.Module):
    """The served scorer: user index (B x 1, int64) -> scores over the catalogue (B x I).

    The item tower is frozen into a constant catalogue matrix at export time.
    """

    def __init__(self, model: TwoTower):
        super().__init__()
        vectors, bias = model.item_tower.catalogue()
        self.user_embedding = nn.Embedding.from_pretrained(model.user_tower.embedding.weight.detach())
        self.register_buffer("item_vectors_t", vectors.detach().T.contiguous())
        self.register_buffer("item_bias", bias.detach().clone())

    def forward(self, user_index: torch.Tensor) -> torch.Tensor:
        users = self.user_embedding(user_index[:, 0])
        return users @ self.item_vectors_t + self.item_bias


@register_model("two_tower", task="retrieval_loo")
def build_two_tower(n_users: int, n_items: int, dim: int = 64) -> TwoTower:
    return TwoTower(n_users, n_items, dim)
