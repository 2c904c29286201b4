"""The DCN-v2 CTR family: field-width and deep-MLP pruning, a row-wise table, the CTR protocol.

    recdeploy compress --run runs/dcn-ml1m --methods prune-50+rowwise-int8,int8-dynamic --quality-budget 1%

    family = family_named("dcn_v2")
    data = family.task_data(model, ds)            # real (user, item) rows, fine-tune, test AUC

The served module is the ``ranker`` that the ranking scenario (``export/scenarios/ranking.py``)
writes: SPARSE [B, N, 6], GENRES [B, N, G], DENSE [B, N, 3] -> SCORES [B, N] logits. Requests
here are B real (user, item) pairs with N = 1, so "batch 256" is 256 pairs scored in one
call; export gives a variant its candidate axis back when it serves it
(``recdeploy export --variants``).

Pruning. A cross layer x_{l+1} = x0 * (W x_l + b) + x_l ties channel c of every layer to
channel c of x0, the flattened fields (field f, dimension d at c = f*D + d), so the cross
network cannot shrink on its own: dropping dimension d drops it from the shared table, the
genre and dense fields, every cross layer's rows and columns and the deep MLP's first input
columns, at f*D + d for every field f. torch-pruning cannot trace that through the concat and
flatten, so a customized pruner registered for CrossNet does it (``FieldWidthPruner``, one
channel group per field so torch-pruning removes the same d from each) with an importance over
all those weights (``FieldWidthImportance``). The deep MLP's hidden widths are plain
Linear -> Linear groups that torch-pruning prunes on its own. One ratio applies to both:
prune-50 on dim 16, hidden (256, 128) gives dim 8, hidden (128, 64).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from recdeploy.compress.api import TaskData
from recdeploy.compress.config import CompressionConfigError
from recdeploy.compress.families import ModelFamily, PruneSpec, register_family
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.train.models.dcn_v2 import CrossNet, DCNv2
from recdeploy.train.tasks import protocol as task_protocol
from recdeploy.train.tasks.ctr import CtrBatch, CtrProtocol

SPLIT_SEED = 0            # TrainConfig's default seed: the split runs are trained on
FINETUNE_PATIENCE = 2     # fine-tune epochs without a better validation AUC before stopping


# ---------------------------------------------------------------------------- served modules

class RankerScorer(nn.Module):
    """DCNv2's scoring path without its FeatureTables (ranking_features serves those).

    sparse [..., 6] int64, genres [..., G], dense [..., 3] -> logits [...]
    """

    def __init__(self, model: DCNv2):
        super().__init__()
        self.sparse_arch, self.dense_arch = model.sparse_arch, model.dense_arch
        self.cross_net, self.deep_arch, self.over_arch = model.cross_net, model.deep_arch, model.over_arch

    # DCNv2's own forward: a variant is the graph export/ranking.py writes, with other weights
    forward = DCNv2.forward


class RowwiseEmbedding(nn.Module):
    """nn.Embedding over a RowwiseTable: index (any shape) -> index.shape x D, dequantized in-graph."""

    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__()
        self.table = RowwiseTable.quantize(weight, bits)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.table.rows(index.reshape(-1)).reshape(*index.shape, self.table.dim)


def rowwise_scorer(model: DCNv2, bits: int) -> RankerScorer:
    """The served scorer with the shared table row-wise int8/int4 (the genre and dense fields
    are a few hundred floats and stay FP32)."""
    scorer = copy.deepcopy(RankerScorer(model))
    # a drop-in of another class under the same name: SparseArch only calls it
    scorer.sparse_arch.register_module("embedding", RowwiseEmbedding(model.sparse_arch.embedding.weight, bits))
    return scorer.eval()


# ---------------------------------------------------------------------------- pruning

def _cross_linears(cross: CrossNet) -> list[tuple[nn.Linear, nn.Linear]]:
    """(layer reading x_l, layer writing the N outputs) per cross layer; one Linear when full rank."""
    return [(_linear(w[0]), _linear(w[-1])) if isinstance(w, nn.Sequential) else (_linear(w), _linear(w))
            for w in cross.weights]


def _linear(layer: nn.Module) -> nn.Linear:
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"a cross layer holds Linear layers, not {type(layer).__name__}")
    return layer


def field_width(model: DCNv2) -> tuple[int, int]:
    """(fields, D): the cross network's width is fields x D."""
    dim = model.sparse_arch.embedding.embedding_dim
    return _cross_linears(model.cross_net)[0][0].in_features // dim, dim


def _saliency(weight: torch.Tensor, kind: str) -> torch.Tensor:
    if kind != "taylor":
        return weight.pow(2)
    if weight.grad is None:
        raise RuntimeError("Taylor importance needs gradients; none were computed")
    return (weight * weight.grad).abs()


