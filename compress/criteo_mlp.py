"""DLRM's MLPs pruned with torch-pruning (``compress/pruning.py``), beside the compressed tables.

    recdeploy bench-criteo --preset small --prune-mlp 0.25,0.5 --prune-finetune-rows 100000

    pruned = prune_mlps(model, 0.5)                          # hidden widths halved, tables shared
    pool = mlp_candidates(model, data, (0.25, 0.5))          # mlp25, mlp25_int4, mlp50, ...

The hidden layers of the bottom (dense) MLP and of the top (over) MLP lose ``ratio`` of their
neurons by torch-pruning's magnitude importance; what the rest of the model depends on keeps
its width: the bottom MLP's output (= the embedding dim, dotted with every table row), the top
MLP's input (the interaction's output) and the logit. The fine-tune (``finetune_rows`` rows of
the training part per epoch, the data being too large for whole epochs) trains the MLPs only:
the tables keep their trained rows, so a pruned model shares the FP32 table, and its INT4
variant the same INT4 table, with the unpruned variants.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recdeploy.compress.api import TaskData, compress
from recdeploy.compress.config import CompressionConfigError, PruneConfig
from recdeploy.compress.criteo_tables import Candidate, model_weight, sparse_arch, with_tables
from recdeploy.compress.families import ModelFamily, PruneSpec, register_family
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.train.criteo.optim import RowWiseAdagrad
from recdeploy.train.criteo.prepare import PreparedCriteo
from recdeploy.train.models.dlrm import DLRM, N_DENSE, N_SPARSE
from recdeploy.train.tasks.criteo_ctr import DENSE_LR, table_parameters, train_rows

FINETUNE_ROWS = 100_000      # rows per fine-tune epoch; the bench's --prune-finetune-rows


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def hidden_widths(model: DLRM) -> dict[str, tuple[int, ...]]:
    """{"bottom": the dense MLP's hidden widths, "top": the over MLP's} (not the fixed outputs)."""
    return {"bottom": tuple(m.out_features for m in _linears(model.dense_arch)[:-1]),
            "top": tuple(m.out_features for m in _linears(model.over_arch)[:-1])}


def mlp_parameters(module: nn.Module) -> int:
    """Parameters outside the embedding tables (DLRM: the bottom and top MLPs)."""
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith("sparse_arch."))


def parse_ratios(text: str) -> tuple[float, ...]:
    """'0.25,0.5' -> (0.25, 0.5); each the share of hidden neurons removed, in (0, 1)."""
    try:
        ratios = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CompressionConfigError(f"MLP pruning ratios are comma-separated numbers in (0, 1), "
                                     f"e.g. 0.25,0.5; got {text!r}") from None
    if not ratios:
        raise CompressionConfigError(f"no MLP pruning ratio in {text!r}; e.g. 0.25,0.5")
    for ratio in ratios:
        PruneConfig(ratio=ratio)       # raises with what is valid
    return ratios


def _freeze_tables_finetune(data: PreparedCriteo, rows: int, batch_size: int):
    def finetune(model: DLRM, epochs: int, lr: float, seed: int = 0, teacher: DLRM | None = None,
                 distill: float = 0.0) -> DLRM:
        """Adam on the MLPs over the first ``rows`` training rows per epoch; tables frozen;
        with a teacher (the unpruned model), towards its click probabilities by ``distill``."""
        tables, rest = table_parameters(model)
        for weight in tables:
            weight.requires_grad_(False)
        # the row-wise optimizer never steps: frozen weights get no gradient
        optimizers = (RowWiseAdagrad(tables), torch.optim.Adam(rest, lr=lr))
        rng = np.random.default_rng(seed)
        try:
            for _ in range(epochs):
                train_rows(model, data, lr, batch_size, rng, max_rows=rows, optimizers=optimizers,
                           progress=False, teacher=teacher.eval() if teacher is not None else None,
                           distill=distill)
        finally:
            for weight in tables:
                weight.requires_grad_(True)
        return model.eval()
    return finetune


@register_family
class DlrmFamily(ModelFamily):
    name = "dlrm"
    model_types = (DLRM,)
    input_names = ("DENSE_X", "SPARSE")
    output_names = ("SCORES",)
    primary_metric = "auc"

    def served_module(self, model: DLRM) -> nn.Module:
        return model.eval()

    def prune_spec(self, model: DLRM, importance: str) -> PruneSpec:
        """Linear roots only; the tables, the bottom MLP's output layer (its width is the
        embedding dim) and the logit layer are ignored. torch-pruning does not know
        EmbeddingBag: its weight is declared (dim 1, ignored) so that nothing prunes it."""
        tables = list(model.sparse_arch.tables.parameters())
        return PruneSpec(example_inputs=(torch.rand(4, N_DENSE), torch.zeros(4, N_SPARSE, dtype=torch.long)),
                         root_module_types=[nn.Linear],
                         ignored_layers=[model.sparse_arch.tables, *tables, _linears(model.dense_arch)[-1],
                                         _linears(model.over_arch)[-1]],
                         unwrapped_parameters=[(p, 1) for p in tables])

    def task_data(self, model: DLRM, ds, n_requests: int = 256, seed: int = 0, weight_decay: float = 0.0,
                  batch_size: int = 2048, task: str = "criteo_ctr", lr: float | None = None,
                  finetune_rows: int = FINETUNE_ROWS) -> TaskData:
        """See ``dlrm_task_data``; the run's lr is the tables', not the fine-tune's."""
        return dlrm_task_data(ds, finetune_rows, batch_size)


