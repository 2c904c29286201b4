"""Two-tower retrieval: a user tower and an item tower whose dot product (+ item bias) scores.

Trained with a full softmax over the catalogue (the catalogues here have 10^3-10^4 items, so
the exact softmax is cheaper than sampling and has no sampling bias). Serving precomputes the
item tower once: scoring a user is one gather and one B x D by D x I matrix product.
"""
from __future__ import annotations

from typing import Any

import numpy as np
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


class TowerScores(nn.Module):
    """score = user_tower(user) · item vector + item bias, over the whole catalogue; a
    subclass sets ``user_tower`` and an ``item_tower`` with ``catalogue() -> (I x D, I)``."""
    user_tower: nn.Module
    item_tower: ItemTower | FeatureItemTower

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """user indices (B) -> scores over the whole catalogue (B x I)"""
        vectors, bias = self.item_tower.catalogue()
        return self.user_tower(users) @ vectors.T + bias

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.score_all(users)

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """Every item's embedding (I x D), without the bias: what similar items compare."""
        return self.item_tower.catalogue()[0].detach().clone()


class TwoTower(TowerScores):
    user_tower: UserTower
    item_tower: ItemTower

    def __init__(self, n_users: int, n_items: int, dim: int = 64):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user_tower = UserTower(n_users, dim)
        self.item_tower = ItemTower(n_items, dim)

    def retrieval_scorer(self) -> nn.Module:
        """The served scorer (export/retrieval.py calls ``model.retrieval_scorer()``)."""
        return RetrievalScorer(self)


class DotProductScorer(nn.Module):
    """USER_INDEX (B x 1, int64) -> SCORES (B x I) from two constant tables: user U x D, item I x D.

    The generic served scorer: any model whose scores are a dot product of a per-user and a
    per-item vector (biases folded in as extra columns) exports through it.
    """
    item_table_t: torch.Tensor

    def __init__(self, user_table: torch.Tensor, item_table: torch.Tensor):
        super().__init__()
        self.user_embedding = nn.Embedding.from_pretrained(user_table.detach().clone())
        self.register_buffer("item_table_t", item_table.detach().T.contiguous())

    def forward(self, user_index: torch.Tensor) -> torch.Tensor:
        return self.user_embedding(user_index[:, 0]) @ self.item_table_t


class RetrievalScorer(DotProductScorer):
    """The served scorer: user index (B x 1, int64) -> scores over the catalogue (B x I).

    The item tower is frozen into a constant catalogue matrix at export time, and the item
    bias rides in the matrix product as one more column (a constant 1 on the user side): a
    call is one Gather and one MatMul, with no second pass over the B x I scores to add the
    bias. That pass is a fixed cost the embedding width does not shrink, so folding it is
    what lets a pruned (narrower) scorer run proportionally faster.
    """

    def __init__(self, model: TwoTower):
        vectors, bias = model.item_tower.catalogue()
        users = model.user_tower.embedding.weight
        super().__init__(torch.cat([users, torch.ones(len(users), 1)], 1),
                         torch.cat([vectors, bias[:, None]], 1))


@register_model("two_tower", task="retrieval_loo", also=("retrieval_random", "next_basket"))
def build_two_tower(n_users: int, n_items: int, dim: int = 64) -> TwoTower:
    return TwoTower(n_users, n_items, dim)


# ------------------------------------------------------------------ side features

YEAR_BASE, N_YEARS = 1900, 102   # release year -> 1 + year - 1900 (clipped), 0 = unknown


def encode_side_features(ds) -> dict[str, Any]:
    """Categorical codes for the towers: user age/gender/occupation, item genres and year.

    Codes start at 1; 0 means "unknown" (synthetic data has no features: all zeros).
    Returns user_age/user_gender/user_occupation int64 [U], item_genres float32 [I, G] and
    item_year int64 [I], plus the vocabulary sizes the model is built with.
    """
    import numpy as np

    def codes(name: str) -> tuple[np.ndarray, int]:
        values = ds.user_features.get(name)
        if values is None:
            return np.zeros(ds.n_users, dtype=np.int64), 1
        vocab, inverse = np.unique(values.astype(str), return_inverse=True)
        return inverse.astype(np.int64) + 1, len(vocab) + 1

    age, n_ages = codes("age")
    gender, n_genders = codes("gender")
    occupation, n_occupations = codes("occupation")
    genres = np.asarray(ds.item_features.get("genres", np.zeros((ds.n_items, 1))), dtype=np.float32)
    year = np.asarray(ds.item_features.get("year", np.zeros(ds.n_items)), dtype=np.int64)
    year = np.where(year > 0, np.clip(year - YEAR_BASE + 1, 1, N_YEARS - 1), 0)
    return {"user_age": age, "user_gender": gender, "user_occupation": occupation,
            "item_genres": genres, "item_year": year.astype(np.int64),
            "sizes": {"n_ages": n_ages, "n_genders": n_genders, "n_occupations": n_occupations,
                      "n_genres": genres.shape[1]}}