def field_channel_scores(model: DCNv2, kind: str) -> torch.Tensor:
    """fields x D scores, one per channel of x0: the sum over the parts it couples (table
    column, cross rows and columns, deep MLP input column), each part divided by its mean so
    that no part wins on scale alone."""
    sparse, dense = model.sparse_arch, model.dense_arch
    table = _saliency(sparse.embedding.weight, kind)
    bounds = [*sparse.offsets.tolist(), table.shape[0]]
    fields = [table[a:b].sum(0) for a, b in zip(bounds[:-1], bounds[1:])]
    fields.append(_saliency(sparse.genre_embedding, kind).sum(0))
    fields.append(_saliency(dense.linear.weight, kind).sum(1) + _saliency(dense.linear.bias, kind))
    parts = [torch.cat(fields)]
    for reader, writer in _cross_linears(model.cross_net):
        part = _saliency(reader.weight, kind).sum(0) + _saliency(writer.weight, kind).sum(1)
        parts.append(part + _saliency(writer.bias, kind))
    first = next(m for m in model.deep_arch.mlp if isinstance(m, nn.Linear))
    parts.append(_saliency(first.weight, kind).sum(0))
    scores = [part / part.mean().clamp_min(1e-12) for part in parts]
    return sum(scores[1:], scores[0])


def _field_width_pruner(model: DCNv2):
    import torch_pruning as tp

    sparse, dense = model.sparse_arch, model.dense_arch

    class FieldWidthPruner(tp.pruner.BasePruningFunc):
        """Prunes channels f*D + d of the cross network (every field f, the same dims d) and
        dims d of the table, the genre embedding and the dense field. torch-pruning prunes
        the deep MLP's first input columns through the traced CrossNet -> Linear edge."""
        TARGET_MODULES = (CrossNet,)

        def prune_out_channels(self, layer: CrossNet, idxs) -> CrossNet:
            n_fields, dim = field_width(model)
            dims = sorted({int(i) % dim for i in idxs})
            assert sorted(idxs) == [f * dim + d for f in range(n_fields) for d in dims], \
                "field-width pruning must remove the same dims from every field"
            for reader, writer in _cross_linears(layer):
                tp.prune_linear_in_channels(reader, idxs)
                tp.prune_linear_out_channels(writer, idxs)
            tp.prune_embedding_out_channels(sparse.embedding, dims)
            keep = [d for d in range(dim) if d not in set(dims)]
            sparse.genre_embedding = nn.Parameter(sparse.genre_embedding.detach()[:, keep].clone())
            tp.prune_linear_out_channels(dense.linear, dims)
            return layer

        def prune_in_channels(self, layer: CrossNet, idxs) -> CrossNet:
            # a separate function from prune_out_channels, so torch-pruning never walks up the
            # concat + flatten it cannot map; the producers of x0 are ignored layers
            raise RuntimeError("the cross network's input is pruned only with its output "
                               "(FieldWidthPruner.prune_out_channels)")

        def get_out_channels(self, layer: CrossNet) -> int:
            return _cross_linears(layer)[0][0].in_features

        get_in_channels = get_out_channels

        def get_out_channel_groups(self, layer: CrossNet) -> int:
            return field_width(model)[0]

        get_in_channel_groups = get_out_channel_groups

    return FieldWidthPruner()


def _field_width_importance(model: DCNv2, kind: str):
    import torch_pruning as tp

    from recdeploy.compress.pruning import torch_pruning_importance

    default = torch_pruning_importance(kind)

    class FieldWidthImportance(tp.importance.Importance):
        """field_channel_scores for the CrossNet group; torch-pruning's own for the MLP groups."""

        @torch.no_grad()
        def __call__(self, group) -> torch.Tensor:
            if any(isinstance(dep.target.module, CrossNet) for dep, _ in group):
                return field_channel_scores(model, kind)
            return default(group)

    return FieldWidthImportance()


# ---------------------------------------------------------------------------- task data

def check_split(model: DCNv2, protocol: CtrProtocol, seed: int) -> None:
    """The model's feature tables hold training-row activity counts: they must come from this split."""
    ds = protocol.ds
    if (model.n_users, model.n_items) != (ds.n_users, ds.n_items):
        raise CompressionConfigError(f"the model has {model.n_users} users x {model.n_items} items, "
                                     f"dataset {ds.name} has {ds.n_users} x {ds.n_items}")
    if not protocol.trained_on_this_split(model):
        raise CompressionConfigError(f"the model's feature tables were not built from the training rows "
                                     f"of the split with seed {seed}: pass the seed the run was trained "
                                     "with (its TrainConfig.seed)")


