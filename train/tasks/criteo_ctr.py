"""CTR on Criteo-format rows (``--dataset criteo``): DLRM and DCN-v2 with sparse gradients.

    recdeploy train --model dlrm --dataset criteo --out runs/dlrm-criteo
    recdeploy train --model dcn_v2_criteo --dataset criteo --out runs/dcn-criteo

Split by position (Criteo's benchmarks hold out the last day): the prepared set's train /
valid / test parts. One epoch by default, as CTR models on Criteo are trained. The embedding
tables learn through row-wise Adagrad on sparse gradients (``--lr``), the MLPs through Adam
(DENSE_LR). Rows stream from the memory-mapped arrays one window at a time, shuffled within
the window, so 10^7 rows never sit in RAM as tensors. Baselines: the global click rate, and
for synthetic data the planted truth (its AUC is the Bayes AUC no model can beat).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from recdeploy.train.config import TrainConfig
from recdeploy.train.criteo.optim import RowWiseAdagrad
from recdeploy.train.criteo.prepare import PreparedCriteo
from recdeploy.train.models import build_model
from recdeploy.train.tasks import TrainResult, register_task
from recdeploy.train.tasks.ctr import auc, logloss

PROTOCOL = {"split": "by position: first 90 % train, then 5 % valid, 5 % test",
            "protocol": "CTR: AUC, logloss on held-out rows", "filtering": "none"}
DENSE_LR = 1e-3
WINDOW = 1_000_000          # rows read from the memmaps and shuffled together


@dataclass(frozen=True)
class TrainStats:
    rows: int
    seconds: float           # wall clock
    cpu_seconds: float = 0.0  # this process's CPU time, all threads: on a shared machine the
                              # wall clock counts other jobs' time too

    @property
    def samples_per_cpu_s(self) -> float:
        return self.rows / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def table_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(sparse-gradient table weights, every other parameter)."""
    tables: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        (tables if name.endswith("bag.weight") else rest).append(p)
    return tables, rest


def train_rows(model, data: PreparedCriteo, lr: float, batch_size: int, rng: np.random.Generator,
               max_rows: int | None = None, optimizers=None, progress: bool = True, teacher=None,
               distill: float = 0.0) -> TrainStats:
    """One pass over the training rows (the first ``max_rows`` of them); returns rows and seconds.
    With a ``teacher``, the target is (1 - distill) x label + distill x the teacher's click
    probability (BCE is linear in its target: the same as mixing the two losses)."""
    tables, rest = table_parameters(model)
    sparse_opt, dense_opt = optimizers or (RowWiseAdagrad(tables, lr=lr), torch.optim.Adam(rest, lr=DENSE_LR))
    labels, dense, sparse = data.arrays("train")
    n = len(labels) if max_rows is None else min(max_rows, len(labels))
    model.train()
    bar = tqdm(total=n, desc="train criteo", unit="row", unit_scale=True, disable=not progress)
    started, cpu_started, seen = time.perf_counter(), time.process_time(), 0
    for start in range(0, n, WINDOW):
        stop = min(n, start + WINDOW)
        y = torch.from_numpy(np.array(labels[start:stop]))
        x = torch.from_numpy(np.array(dense[start:stop]))
        s = torch.from_numpy(np.array(sparse[start:stop]).astype(np.int64))
        for rows in torch.from_numpy(rng.permutation(stop - start)).split(batch_size):
            target = y[rows]
            if teacher is not None and distill:
                with torch.no_grad():
                    target = (1 - distill) * target + distill * torch.sigmoid(teacher(x[rows], s[rows]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[rows], s[rows]), target)
            sparse_opt.zero_grad(set_to_none=True)
            dense_opt.zero_grad(set_to_none=True)
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
            seen += len(rows)
            bar.update(len(rows))
    bar.close()
    model.eval()
    return TrainStats(seen, time.perf_counter() - started, time.process_time() - cpu_started)


@torch.no_grad()
def predict_logits(model, data: PreparedCriteo, part: str, batch_size: int = 65536) -> np.ndarray:
    model.eval()
    _, dense, sparse = data.arrays(part)
    out = [model(torch.from_numpy(np.array(dense[i:i + batch_size])),
                 torch.from_numpy(np.array(sparse[i:i + batch_size]).astype(np.int64))).numpy()
           for i in range(0, len(dense), batch_size)]
    return np.concatenate(out)


def part_metrics(labels: np.ndarray, logits: np.ndarray) -> dict:
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return {"auc": auc(labels, logits), "logloss": logloss(labels, p), "rows": len(labels)}


def baselines(data: PreparedCriteo) -> dict:
    labels = np.asarray(data.arrays("test")[0])
    train_rate = float(np.asarray(data.arrays("train")[0]).mean())
    out = {"click_rate": {"test": {"auc": 0.5, "logloss": logloss(labels, np.full(len(labels), train_rate))}}}
    truth = data.truth("test")
    if truth is not None:
        bayes = data.meta["bayes_auc"]["test"]
        out["bayes_truth"] = {"test": {"auc": bayes, "logloss": logloss(labels, np.asarray(truth))}}
    return out


def check_data(ds) -> PreparedCriteo:
    if not isinstance(ds, PreparedCriteo):
        raise ValueError(f"the criteo_ctr task trains on Criteo-format rows; dataset {ds.name!r} is not "
                         "(use --dataset criteo, optionally with --data-path to your TSV files)")
    return ds


@register_task("criteo_ctr")
def run(config: TrainConfig, ds, progress: bool = True) -> TrainResult:
    data = check_data(ds)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model_args = {"rows_per_field": list(data.rows_per_field), "dim": config.dim}
    model = build_model(config.model, **model_args)
    tables, rest = table_parameters(model)
    optimizers = (RowWiseAdagrad(tables, lr=config.lr), torch.optim.Adam(rest, lr=DENSE_LR))
    valid_labels = np.asarray(data.arrays("valid")[0])
    best, best_state, best_epoch, stats, epochs_run = -1.0, None, 0, [], 0
    for epoch in range(1, config.epochs + 1):
        stats.append(train_rows(model, data, config.lr, config.batch_size, rng, optimizers=optimizers,
                                progress=progress))
        epochs_run = epoch
        metric = auc(valid_labels, predict_logits(model, data, "valid"))
        if metric > best:
            best, best_epoch = metric, epoch
            best_state = copy.deepcopy(model.state_dict()) if config.epochs > 1 else None
        elif epoch - best_epoch >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    metrics = {part: part_metrics(np.asarray(data.arrays(part)[0]), predict_logits(model, data, part))
               for part in ("valid", "test")}
    rows = sum(s.rows for s in stats)
    seconds = sum(s.seconds for s in stats)
    weight_bytes = sum(p.numel() * 4 for p in tables)
    return TrainResult(model=model, model_args=model_args, metrics=metrics, baselines=baselines(data),
                       protocol=PROTOCOL, epochs_run=epochs_run, best_epoch=best_epoch,
                       extra={"train_samples_per_s": round(rows / seconds, 1) if seconds else 0.0,
                              "embedding_rows": data.n_items, "embedding_bytes_fp32": weight_bytes,
                              "torch_threads": torch.get_num_threads()})
