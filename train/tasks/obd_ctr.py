"""CTR on the Open Bandit Dataset: a time-based split of logged impressions; AUC and logloss
with bootstrap intervals; off-policy value of the learned ranking (``train/obd_ope.py``).

    recdeploy train --model dcn_v2_context --dataset obd --out runs/obd

Split: impressions in time order (both logging policies, every campaign): the first 70%
train, the next 10% validate (early stopping on logloss), the last 20% test. Clicks are rare
(~0.5%: a test part holds ~60 of them), so every test metric comes with a 95% bootstrap
interval over test impressions: differences inside it are noise.

Features (lookups built from the training rows only): four hashed context features (a value
first seen after the training period reads index 0, "unknown", which training shows on
``UNKNOWN_CONTEXT_SHARE`` of the rows per field so that row is trained), item id, three
hashed item attributes, campaign, slot position (the logged one in training and in the test
metrics; fixed at serving), the item's numeric attribute (dense).

Baselines under the same split: every item's training click rate (smoothed toward the
global rate), item x position click rate, and a logistic regression over the same sparse
fields (one weight per field value, L2).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, Split
from recdeploy.train.loop import fit, shuffled_batches
from recdeploy.train.models import build_model
from recdeploy.train.models.dcn_v2_context import CONTEXT_FIELDS, SERVED_POSITION
from recdeploy.train.obd_features import build_arrays, context_indices, ds_contexts, features, load_arrays, time_split
from recdeploy.train.obd_ope import ope_report
from recdeploy.train.ope import bootstrap
from recdeploy.train.tasks import TrainResult, register_task
from recdeploy.train.tasks.ctr import auc, logloss

PROTOCOL = {"split": "by time: first 70% of impressions train, next 10% valid, last 20% test",
            "protocol": "CTR of logged impressions (position as a feature); AUC, logloss, 95% bootstrap CI",
            "filtering": "none"}
UNKNOWN_CONTEXT_SHARE = 0.05     # per context field: training rows shown with that field unknown
N_BOOT = 500
# one intra-op thread: batches of a few hundred rows through a net this small spend more on
# synchronising two threads than they gain (measured on the shared 2-core box: an epoch took
# 2.1 s on one thread, 50 s on two while other jobs ran)
TRAIN_THREADS = 1


# ---------------------------------------------------------------------------- metrics

def metric_intervals(labels: np.ndarray, probabilities: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """AUC and logloss of click probabilities with 95% bootstrap intervals (resampled rows)."""
    columns = {"labels": labels, "scores": probabilities}
    out: dict = {}
    for name, fn in (("auc", auc), ("logloss", logloss)):
        def stat(labels, scores, fn=fn):
            return fn(labels, scores) if 0 < labels.sum() < len(labels) else float("nan")
        est = bootstrap(stat, columns, n_boot=n_boot, seed=seed)
        out.update({name: round(est.value, 4), f"{name}_low": round(est.low, 4), f"{name}_high": round(est.high, 4)})
    out["rows"], out["clicks"] = len(labels), int(np.sum(labels))
    return out


@torch.no_grad()
def predict(model, sparse: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Click probabilities of feature rows (any leading shape)."""
    model.eval()
    logits = model(torch.from_numpy(sparse), torch.from_numpy(dense)).numpy().astype(np.float64)
    return 1 / (1 + np.exp(-logits))


def rate_baselines(ds: Dataset, split: Split, smoothing: float = 20.0) -> dict[str, np.ndarray]:
    """Test click probabilities of the item and item x position click-rate baselines."""
    clicks, prior = ds.ratings[split.train].astype(np.float64), float(ds.ratings[split.train].mean())
    positions = ds.row_features["position"]
    out = {}
    for name, key in (("item_ctr", ds.items), ("item_position_ctr", ds.items * 4 + positions)):
        size = int(key.max()) + 1
        shown = np.bincount(key[split.train], minlength=size)
        clicked = np.bincount(key[split.train], weights=clicks, minlength=size)
        out[name] = ((clicked + smoothing * prior) / (shown + smoothing))[key[split.test]]
    return out