def row_features(protocol: CtrProtocol, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Served inputs for ds rows: SPARSE [R, 1, 6], GENRES [R, 1, G], DENSE [R, 1, 3], from
    the feature tables of the split's training rows (what the ranker was trained with)."""
    sparse, genres, dense = protocol.features(rows)
    return {"SPARSE": sparse[:, None], "GENRES": genres[:, None], "DENSE": dense[:, None]}


def _ctr_protocol(ds, seed: int) -> CtrProtocol:
    """The ctr task's public protocol on the split drawn with ``seed``."""
    protocol = task_protocol("ctr", ds, seed)
    assert isinstance(protocol, CtrProtocol)  # what the ctr task registers
    return protocol


def _chunks(inputs: dict[str, np.ndarray], size: int):
    n = len(next(iter(inputs.values())))
    for start in range(0, n, size):
        yield {name: value[start:start + size] for name, value in inputs.items()}


# ---------------------------------------------------------------------------- the family

@register_family
class DcnV2Family(ModelFamily):
    name = "dcn_v2"
    model_types = (DCNv2,)
    input_names = ("SPARSE", "GENRES", "DENSE")
    output_names = ("SCORES",)
    primary_metric = "auc"

    def served_module(self, model: DCNv2) -> nn.Module:
        return RankerScorer(model).eval()

    def rowwise_module(self, model: DCNv2, bits: int) -> nn.Module:
        return rowwise_scorer(model, bits)

    def prune_spec(self, model: DCNv2, importance: str) -> PruneSpec:
        """Field width (customized, CrossNet as root) and deep MLP widths (plain Linear roots).
        The producers of x0 are ignored (the field-width pruner handles them) and so is the
        single-logit output layer."""
        rows = torch.arange(1, 5)
        example = model.features.gather(rows.clamp(max=model.n_users), rows.clamp(max=model.n_items))
        return PruneSpec(example_inputs=example,
                         customized_pruners={CrossNet: _field_width_pruner(model)},
                         root_module_types=[CrossNet, nn.Linear],
                         ignored_layers=[model.sparse_arch.embedding, model.dense_arch.linear,
                                         model.over_arch.linear],
                         importance=_field_width_importance(model, importance))

    def example_requests(self, ds, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """n held-out (test) pairs with their features: [n, 1, ...] each."""
        protocol = _ctr_protocol(ds, SPLIT_SEED)
        test = protocol.rows("test")
        rows = np.random.default_rng(seed).choice(test, size=n, replace=n > len(test))
        return row_features(protocol, rows)

    def task_data(self, model: DCNv2, ds, n_requests: int = 256, seed: int = SPLIT_SEED,
                  weight_decay: float = 1e-5, batch_size: int = 2048, task: str = "ctr",
                  lr: float | None = None) -> TaskData:
        """seed: the run's training seed, which drew its 8:1:1 split (checked against the
        model's feature tables); the test rows are the run's own held-out rows. lr (the run's)
        is not the fine-tune's default here: DCN-v2's variants were measured fine-tuned at 0.01."""
        if task != "ctr":
            raise CompressionConfigError(f"dcn_v2 compression knows the task ctr, not {task!r}")
        protocol = _ctr_protocol(ds, seed)     # the split the run drew, its feature tables
        check_split(model, protocol, seed)
        rng = np.random.default_rng(seed)
        train_rows = protocol.rows("train")
        calibration = rng.choice(train_rows, size=n_requests, replace=n_requests > len(train_rows))
        requests = list(_chunks(row_features(protocol, calibration), 64))
        loss_rows = torch.from_numpy(rng.choice(protocol.n_train, size=min(4096, protocol.n_train),
                                                replace=False))

        def loss(m: DCNv2) -> torch.Tensor:
            return protocol.batch_loss(m, CtrBatch(loss_rows))

        def finetune(m: DCNv2, epochs: int, lr: float, ft_seed: int = 0) -> DCNv2:
            """The training objective (BCE, a share of rows shown as the unknown user); keeps the
            best validation-AUC epoch, the model as given counting as epoch 0."""
            return protocol.finetune(m, epochs=epochs, lr=lr, seed=ft_seed, weight_decay=weight_decay,
                                     batch_size=batch_size, patience=FINETUNE_PATIENCE)

        def evaluate(score) -> dict:
            """score({"SPARSE", "GENRES", "DENSE": [R, 1, ...]}) -> [R, 1] logits; the test split."""
            return protocol.evaluate(lambda rows: score(row_features(protocol, rows)), "test")

        return TaskData(requests=requests, finetune=finetune, loss=loss, evaluate=evaluate)