class FeatureUserTower(nn.Module):
    """user index (B) -> B x D: id + age + gender + occupation embeddings, summed, then a ReLU MLP."""
    age_code: torch.Tensor
    gender_code: torch.Tensor
    occupation_code: torch.Tensor

    def __init__(self, n_users: int, dim: int, n_ages: int, n_genders: int, n_occupations: int):
        super().__init__()
        self.ids = nn.Embedding(n_users, dim)
        self.age, self.gender = nn.Embedding(n_ages, dim), nn.Embedding(n_genders, dim)
        self.occupation = nn.Embedding(n_occupations, dim)
        for table in (self.ids, self.age, self.gender, self.occupation):
            nn.init.normal_(table.weight, std=0.05)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        # feature codes per user: buffers, so the checkpoint carries them and export needs no data
        for name in ("age_code", "gender_code", "occupation_code"):
            self.register_buffer(name, torch.zeros(n_users, dtype=torch.long))

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        x = (self.ids(users) + self.age(self.age_code[users]) + self.gender(self.gender_code[users])
             + self.occupation(self.occupation_code[users]))
        return x + self.mlp(x)


class FeatureItemTower(nn.Module):
    """item index (B) -> B x D: id embedding + genre bag (mean) + release-year embedding, plus a bias."""
    genres: torch.Tensor
    year_code: torch.Tensor

    def __init__(self, n_items: int, dim: int, n_genres: int):
        super().__init__()
        self.ids = nn.Embedding(n_items, dim)
        self.genre = nn.Linear(n_genres, dim, bias=False)
        self.year = nn.Embedding(N_YEARS, dim)
        self.bias = nn.Embedding(n_items, 1)
        for table in (self.ids, self.year):
            nn.init.normal_(table.weight, std=0.05)
        nn.init.zeros_(self.bias.weight)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.register_buffer("genres", torch.zeros(n_items, n_genres))
        self.register_buffer("year_code", torch.zeros(n_items, dtype=torch.long))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        genres = self.genres[items]
        genres = genres / genres.sum(-1, keepdim=True).clamp(min=1.0)
        x = self.ids(items) + self.genre(genres) + self.year(self.year_code[items])
        return x + self.mlp(x)

    def catalogue(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's vector (I x D) and bias (I)."""
        return self.forward(torch.arange(self.bias.num_embeddings)), self.bias.weight[:, 0]


class FeatureTwoTower(TowerScores):
    """Two towers over ids + side features; score = user · item + item bias (B x I)."""
    user_tower: FeatureUserTower
    item_tower: FeatureItemTower

    def __init__(self, n_users: int, n_items: int, dim: int = 64, n_ages: int = 1,
                 n_genders: int = 1, n_occupations: int = 1, n_genres: int = 1):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user_tower = FeatureUserTower(n_users, dim, n_ages, n_genders, n_occupations)
        self.item_tower = FeatureItemTower(n_items, dim, n_genres)

    def set_features(self, encoded: dict) -> FeatureTwoTower:
        """Copy encode_side_features(ds)'s codes into the buffers (before training)."""
        with torch.no_grad():
            self.user_tower.age_code.copy_(torch.from_numpy(encoded["user_age"]))
            self.user_tower.gender_code.copy_(torch.from_numpy(encoded["user_gender"]))
            self.user_tower.occupation_code.copy_(torch.from_numpy(encoded["user_occupation"]))
            self.item_tower.genres.copy_(torch.from_numpy(encoded["item_genres"]))
            self.item_tower.year_code.copy_(torch.from_numpy(encoded["item_year"]))
        return self

    def retrieval_scorer(self) -> nn.Module:
        """Every known user's tower output precomputed into a table, so serving stays
        USER_INDEX -> SCORES with no feature inputs."""
        with torch.no_grad():
            users = self.user_tower(torch.arange(self.n_users))
            vectors, bias = self.item_tower.catalogue()
        return DotProductScorer(torch.cat([users, torch.ones(self.n_users, 1)], 1),
                                torch.cat([vectors, bias[:, None]], 1))


# tuned on ML-1M, random 8:1:1: the generic defaults overfit early (docs/results-notes.md)
@register_model("two_tower_features", task="retrieval_random",
                defaults={"dim": 128, "lr": 0.001, "weight_decay": 0.0, "epochs": 30, "patience": 3})
def build_feature_two_tower(n_users: int, n_items: int, dim: int = 64, n_ages: int = 1,
                            n_genders: int = 1, n_occupations: int = 1,
                            n_genres: int = 1) -> FeatureTwoTower:
    return FeatureTwoTower(n_users, n_items, dim, n_ages, n_genders, n_occupations, n_genres)