def dlrm_task_data(ds, finetune_rows: int = FINETUNE_ROWS, batch_size: int = 2048) -> TaskData:
    """The fine-tune (MLPs only, ``finetune_rows`` per epoch, Adam at the MLPs' training lr)
    and a BCE loss on 4096 training rows for Taylor importance."""
    if not isinstance(ds, PreparedCriteo):
        raise CompressionConfigError(f"dlrm compression takes Criteo-format rows, not {type(ds).__name__}")
    if finetune_rows < 1:
        raise CompressionConfigError(f"finetune_rows must be >= 1, got {finetune_rows}")
    labels, dense, sparse = (np.asarray(a[:4096]) for a in ds.arrays("train"))

    def loss(m: DLRM) -> torch.Tensor:
        logits = m(torch.from_numpy(dense), torch.from_numpy(sparse.astype(np.int64)))
        return nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels))

    return TaskData(finetune=_freeze_tables_finetune(ds, finetune_rows, batch_size), loss=loss,
                    train_lr=DENSE_LR, distills=True)


def prune_mlps(model: DLRM, ratio: float, data: TaskData | None = None, distill: float = 1.0) -> DLRM:
    """A copy with ``ratio`` of every hidden neuron pruned, reading the same table object as
    ``model``; with ``data``, fine-tuned one epoch of its rows towards ``model``'s click
    probabilities (``distill``; 0: the labels only)."""
    config = PruneConfig(ratio=ratio, finetune_epochs=1 if data else 0, distill=distill if data else 0.0)
    pruned = compress(model, config, data=data)
    # pruning copies the whole model; the tables are unchanged (frozen in the fine-tune): share them
    sparse_arch(pruned).tables = sparse_arch(model).tables
    return pruned


def mlp_candidates(model: nn.Module, data: PreparedCriteo, ratios: tuple[float, ...],
                   finetune_rows: int = 0) -> list[Candidate]:
    """Per ratio: ``mlpNN`` (pruned, FP32 tables) and ``mlpNN_int4`` (pruned, row-wise INT4
    tables); with ``finetune_rows`` also ``mlpNN_kd`` and ``mlpNN_kd_int4``, fine-tuned on that
    many rows by distillation from the unpruned model. Not on the labels: the tables have
    memorised the rows they were trained on, so a second pass over them overfits (measured in
    docs/large-models.md)."""
    if not isinstance(model, DLRM):
        raise CompressionConfigError(f"MLP pruning here is DLRM's (bottom and top MLP); "
                                     f"{type(model).__name__} is not supported: use the dlrm model")
    task = dlrm_task_data(data, finetune_rows) if finetune_rows else None
    int4 = RowwiseTable.quantize(model_weight(model), 4)
    out = []
    for ratio in ratios:
        tag = f"mlp{round(ratio * 100)}"
        for name, tune in [(tag, None)] + ([(f"{tag}_kd", task)] if task else []):
            pruned = prune_mlps(model, ratio, tune)
            settings = {"mlp_ratio": ratio, "finetune_rows": finetune_rows if tune else 0,
                        "distill": 1.0 if tune else 0.0, **hidden_widths(pruned)}
            out.append(Candidate(name, pruned, settings))
            out.append(Candidate(f"{name}_int4", with_tables(pruned, int4), {**settings, "bits": 4}))
    return out
