"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over a user's item history.

    model = build_model("sasrec", n_items=3123, dim=64, max_len=200, layers=2, heads=2)
    scores = model(history)          # history int64 B x L, right-aligned, 0-padded -> B x I

Tokens: 0 is padding, internal item i is token i + 1. A history is right-aligned (its most
recent item sits in the last column), so position L-1 is always "now", as in the paper.

Padding never leaks into real positions: a real position attends only to real positions at
or before it; a padded position attends only to itself and gets no positional embedding, so
every padded position holds the same vector. That vector is the answer for an empty history
(training teaches it the distribution of users' first items), so an empty history has a
well-defined, finite output.

Scores are the final hidden state of the last position dotted with an output vector per
item: the input item embedding itself (``output_embedding="shared"``, the paper's default)
or a table of its own (``"separate"``, the paper's "unshared IE" ablation). Training uses the
full softmax over the catalogue at every position (see ``recdeploy.train.tasks.sequential``).

"shared" stays the registered default because serving masks the history, and the shared
table ranks the unseen items better; "separate" puts fewer already-seen items in an unmasked
top 10 (docs/results-notes.md has the measurements).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from recdeploy.train.config import ConfigError, ModelConfig
from recdeploy.train.models import register_model

PAD = 0
OUTPUT_EMBEDDINGS = ("shared", "separate")


@dataclass(frozen=True)
class SASRecConfig(ModelConfig):
    """SASRec's own settings: history window, transformer blocks, heads, dropout, output table."""
    max_len: int = 200
    layers: int = 2
    heads: int = 2
    dropout: float = 0.1
    # score with the input item embedding ("shared", the paper's default) or with an output
    # table of its own ("separate", the paper's unshared-IE ablation); see the module docstring
    output_embedding: str = "shared"

    def __post_init__(self):
        if self.max_len < 1 or self.layers < 1 or self.heads < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"need max_len, layers, heads >= 1 and 0 <= dropout < 1, got "
                              f"{self.max_len}, {self.layers}, {self.heads}, {self.dropout}")
        if self.output_embedding not in OUTPUT_EMBEDDINGS:
            raise ConfigError(f"unknown output_embedding {self.output_embedding!r}; valid: "
                              f"{', '.join(OUTPUT_EMBEDDINGS)}")


def attention_mask(tokens: torch.Tensor) -> torch.Tensor:
    """tokens B x L -> bool B x L x L, True where query q may attend to key k.

    Causal (k <= q), real keys only, and every position may attend to itself, so a padded
    query (or an empty history) never meets an all-masked row (which would give NaN).
    """
    # index comparisons rather than eye/tril: ONNX Runtime lacks a bool EyeLike kernel
    index = torch.arange(tokens.shape[1], device=tokens.device)
    query, key = index[:, None], index[None, :]
    real_key = (tokens != PAD)[:, None, :]
    return ((key <= query) & real_key) | (key == query)


def byte_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout`` with the keep-mask cut from random bytes (one byte per element, ``p``
    rounded to 1/256). On CPU, torch's ``bernoulli_`` draws a float per element, a large share
    of a SASRec training step; this draws a quarter as many words. Elsewhere (CUDA) and in
    eval mode it is plain ``F.dropout``."""
    if not training or p <= 0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    cut = round(p * 256)
    # the full int32 range, so every byte of a word is uniform (random_() alone leaves the top bit 0)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int32).random_(-2 ** 31, 2 ** 31)
    keep = words.view(torch.uint8)[:x.numel()].view(x.shape) >= cut
    return torch.where(keep, x * (256 / (256 - cut)), 0.0)


class ByteDropout(nn.Module):
    """nn.Dropout through ``byte_dropout``."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return byte_dropout(x, self.p, self.training)


class EmbeddingArch(nn.Module):
    """tokens B x L -> B x L x D: item embedding (row 0 = padding, zero) + learned position
    embedding on real tokens only, layer-normed."""

    def __init__(self, n_items: int, dim: int, max_len: int, dropout: float):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = ByteDropout(dropout)
        nn.init.normal_(self.item.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        with torch.no_grad():
            self.item.weight[PAD].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        real = (tokens != PAD).unsqueeze(-1).to(self.position.weight.dtype)
        # right-aligned: the last column uses the last position row whatever L is
        positions = self.position.weight[self.position.num_embeddings - length:]
        x = self.item(tokens) + positions.unsqueeze(0) * real
        return self.dropout(self.norm(x))


class SelfAttentionBlock(nn.Module):
    """B x L x D -> B x L x D: pre-norm causal multi-head attention + position-wise FFN."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), ByteDropout(dropout),
                                 nn.Linear(4 * dim, dim))
        self.dropout = ByteDropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape[0], x.shape[1], self.dim
        q, k, v = self.qkv(self.norm1(x)).split(dim, dim=2)
        q, k, v = (t.reshape(batch, length, self.heads, dim // self.heads).transpose(1, 2)
                   for t in (q, k, v))
        # explicit attention (not F.scaled_dot_product_attention): exports to plain ONNX ops
        logits = (q @ k.transpose(-2, -1)) * (dim // self.heads) ** -0.5
        logits = logits.masked_fill(~mask[:, None], float("-inf"))
        weights = byte_dropout(logits.softmax(dim=-1), self.attn_dropout, self.training)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, dim)
        x = x + self.dropout(self.proj(attended))
        return x + self.dropout(self.ffn(self.norm2(x)))


class SASRec(nn.Module):
    def __init__(self, n_items: int, dim: int = 64, max_len: int = 200, layers: int = 2,
                 heads: int = 2, dropout: float = 0.1, output_embedding: str = "shared"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        if output_embedding not in OUTPUT_EMBEDDINGS:
            raise ValueError(f"unknown output_embedding {output_embedding!r}; valid: "
                             f"{', '.join(OUTPUT_EMBEDDINGS)}")
        self.n_items, self.max_len = n_items, max_len
        self.embedding = EmbeddingArch(n_items, dim, max_len, dropout)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        # I x D output vectors of their own, or None: the input embedding serves (shared)
        self.output_items = (nn.Parameter(torch.randn(n_items, dim) * 0.02)
                             if output_embedding == "separate" else None)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens B x L (L <= max_len, right-aligned, 0-padded) -> hidden states B x L x D."""
        mask = attention_mask(tokens)
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def item_vectors(self) -> torch.Tensor:
        """I x D: the output vector of every real item (shared: the input embedding, token 0 excluded)."""
        if self.output_items is not None:
            return self.output_items
        return self.embedding.item.weight[1:]

    def fit_history(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x L -> B x max_len: keep the last max_len columns, or left-pad with 0.

        Pad-then-slice rather than a branch on L, so the exported ONNX graph takes any L."""
        padding = torch.zeros(tokens.shape[0], self.max_len, dtype=tokens.dtype, device=tokens.device)
        return torch.cat([padding, tokens], dim=1)[:, -self.max_len:]

    def next_item_scores(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens B x L (L <= max_len, right-aligned) -> B x I: the last position's hidden
        state against every item. A caller may cut padding columns away first."""
        return self.encode(tokens)[:, -1] @ self.item_vectors().T

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """history B x L tokens (any L >= 1) -> next-item scores B x I over internal items."""
        return self.next_item_scores(self.fit_history(history))


# a fixed budget of cosine-annealed epochs at a small batch: more steps in the same time
@register_model("sasrec", task="sequential", also=("next_basket",), config=SASRecConfig,
                defaults={"lr": 5e-3, "batch_size": 32, "weight_decay": 0.0, "epochs": 15,
                          "lr_schedule": "cosine"})
def build_sasrec(n_items: int, dim: int = 64, max_len: int = 200, layers: int = 2, heads: int = 2,
                 dropout: float = 0.1, output_embedding: str = "shared") -> SASRec:
    # checkpoints written before the option have no "output_embedding": they rebuild shared
    return SASRec(n_items, dim, max_len, layers, heads, dropout, output_embedding)
