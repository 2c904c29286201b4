"""DCN-v2 over a context and an item, with the slot position as a field: the ads CTR ranker.

    model = build_model("dcn_v2_context", context_vocab=(3, 5, 9, 10), item_vocab=(29, 52, 18),
                        n_items=160, n_campaigns=3)
    logits = model(sparse, dense)          # [..., 10] int64, [..., 1] -> [...]

The cross and deep parts are DCN-v2's own (``dcn_v2.CrossNet``, ``DeepArch``, ``DenseArch``,
``OverArch``); only the fields differ from the MovieLens ranker. SPARSE columns (each a
per-field vocabulary index, 0 = unknown): four hashed context features, the item, its three
hashed attributes, its campaign and the slot position (1-3). DENSE: the item's numeric
attribute. Position is a training-only feature (the common "position as a feature"
debiasing): training sees the logged slot, so the slot's own effect on clicks is not
learned as the item's; serving sets it to ``SERVED_POSITION`` for every candidate, so the
ranking compares the items as if each were shown in the same slot.

``ContextTables`` carries the lookups that turn raw values into those indices (the sorted
hashed values of each context field, the item rows): the task fills them from the training
rows, export writes them beside the numpy ``obd_features`` model, so serving and training
read the same values.
"""
from __future__ import annotations

import torch
from torch import nn

from recdeploy.train.models import register_model
from recdeploy.train.models.dcn_v2 import CrossNet, DeepArch, DenseArch, OverArch

CONTEXT_FIELDS = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
ITEM_FIELDS = ("item", "item_feature_1", "item_feature_2", "item_feature_3", "campaign")
SPARSE_FIELDS = (*CONTEXT_FIELDS, *ITEM_FIELDS, "position")
DENSE_FIELDS = ("item_feature_0",)
POSITIONS = 3
SERVED_POSITION = 1


class ContextTables(nn.Module):
    """context_vocab_k: the sorted raw (hashed int64) values of context field k seen in
    training, index j + 1 for value j; item_ids [I] raw ids (sorted); item_sparse [I+1, 5]
    and item_dense [I+1, 1] per item row (row 0 = unknown)."""
    item_ids: torch.Tensor
    item_sparse: torch.Tensor
    item_dense: torch.Tensor

    def __init__(self, context_vocab: tuple[int, ...], n_items: int):
        super().__init__()
        for k, size in enumerate(context_vocab):
            self.register_buffer(f"context_vocab_{k}", torch.zeros(size - 1, dtype=torch.long))
        self.register_buffer("item_ids", torch.zeros(n_items, dtype=torch.long))
        self.register_buffer("item_sparse", torch.zeros(n_items + 1, len(ITEM_FIELDS), dtype=torch.long))
        self.register_buffer("item_dense", torch.zeros(n_items + 1, len(DENSE_FIELDS)))

    def context_vocab(self, k: int) -> torch.Tensor:
        return getattr(self, f"context_vocab_{k}")


class FieldEmbedding(nn.Module):
    """sparse [B, S] per-field indices -> [B, S, D]: one table, field offsets added here."""
    offsets: torch.Tensor

    def __init__(self, vocab: tuple[int, ...], dim: int):
        super().__init__()
        self.register_buffer("offsets", torch.tensor([0, *vocab[:-1]]).cumsum(0))
        self.embedding = nn.Embedding(sum(vocab), dim)
        nn.init.normal_(self.embedding.weight, std=0.01)

    def forward(self, sparse: torch.Tensor) -> torch.Tensor:
        return self.embedding(sparse + self.offsets)


class ContextDCN(nn.Module):
    """FieldEmbedding + DenseArch -> CrossNet -> DeepArch -> OverArch.

    ``forward(sparse, dense)``: sparse [..., 10] int64, dense [..., 1] float -> logits [...]
    (any leading shape: B rows, or B x N candidates).
    """

    def __init__(self, context_vocab: tuple[int, ...], item_vocab: tuple[int, ...], n_items: int,
                 n_campaigns: int, dim: int = 8, cross_layers: int = 2, cross_rank: int = 0,
                 hidden: tuple[int, ...] = (64, 32), dropout: float = 0.2):
        super().__init__()
        if len(context_vocab) != len(CONTEXT_FIELDS) or len(item_vocab) != len(ITEM_FIELDS) - 2:
            raise ValueError(f"need {len(CONTEXT_FIELDS)} context and {len(ITEM_FIELDS) - 2} item "
                             f"attribute vocabularies, got {context_vocab} and {item_vocab}")
        self.context_vocab, self.item_vocab = tuple(context_vocab), tuple(item_vocab)
        self.n_items, self.n_campaigns = n_items, n_campaigns
        vocab = (*context_vocab, n_items + 1, *item_vocab, n_campaigns + 1, POSITIONS + 1)
        self.tables = ContextTables(self.context_vocab, n_items)
        self.sparse_arch = FieldEmbedding(vocab, dim)
        self.dense_arch = DenseArch(len(DENSE_FIELDS), dim)
        width = (len(SPARSE_FIELDS) + 1) * dim
        self.cross_net = CrossNet(width, cross_layers, cross_rank)
        self.deep_arch = DeepArch(width, tuple(hidden), dropout)
        self.over_arch = OverArch(self.deep_arch.out_width)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        lead = sparse.shape[:-1]
        sparse = sparse.reshape(-1, sparse.shape[-1])
        dense = dense.reshape(-1, dense.shape[-1])
        fields = torch.cat([self.sparse_arch(sparse), self.dense_arch(dense)], dim=1)
        x = self.cross_net(fields.flatten(1))
        return self.over_arch(self.deep_arch(x)).reshape(lead)


# a small net for 60k impressions and ~300 clicks; patience 2 because validation AUC on a
# few dozen clicks moves by chance from one epoch to the next
@register_model("dcn_v2_context", task="obd_ctr", defaults={
    "dim": 8, "lr": 0.003, "weight_decay": 1e-5, "batch_size": 512, "epochs": 8, "patience": 2})
def build_dcn_v2_context(context_vocab: tuple[int, ...], item_vocab: tuple[int, ...], n_items: int,
                         n_campaigns: int, dim: int = 8, cross_layers: int = 2, cross_rank: int = 0,
                         hidden: tuple[int, ...] = (64, 32), dropout: float = 0.2) -> ContextDCN:
    return ContextDCN(tuple(context_vocab), tuple(item_vocab), n_items, n_campaigns, dim, cross_layers,
                      cross_rank, tuple(hidden), dropout)