def logistic_regression(train: tuple[np.ndarray, np.ndarray], test_sparse: np.ndarray, vocab: tuple[int, ...],
                        l2: float = 1e-3, steps: int = 60) -> np.ndarray:
    """One weight per sparse field value plus a bias, fitted by L-BFGS on (sparse, labels):
    test click probabilities."""
    offsets = torch.tensor(np.r_[0, np.cumsum(vocab)[:-1]])
    weights = torch.zeros(int(sum(vocab)), requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    x, y = torch.from_numpy(train[0]) + offsets, torch.from_numpy(train[1].astype(np.float32))
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(weights[x].sum(1) + bias, y)
        loss = loss + l2 * weights.pow(2).sum()
        loss.backward()
        return loss
    optimizer.step(closure)
    with torch.no_grad():
        return torch.sigmoid(weights[torch.from_numpy(test_sparse) + offsets].sum(1) + bias).numpy()


# ---------------------------------------------------------------------------- training

class ObdCtrData:
    """The split's feature rows: sparse/dense per part, labels, and the model's lookups."""

    def __init__(self, ds: Dataset, split: Split):
        self.ds, self.split = ds, split
        self.arrays, self.item_vocab = build_arrays(ds, split.train)
        self.context_index = context_indices(self.arrays, ds_contexts(ds))      # [U, 4]
        self.parts = {part: self.rows(getattr(split, part)) for part in ("train", "valid", "test")}

    def rows(self, rows: np.ndarray, positions=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ds rows -> (sparse, dense, labels) at the logged positions (or the given ones)."""
        positions = self.ds.row_features["position"][rows] if positions is None else positions
        sparse, dense = features(self.arrays, self.context_index[self.ds.users[rows]],
                                 self.ds.items[rows] + 1, positions)
        return sparse, dense, self.ds.ratings[rows].astype(np.float32)

    def model_args(self, dim: int, **overrides) -> dict:
        return {"context_vocab": self.arrays.vocab_sizes, "item_vocab": self.item_vocab,
                "n_items": self.ds.n_items, "n_campaigns": int(self.ds.item_features["campaign"].max()) + 1,
                "dim": dim, **overrides}


def batch_loss_fn(model, sparse: torch.Tensor, dense: torch.Tensor, labels: torch.Tensor, seed: int):
    """BCE on a batch; each context field of a row is shown unknown with UNKNOWN_CONTEXT_SHARE."""
    generator = torch.Generator().manual_seed(seed)

    def loss(batch: torch.Tensor) -> torch.Tensor:
        rows = sparse[batch].clone()
        hide = torch.rand(rows.shape[0], len(CONTEXT_FIELDS), generator=generator) < UNKNOWN_CONTEXT_SHARE
        rows[:, :len(CONTEXT_FIELDS)] = torch.where(hide, 0, rows[:, :len(CONTEXT_FIELDS)])
        return torch.nn.functional.binary_cross_entropy_with_logits(model(rows, dense[batch]), labels[batch])
    return loss


@register_task("obd_ctr")
def run(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    return train(config, ds, time_split(ds), progress)


def start_at_base_rate(model, labels: np.ndarray) -> None:
    """The logit's bias at the training click rate: with ~0.5% clicks, a net starting at
    p = 0.5 spends its first epoch learning only that clicks are rare."""
    rate = float(np.clip(labels.mean(), 1e-4, 1 - 1e-4))
    with torch.no_grad():
        model.over_arch.linear.bias.fill_(float(np.log(rate / (1 - rate))))


@contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(config: TrainConfig, ds: Dataset, split: Split, progress: bool = True, n_boot: int = N_BOOT,
          **model_overrides) -> TrainResult:
    """model_overrides: extra build_model arguments (tests use a tiny cross/deep part)."""
    if "position" not in ds.row_features:
        raise ValueError(f"the obd_ctr task needs logged bandit data (slot positions); {ds.name} has none")
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    data = ObdCtrData(ds, split)
    model_args = data.model_args(config.dim, **model_overrides)
    model = build_model(config.model, **model_args)
    load_arrays(model, data.arrays)
    start_at_base_rate(model, data.parts["train"][2])
    sparse, dense, labels = (torch.from_numpy(a) for a in data.parts["train"])
    valid_sparse, valid_dense, valid_labels = data.parts["valid"]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # early stopping on validation logloss: AUC over the few dozen validation clicks jumps
    # by chance from epoch to epoch, logloss uses every impression
    with torch_threads(TRAIN_THREADS):
        fitted = fit(model, optimizer, np.random.default_rng(config.seed), epochs=config.epochs,
                     batches=shuffled_batches(len(labels), config.batch_size),
                     batch_loss=batch_loss_fn(model, sparse, dense, labels, config.seed),
                     validate=lambda m: logloss(valid_labels, predict(m, valid_sparse, valid_dense)),
                     patience=config.patience, higher_is_better=False, schedule=config.lr_schedule,
                     progress=progress, desc=f"train {config.model}", metric_name="val_logloss")
    test_sparse, test_dense, test_labels = data.parts["test"]
    metrics = {"valid": metric_intervals(valid_labels, predict(model, valid_sparse, valid_dense), n_boot),
               "test": metric_intervals(test_labels, predict(model, test_sparse, test_dense), n_boot)}
    baselines = {name: {"test": metric_intervals(test_labels, p, n_boot)}
                 for name, p in rate_baselines(ds, split).items()}
    vocab = (*data.arrays.vocab_sizes, ds.n_items + 1, *data.item_vocab,
             int(ds.item_features["campaign"].max()) + 2, 4)
    train_sparse, _, train_labels = data.parts["train"]
    baselines["logistic_regression"] = {"test": metric_intervals(
        test_labels, logistic_regression((train_sparse, train_labels), test_sparse, vocab), n_boot)}
    ope = ope_report(ds, split, lambda s, d: predict(model, s, d), data.arrays, data.context_index,
                     SERVED_POSITION, n_boot)
    return TrainResult(model=model, model_args=model_args, metrics=metrics, baselines=baselines,
                       protocol=PROTOCOL, epochs_run=fitted.epochs_run, best_epoch=fitted.best_epoch,
                       seconds=time.perf_counter() - started, extra={"ope": ope})
