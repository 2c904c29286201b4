"""NeuMF (He et al., WWW 2017): a GMF branch and an MLP branch over user/item ids, one logit.

    recdeploy train --model neumf --dataset ml-1m --out runs/neumf-ml1m

Trained on implicit feedback by the ``retrieval_random`` task: optionally the GMF branch is
pretrained first with the exact softmax (``gmf_scores``: one matrix product over the catalogue,
as cheap as a two-tower), as the NeuMF paper pretrains its branches; then both branches
train jointly on a sampled softmax (or the paper's BCE with sampled negatives).
Scoring the whole catalogue splits the MLP's first layer into a user part and an item part
(W [u; i] = W_u u + W_i i), so the item part is computed once per catalogue, not per pair;
``retrieval_scorer()`` freezes that into the served "USER_INDEX -> SCORES" module.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recdeploy.train.config import ConfigError, ModelConfig
from recdeploy.train.models import register_model

LOSSES = ("bce", "sampled_softmax")


@dataclass(frozen=True)
class NeuMFConfig(ModelConfig):
    """NeuMF's own settings (read by the retrieval_random task); the defaults are the paper's
    recipe, the registered ones below are this project's."""
    # "bce" (the paper's pointwise loss with ``negatives`` uniform negatives per positive) or
    # "sampled_softmax" (softmax over the positive and ``negatives`` uniform items shared by
    # the batch)
    loss: str = "bce"
    negatives: int = 4
    # L2 per example on the embedding rows a batch touches (SGD-style)
    reg: float = 0.05
    # epochs of GMF-branch pretraining on the exact softmax before the joint training (the
    # paper pretrains its branches); early-stopped like the rest
    pretrain_epochs: int = 0
    # the MLP branch's embedding width (0: the same as dim); its layers run per pair
    mlp_dim: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.negatives < 1:
            raise ConfigError(f"negatives must be >= 1, got {self.negatives}")
        if self.reg < 0:
            raise ConfigError(f"reg must be >= 0, got {self.reg}")
        if self.pretrain_epochs < 0 or self.mlp_dim < 0:
            raise ConfigError(f"pretrain_epochs and mlp_dim must be >= 0, got "
                              f"{self.pretrain_epochs}, {self.mlp_dim}")


