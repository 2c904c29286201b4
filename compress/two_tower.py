"""The two-tower retrieval family: coupled-dimension pruning, row-wise tables, its protocol.

    family = family_named("two_tower")
    data = family.task_data(model, ds, task="retrieval_random", seed=0)  # the run's protocol

The score is user_vector · item_vector + item_bias, so dimension d of the user table and
dimension d of the item table form one pruning group: removing one without the other breaks
the dot product. torch-pruning has no built-in notion of that coupling, so this module
registers a customized pruner for the pair (``CoupledTowersPruner``) and an importance that
scores each dimension over both tables (``CoupledTowersImportance``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recdeploy.compress.api import TaskData
from recdeploy.compress.config import CompressionConfigError
from recdeploy.compress.families import ModelFamily, PruneSpec, register_family
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.train.models.two_tower import RetrievalScorer, TwoTower
from recdeploy.train.tasks import protocol as task_protocol

# the retrieval protocols whose objective (the full softmax) trains a two-tower
TASKS = ("retrieval_loo", "retrieval_random", "next_basket")


def _tables(model: TwoTower) -> tuple[nn.Embedding, nn.Embedding]:
    return model.user_tower.embedding, model.item_tower.embedding


def _coupled_pruner():
    import torch_pruning as tp

    class CoupledTowersPruner(tp.pruner.BasePruningFunc):
        """Prunes embedding dimension d from the user and the item table together."""
        TARGET_MODULES = (TwoTower,)

        def prune_out_channels(self, layer: TwoTower, idxs) -> TwoTower:
            for table in _tables(layer):
                tp.prune_embedding_out_channels(table, idxs)
            layer.dim = layer.user_tower.embedding.embedding_dim
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: TwoTower) -> int:
            return layer.dim

        get_in_channels = get_out_channels

    return CoupledTowersPruner()


def _dimension_score(w: torch.Tensor, kind: str) -> torch.Tensor:
    """D scores of one table's dimensions: L2 magnitude or Taylor |w * grad|."""
    if kind == "taylor":
        if w.grad is None:
            raise RuntimeError("Taylor importance needs gradients; none were computed")
        return (w * w.grad).abs().sum(dim=0)
    return w.pow(2).sum(dim=0)


def _coupled_importance(kind: str):
    import torch_pruning as tp

    class CoupledTowersImportance(tp.importance.Importance):
        """Per-dimension importance summed over both tables: L2 magnitude or Taylor |w * grad|."""

        @torch.no_grad()
        def __call__(self, group) -> torch.Tensor | None:
            for dep, _ in group:
                layer = dep.target.module
                if isinstance(layer, TwoTower):
                    user_table, item_table = _tables(layer)
                    return _dimension_score(user_table.weight, kind) + _dimension_score(item_table.weight, kind)
            return None

    return CoupledTowersImportance()


class RowwiseRetrievalScorer(nn.Module):
    """The served scorer with row-wise quantized user and item tables.

    user index (B x 1, int64) -> scores over the catalogue (B x I), same contract as
    RetrievalScorer, and like it the item bias rides in the matrix product as one more column
    (kept FP32) with a constant 1 on the user side.

    The file holds the int8/int4 codes. Both dequantized tables depend on constants only, so
    ONNX Runtime folds them once at load and a call is the FP32 scorer's Gather and MatMul:
    the saving is file size and transfer, not RAM. Dequantizing only the gathered user rows
    per call instead adds six small ops to every call; factoring the per-row scales out of the
    product costs an extra pass over the B x I scores.
    """
    item_bias: torch.Tensor

    def __init__(self, model: TwoTower, bits: int):
        super().__init__()
        vectors, bias = model.item_tower.catalogue()
        self.users = RowwiseTable.quantize(model.user_tower.embedding.weight, bits)
        self.items = RowwiseTable.quantize(vectors, bits)
        self.register_buffer("item_bias", bias.detach().clone())

    def forward(self, user_index: torch.Tensor) -> torch.Tensor:
        users = nn.functional.pad(self.users.dequantize(), (0, 1), value=1.0)    # U x (D + 1)
        items = torch.cat([self.items.dequantize(), self.item_bias[:, None]], 1)  # I x (D + 1)
        return users[user_index[:, 0]] @ items.T


@register_family
class TwoTowerFamily(ModelFamily):
    name = "two_tower"
    model_types = (TwoTower,)
    input_names = ("USER_INDEX",)
    output_names = ("SCORES",)
    primary_metric = "ndcg@10"

    def served_module(self, model: TwoTower) -> nn.Module:
        return RetrievalScorer(model).eval()

    def rowwise_module(self, model: TwoTower, bits: int) -> nn.Module:
        return RowwiseRetrievalScorer(model, bits)

    def prune_spec(self, model: TwoTower, importance: str) -> PruneSpec:
        return PruneSpec(example_inputs=torch.arange(min(4, model.n_users)),
                         customized_pruners={TwoTower: _coupled_pruner()},
                         root_module_types=[TwoTower], importance=_coupled_importance(importance))

    def example_requests(self, ds, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """n real users of the dataset (with repeats when n exceeds the user count)."""
        rng = np.random.default_rng(seed)
        users = rng.choice(ds.n_users, size=n, replace=n > ds.n_users).astype(np.int64)
        return {"USER_INDEX": users.reshape(-1, 1)}

    def task_data(self, model, ds, n_requests: int = 256, seed: int = 0,
                  weight_decay: float = 1e-4, batch_size: int = 1024,
                  task: str = "retrieval_loo", lr: float | None = None) -> TaskData:
        """Fine-tuning and quality under the run's own protocol (the card's ``task``):
        leave-one-out (one held-out item per user) or random 8:1:1 over the ratings >= 3
        (every held-out item of a user; seed: the run's, which drew the split)."""
        if task not in TASKS:
            raise CompressionConfigError(f"two_tower compression knows the tasks "
                                         f"{' and '.join(TASKS)}, not {task!r}")
        protocol = task_protocol(task, ds, seed)
        requests = [{"USER_INDEX": batch} for batch in np.array_split(
            self.example_requests(ds, n_requests, seed)["USER_INDEX"], max(1, n_requests // 64))]

        def loss(m: TwoTower) -> torch.Tensor:
            rows = np.random.default_rng(seed).choice(protocol.n_train, size=min(4096, protocol.n_train),
                                                      replace=False)
            return protocol.batch_loss(m, torch.from_numpy(rows))

        def finetune(m: TwoTower, epochs: int, lr: float, ft_seed: int = 0,
                     teacher: TwoTower | None = None, distill: float = 0.0) -> TwoTower:
            """The task's full-softmax objective (with a teacher: distilled); every epoch
            runs, the best validation NDCG@10 is kept."""
            return protocol.finetune(m, epochs=epochs, lr=lr, seed=ft_seed, weight_decay=weight_decay,
                                     batch_size=batch_size, teacher=teacher, distill=distill)

        def evaluate(score) -> dict:
            """score({"USER_INDEX": B x 1}) -> B x I; full ranking on the test split."""
            metrics = protocol.evaluate(lambda users: score({"USER_INDEX": users.reshape(-1, 1)}), "test")
            return {"ndcg@10": metrics.ndcg_at_10, "hr@10": metrics.hr_at_10, "users": metrics.n_users}

        return TaskData(requests=requests, finetune=finetune, loss=loss, evaluate=evaluate, train_lr=lr,
                        distills=True)
