"""DCN-v2 (Wang et al., WWW 2021): a CTR ranker, cross network stacked under a deep network.

    from recdeploy.train.models import build_model
    model = build_model("dcn_v2", n_users=6040, n_items=3883, n_genres=18,
                        vocab_sizes={"gender": 3, "age": 8, "occupation": 22, "zip": 700})
    logits = model(sparse, genres, dense)        # [..., S] int64, [..., G], [..., 3] -> [...]

Parts, named after torchrec's DLRM: SparseArch (one embedding per sparse field plus a
masked mean over genre embeddings), DenseArch (dense features -> one more field), CrossNet
(x_{l+1} = x0 * (W x_l + b) + x_l), DeepArch (MLP) and OverArch (the logit).

The model also carries ``FeatureTables``: the per-user and per-item feature rows it was
trained with (row 0 of each is the reserved "unknown" row). Training gathers from them by
internal index; export writes them beside the numpy ``ranking_features`` model, so serving
and training read the very same values.
"""
from __future__ import annotations

import torch
from torch import nn

from recdeploy.train.models import register_model

# order of the columns of the SPARSE tensor; every value is a per-field vocabulary index
# and index 0 means "unknown" in every field
USER_SPARSE = ("user", "gender", "age", "occupation", "zip")
ITEM_SPARSE = ("item",)
SPARSE_FIELDS = USER_SPARSE + ITEM_SPARSE
USER_DENSE = ("user_activity",)
ITEM_DENSE = ("year", "item_activity")
DENSE_FIELDS = USER_DENSE + ITEM_DENSE


class FeatureTables(nn.Module):
    """Feature rows per user and per item, row 0 reserved for unknown ids.

    user_sparse (U+1) x 5, user_dense (U+1) x 1, item_sparse (I+1) x 1,
    item_genres (I+1) x G (multi-hot), item_dense (I+1) x 2.
    """
    user_sparse: torch.Tensor
    user_dense: torch.Tensor
    item_sparse: torch.Tensor
    item_genres: torch.Tensor
    item_dense: torch.Tensor

    def __init__(self, n_users: int, n_items: int, n_genres: int):
        super().__init__()
        self.register_buffer("user_sparse", torch.zeros(n_users + 1, len(USER_SPARSE), dtype=torch.long))
        self.register_buffer("user_dense", torch.zeros(n_users + 1, len(USER_DENSE)))
        self.register_buffer("item_sparse", torch.zeros(n_items + 1, len(ITEM_SPARSE), dtype=torch.long))
        self.register_buffer("item_genres", torch.zeros(n_items + 1, n_genres))
        self.register_buffer("item_dense", torch.zeros(n_items + 1, len(ITEM_DENSE)))

    def gather(self, user_rows: torch.Tensor, item_rows: torch.Tensor):
        """user_rows, item_rows (B) table rows (internal index + 1; 0 = unknown) ->
        sparse B x S, genres B x G, dense B x 3."""
        sparse = torch.cat([self.user_sparse[user_rows], self.item_sparse[item_rows]], dim=1)
        dense = torch.cat([self.user_dense[user_rows], self.item_dense[item_rows]], dim=1)
        return sparse, self.item_genres[item_rows], dense