class NeuMF(nn.Module):
    """GMF: p_u * q_i (B x D). MLP: [m_u; n_i] (B x 2M) -> 2M -> M -> M/2. Output: [GMF; MLP] -> 1.

    M (``mlp_dim``, default D) sets the MLP branch's cost: its layers run once per (user, item)
    pair, so a whole-catalogue score costs B x I x ~2.5 M^2 multiply-adds.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64, mlp_dim: int | None = None):
        super().__init__()
        mlp_dim = mlp_dim or dim
        self.n_users, self.n_items, self.dim, self.mlp_dim = n_users, n_items, dim, mlp_dim
        self.gmf_user, self.gmf_item = nn.Embedding(n_users, dim), nn.Embedding(n_items, dim)
        self.mlp_user, self.mlp_item = nn.Embedding(n_users, mlp_dim), nn.Embedding(n_items, mlp_dim)
        self.first = nn.Linear(2 * mlp_dim, 2 * mlp_dim)
        self.rest = nn.Sequential(nn.ReLU(), nn.Linear(2 * mlp_dim, mlp_dim), nn.ReLU(),
                                  nn.Linear(mlp_dim, mlp_dim // 2), nn.ReLU())
        self.out = nn.Linear(dim + mlp_dim // 2, 1)
        for table in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(table.weight, std=0.01)

    def _combine(self, gmf: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([gmf, self.rest(first)], -1))[..., 0]

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """users, items (B) -> logits (B)"""
        gmf = self.gmf_user(users) * self.gmf_item(items)
        return self._combine(gmf, self.first(torch.cat([self.mlp_user(users), self.mlp_item(items)], -1)))

    def l2(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per-example squared norm of the embedding rows a batch touches (B)."""
        return sum(t(x).pow(2).sum(-1) for t, x in ((self.gmf_user, users), (self.gmf_item, items),
                                                     (self.mlp_user, users), (self.mlp_item, items)))

    def gmf_scores(self, users: torch.Tensor) -> torch.Tensor:
        """user indices (B) -> the GMF branch's logits for every item (B x I): the output layer
        with the MLP's share left out, p_u . (q_i * h_gmf) + b. One matrix product, so the
        branch pretrains on the exact softmax."""
        w_gmf = self.out.weight[0, :self.dim]
        return (self.gmf_user(users) * w_gmf) @ self.gmf_item.weight.T + self.out.bias

    def gmf_parameters(self) -> list[torch.Tensor]:
        return [self.gmf_user.weight, self.gmf_item.weight, self.out.weight, self.out.bias]

    def _split_first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first MLP layer's user part (M x 2M) and the catalogue's item part (I x 2M, bias in)."""
        w_user, w_item = self.first.weight[:, :self.mlp_dim], self.first.weight[:, self.mlp_dim:]
        return w_user.T, self.mlp_item.weight @ w_item.T + self.first.bias

    def score_items(self, users: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """user indices (B), item indices (N; None = the whole catalogue) -> logits B x N.

        The first MLP layer is applied once per user and once per item, not per pair."""
        w_user, w_item = self.first.weight[:, :self.mlp_dim], self.first.weight[:, self.mlp_dim:]
        item_mlp = self.mlp_item.weight if items is None else self.mlp_item(items)
        item_gmf = self.gmf_item.weight if items is None else self.gmf_item(items)
        first = (self.mlp_user(users) @ w_user.T)[:, None, :] + (item_mlp @ w_item.T + self.first.bias)[None]
        gmf = self.gmf_user(users)[:, None, :] * item_gmf[None]                  # B x N x D
        return self._combine(gmf, first)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """user indices (B) -> logits for every item (B x I)"""
        return self.score_items(users)

    def retrieval_scorer(self) -> nn.Module:
        return NeuMFScorer(self)


class NeuMFScorer(nn.Module):
    """USER_INDEX (B x 1, int64) -> SCORES (B x I): NeuMF with the item side precomputed.

    Memory is B x I x 2M floats per request (64 users x 3,883 items x 128 = 127 MB), so keep the
    served max batch moderate for large catalogues.
    """
    item_first: torch.Tensor
    item_gmf_t: torch.Tensor
    w_mlp: torch.Tensor
    b_out: torch.Tensor

    def __init__(self, model: NeuMF):
        super().__init__()
        with torch.no_grad():
            w_user, item_part = model._split_first()
            # the user part of the first layer, precomputed per user: U x 2D
            self.user_first = nn.Embedding.from_pretrained((model.mlp_user.weight @ w_user).clone())
            self.gmf_user = nn.Embedding.from_pretrained(model.gmf_user.weight.clone())
            self.register_buffer("item_first", item_part.clone())
            # GMF then the output layer's GMF weights: (p_u * q_i) . w = p_u . (q_i * w)
            w_out = model.out.weight[0]
            self.register_buffer("item_gmf_t", (model.gmf_item.weight * w_out[:model.dim]).T.contiguous())
            self.register_buffer("w_mlp", w_out[model.dim:].clone())
            self.register_buffer("b_out", model.out.bias.clone())
        self.rest = model.rest

    def forward(self, user_index: torch.Tensor) -> torch.Tensor:
        users = user_index[:, 0]
        first = self.user_first(users)[:, None, :] + self.item_first[None]
        return self.gmf_user(users) @ self.item_gmf_t + self.rest(first) @ self.w_mlp + self.b_out


# the GMF branch pretrained on the exact softmax, then a short joint phase on a sampled
# softmax with a narrow MLP branch that early stopping keeps only if it beats the pretrained
# model on validation (docs/results-notes.md: what each recipe measured)
@register_model("neumf", task="retrieval_random", config=NeuMFConfig,
                defaults={"dim": 64, "mlp_dim": 16, "pretrain_epochs": 20, "epochs": 8, "patience": 1,
                          "lr": 0.001, "loss": "sampled_softmax", "negatives": 256, "reg": 0.0})
def build_neumf(n_users: int, n_items: int, dim: int = 64, mlp_dim: int | None = None) -> NeuMF:
    return NeuMF(n_users, n_items, dim, mlp_dim)