class SparseArch(nn.Module):
    """sparse B x S (per-field indices) + genres B x G (multi-hot) -> B x (S+1) x D

    One table holds every field's rows (field offsets added here); genres are the mean of
    the item's genre embeddings (zero for an item with none).
    """
    offsets: torch.Tensor

    def __init__(self, vocab: tuple[int, ...], n_genres: int, dim: int):
        super().__init__()
        offsets = torch.tensor([0, *vocab[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets)
        self.embedding = nn.Embedding(sum(vocab), dim)
        self.genre_embedding = nn.Parameter(torch.empty(n_genres, dim))
        nn.init.normal_(self.embedding.weight, std=0.01)
        nn.init.normal_(self.genre_embedding, std=0.01)

    def forward(self, sparse: torch.Tensor, genres: torch.Tensor) -> torch.Tensor:
        fields = self.embedding(sparse + self.offsets)
        count = genres.sum(dim=1, keepdim=True).clamp(min=1.0)
        genre = (genres / count) @ self.genre_embedding
        return torch.cat([fields, genre.unsqueeze(1)], dim=1)


class DenseArch(nn.Module):
    """dense B x F_dense -> B x 1 x D (the dense features become one more field)"""

    def __init__(self, n_dense: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(n_dense, dim)

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        return self.linear(dense).unsqueeze(1)


class CrossNet(nn.Module):
    """x0 B x N -> B x N through layers x_{l+1} = x0 * (W_l x_l + b_l) + x_l

    rank 0: full-rank W_l (N x N, the paper's DCN-V2); rank r > 0: W_l = U_l V_l^T
    (the paper's low-rank variant, 2 N r parameters instead of N^2).
    """

    def __init__(self, width: int, layers: int, rank: int = 0):
        super().__init__()
        if rank:
            self.weights = nn.ModuleList(
                nn.Sequential(nn.Linear(width, rank, bias=False), nn.Linear(rank, width))
                for _ in range(layers))
        else:
            self.weights = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for weight in self.weights:
            x = x0 * weight(x) + x
        return x


class DeepArch(nn.Module):
    """B x N -> B x H_last (ReLU MLP with dropout)"""

    def __init__(self, width: int, hidden: tuple[int, ...], dropout: float):
        super().__init__()
        layers = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.mlp = nn.Sequential(*layers)
        self.out_width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class OverArch(nn.Module):
    """B x H -> B (the CTR logit; sigmoid gives the click probability)"""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class DCNv2(nn.Module):
    """Stacked DCN-v2: SparseArch + DenseArch -> CrossNet -> DeepArch -> OverArch.

    ``forward(sparse, genres, dense)`` takes any leading shape (B, or B x N candidates):
    sparse [..., S] int64, genres [..., G] float, dense [..., 3] float -> logits [...].
    """

    def __init__(self, n_users: int, n_items: int, n_genres: int, vocab_sizes: dict[str, int],
                 dim: int = 16, cross_layers: int = 3, cross_rank: int = 0,
                 hidden: tuple[int, ...] = (256, 128), dropout: float = 0.2):
        super().__init__()
        self.n_users, self.n_items, self.n_genres = n_users, n_items, n_genres
        # +1: index 0 of every field is the reserved unknown value
        vocab = (n_users + 1, *(vocab_sizes[f] for f in USER_SPARSE[1:]), n_items + 1)
        self.features = FeatureTables(n_users, n_items, n_genres)
        self.sparse_arch = SparseArch(vocab, n_genres, dim)
        self.dense_arch = DenseArch(len(DENSE_FIELDS), dim)
        width = (len(SPARSE_FIELDS) + 2) * dim
        self.cross_net = CrossNet(width, cross_layers, cross_rank)
        self.deep_arch = DeepArch(width, tuple(hidden), dropout)
        self.over_arch = OverArch(self.deep_arch.out_width)

    def forward(self, sparse: torch.Tensor, genres: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        lead = sparse.shape[:-1]
        sparse = sparse.reshape(-1, sparse.shape[-1])
        genres = genres.reshape(-1, genres.shape[-1])
        dense = dense.reshape(-1, dense.shape[-1])
        fields = torch.cat([self.sparse_arch(sparse, genres), self.dense_arch(dense)], dim=1)
        x = self.cross_net(fields.flatten(1))
        return self.over_arch(self.deep_arch(x)).reshape(lead)

    def score_rows(self, user_rows: torch.Tensor, item_rows: torch.Tensor) -> torch.Tensor:
        """Table rows (B) -> logits (B); rows are internal index + 1, 0 = unknown."""
        return self(*self.features.gather(user_rows, item_rows))


# tuned on ML-1M's validation split (docs/results-notes.md: against the generic defaults)
@register_model("dcn_v2", task="ctr", defaults={"dim": 16, "lr": 0.005, "weight_decay": 1e-5,
                                                "batch_size": 2048, "epochs": 6, "patience": 1})
def build_dcn_v2(n_users: int, n_items: int, n_genres: int, vocab_sizes: dict[str, int],
                 dim: int = 16, cross_layers: int = 3, cross_rank: int = 0,
                 hidden: tuple[int, ...] = (256, 128), dropout: float = 0.2) -> DCNv2:
    return DCNv2(n_users, n_items, n_genres, vocab_sizes, dim, cross_layers, cross_rank,
                 tuple(hidden), dropout)
