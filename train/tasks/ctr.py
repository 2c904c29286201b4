"""CTR on MovieLens: ratings 4-5 are clicks, 1-2 are not, 3 is dropped; random 8:1:1; AUC.

    recdeploy train --model dcn_v2 --dataset ml-1m --out runs/dcn-ml1m

The protocol of RecBole's context-aware benchmark (its DCN-V2 row in ANCHORS.md). Early
stopping on validation AUC; the test split is scored once, at the best epoch. Baselines
under the same split: every item's training click rate (smoothed toward the global rate)
and its training popularity (row count), each used as the score for every user.

Features (built from the training rows only, so nothing leaks from valid/test): user id,
gender, age, occupation, zip prefix, item id (sparse); genres (multi-hot); release year,
log user activity, log item activity (standardized dense). Index 0 is "unknown" in every
field; a small share of training rows has all user fields set to unknown, so the unknown
user row the server uses for cold-start users is trained, not random.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, Split
from recdeploy.train.loop import fit
from recdeploy.train.models import build_model
from recdeploy.train.tasks import TaskProtocol, TrainResult, check_part, register_protocol, register_task

PROTOCOL = {"split": "random 8:1:1 of rated pairs (seeded)",
            "protocol": "CTR: rating >= 4 click, <= 2 no click, 3 dropped; AUC, logloss",
            "filtering": "none"}
ZIP_PREFIX = 3               # US zip codes: the first 3 digits name a sectional centre
UNKNOWN_USER_SHARE = 0.05    # training rows shown with every user field unknown
# the users' attribute columns in Dataset.user_features feeding each sparse field
USER_ATTRIBUTES = {"gender": "gender", "age": "age", "occupation": "occupation", "zip": "zip_code"}


# ---------------------------------------------------------------------------- data

def ctr_rows(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(row indices into ds with rating != 3, labels float32 1 for rating >= 4)."""
    rows = np.flatnonzero(ds.ratings != 3)
    return rows, (ds.ratings[rows] >= 4).astype(np.float32)


def random_split(rows: np.ndarray, seed: int, fractions=(0.8, 0.1, 0.1)) -> Split:
    """A seeded random 8:1:1 split of the given ds rows (each part sorted)."""
    order = np.random.default_rng(seed).permutation(len(rows))
    n_train = int(round(fractions[0] * len(rows)))
    n_valid = int(round(fractions[1] * len(rows)))
    parts = order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]
    return Split(*(np.sort(rows[p]) for p in parts))


def _standardize(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    mask = np.ones(len(values), dtype=bool) if mask is None else mask
    if not mask.any():
        return np.zeros(len(values), dtype=np.float32)
    mean, std = values[mask].mean(), values[mask].std() or 1.0
    return np.where(mask, (values - mean) / std, 0.0).astype(np.float32)


@dataclass(frozen=True)
class CtrTables:
    """Feature rows (row 0 = unknown, row r = internal index r-1) and vocabulary sizes."""
    user_sparse: np.ndarray   # int64 [U+1, 5]
    user_dense: np.ndarray    # float32 [U+1, 1]
    item_sparse: np.ndarray   # int64 [I+1, 1]
    item_genres: np.ndarray   # float32 [I+1, G]
    item_dense: np.ndarray    # float32 [I+1, 2]
    vocab_sizes: dict         # field -> size including the unknown index 0


def build_tables(ds: Dataset, train_rows: np.ndarray) -> CtrTables:
    user_cols, vocab_sizes = [np.arange(1, ds.n_users + 1)], {}
    for field, attribute in USER_ATTRIBUTES.items():
        values = ds.user_features.get(attribute)
        if values is None:
            values = np.array([""] * ds.n_users, dtype=object)
        values = np.array([str(v)[:ZIP_PREFIX] if field == "zip" else str(v) for v in values])
        vocab = sorted(set(values) - {""})
        lookup = {v: k + 1 for k, v in enumerate(vocab)}
        user_cols.append(np.array([lookup.get(v, 0) for v in values], dtype=np.int64))
        vocab_sizes[field] = len(vocab) + 1
    user_activity = np.bincount(ds.users[train_rows], minlength=ds.n_users)
    item_activity = np.bincount(ds.items[train_rows], minlength=ds.n_items)
    genres = ds.item_features.get("genres")
    genres = np.zeros((ds.n_items, 1), np.float32) if genres is None else genres.astype(np.float32)
    year = np.asarray(ds.item_features.get("year", np.zeros(ds.n_items)), dtype=np.float64)
    item_dense = np.stack([_standardize(year, year > 0),
                           _standardize(np.log1p(item_activity))], axis=1)

    def with_unknown_row(table: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((1, table.shape[1]), table.dtype), table])

    return CtrTables(
        user_sparse=with_unknown_row(np.stack(user_cols, axis=1).astype(np.int64)),
        user_dense=with_unknown_row(_standardize(np.log1p(user_activity))[:, None]),
        item_sparse=with_unknown_row(np.arange(1, ds.n_items + 1, dtype=np.int64)[:, None]),
        item_genres=with_unknown_row(genres),
        item_dense=with_unknown_row(item_dense.astype(np.float32)),
        vocab_sizes=vocab_sizes)


def load_tables(model, tables: CtrTables) -> None:
    for name in ("user_sparse", "user_dense", "item_sparse", "item_genres", "item_dense"):
        getattr(model.features, name).copy_(torch.from_numpy(getattr(tables, name)))


# ---------------------------------------------------------------------------- metrics

def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula; tied scores share their average rank."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    average_rank = (starts + ends + 1) / 2.0          # 1-based average rank of each tie group
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(average_rank, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def ctr_metrics(labels: np.ndarray, logits: np.ndarray) -> dict:
    return {"auc": round(auc(labels, logits), 4),
            "logloss": round(logloss(labels, 1 / (1 + np.exp(-logits))), 4), "rows": len(labels)}


def baselines(ds: Dataset, train_rows: np.ndarray, test_rows: np.ndarray, smoothing: float = 10.0) -> dict:
    """Item click rate (smoothed toward the global rate) and item popularity, scored on test."""
    clicks = (ds.ratings[train_rows] >= 4).astype(np.float64)
    counts = np.bincount(ds.items[train_rows], minlength=ds.n_items)
    positives = np.bincount(ds.items[train_rows], weights=clicks, minlength=ds.n_items)
    prior = clicks.mean()
    rate = (positives + smoothing * prior) / (counts + smoothing)
    labels = (ds.ratings[test_rows] >= 4).astype(np.float32)
    items = ds.items[test_rows]
    return {"item_click_rate": {"test": {"auc": round(auc(labels, rate[items]), 4),
                                         "logloss": round(logloss(labels, rate[items]), 4)}},
            "most_popular": {"test": {"auc": round(auc(labels, counts[items]), 4)}}}


# ---------------------------------------------------------------------------- training

@torch.no_grad()
def predict_logits(model, ds: Dataset, rows: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        out.append(model.score_rows(torch.from_numpy(ds.users[batch] + 1),
                                    torch.from_numpy(ds.items[batch] + 1)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@dataclass(frozen=True)
class CtrBatch:
    """Positions in the training rows, and per position whether it is shown with every user
    field unknown (None: none is)."""
    rows: torch.Tensor
    unknown: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)


def unknown_user_batches(n_rows: int, batch_size: int, mask_first: bool = False):
    """rng -> one epoch of CtrBatch: a seeded order of the rows and a seeded unknown-user draw
    (UNKNOWN_USER_SHARE of the rows). mask_first draws the mask before the order: the order
    compress's fine-tunes drew theirs in, kept so their results reproduce."""
    def draw(rng: np.random.Generator) -> list[CtrBatch]:
        if mask_first:
            shown_unknown = rng.random(n_rows) < UNKNOWN_USER_SHARE
            order = rng.permutation(n_rows)
        else:
            order = rng.permutation(n_rows)
            shown_unknown = rng.random(n_rows) < UNKNOWN_USER_SHARE
        unknown = torch.from_numpy(shown_unknown)
        return [CtrBatch(rows, unknown[rows]) for rows in torch.from_numpy(order).split(batch_size)]
    return draw


class CtrProtocol(TaskProtocol):
    """The CTR protocol on one seeded split: feature tables from its training rows, BCE on the
    training rows, AUC / logloss on the held-out ones.

    evaluate(score, part): score(ds row indices R) -> R logits, called on ``rows(part)`` in
    chunks of ``eval_batch``; returns unrounded {"auc", "logloss", "rows"}.
    """
    task = "ctr"
    primary_metric = "auc"
    eval_batch = 8192

    def __init__(self, ds: Dataset, split: Split):
        self.ds, self.split = ds, split
        self.tables = build_tables(ds, split.train)
        self.train_users = torch.from_numpy(ds.users[split.train] + 1)
        self.train_items = torch.from_numpy(ds.items[split.train] + 1)
        self.train_labels = torch.from_numpy(self.labels("train"))

    @property
    def n_train(self) -> int:
        return len(self.train_users)

    def rows(self, part: str) -> np.ndarray:
        """ds row indices of "train", "valid" or "test"."""
        return getattr(self.split, check_part(part, ("train", "valid", "test")))

    def labels(self, part: str) -> np.ndarray:
        return (self.ds.ratings[self.rows(part)] >= 4).astype(np.float32)

    def features(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ds rows -> sparse int64 [R, 6], genres float32 [R, G], dense float32 [R, 3], from the
        tables of this split's training rows (what the model was trained with)."""
        t, users, items = self.tables, self.ds.users[rows] + 1, self.ds.items[rows] + 1
        sparse = np.concatenate([t.user_sparse[users], t.item_sparse[items]], axis=1)
        dense = np.concatenate([t.user_dense[users], t.item_dense[items]], axis=1)
        return sparse, t.item_genres[items], dense.astype(np.float32)

    def trained_on_this_split(self, model) -> bool:
        """The model's tables hold training-row activity counts: do they match this split's?"""
        ours = (model.features.user_dense.numpy(), model.features.item_dense.numpy())
        return all(a.shape == b.shape and np.allclose(a, b, atol=1e-6)
                   for a, b in zip(ours, (self.tables.user_dense, self.tables.item_dense)))

    def batch_loss(self, model, batch: CtrBatch, teacher=None, distill: float = 0.0) -> torch.Tensor:
        users = self.train_users[batch.rows]
        if batch.unknown is not None:
            users = torch.where(batch.unknown, 0, users)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            model.score_rows(users, self.train_items[batch.rows]), self.train_labels[batch.rows])

    def finetune_batches(self, batch_size: int):
        return unknown_user_batches(self.n_train, batch_size, mask_first=True)

    def validation_metric(self, model) -> float:
        return auc(self.labels("valid"), predict_logits(model, self.ds, self.split.valid))

    def evaluate(self, score, part: str = "test") -> dict:
        rows = self.rows(part)
        logits = np.concatenate([np.asarray(score(rows[start:start + self.eval_batch])).reshape(-1)
                                 for start in range(0, len(rows), self.eval_batch)])
        labels = self.labels(part)
        return {"auc": auc(labels, logits),
                "logloss": logloss(labels, 1 / (1 + np.exp(-logits.astype(np.float64)))),
                "rows": len(logits)}


@register_protocol("ctr")
def ctr_protocol(ds: Dataset, seed: int = 0) -> CtrProtocol:
    """seed: the run's, which drew its split."""
    rows, _ = ctr_rows(ds)
    return CtrProtocol(ds, random_split(rows, seed))


@register_task("ctr")
def run(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    rows, _ = ctr_rows(ds)
    return train(config, ds, random_split(rows, config.seed), progress)


def train(config: TrainConfig, ds: Dataset, split: Split, progress: bool = True,
          **model_overrides) -> TrainResult:
    """model_overrides: extra build_model arguments (tests use tiny cross/deep parts)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    protocol = CtrProtocol(ds, split)
    model_args = {"n_users": ds.n_users, "n_items": ds.n_items,
                  "n_genres": protocol.tables.item_genres.shape[1],
                  "vocab_sizes": protocol.tables.vocab_sizes, "dim": config.dim, **model_overrides}
    model = build_model(config.model, **model_args)
    load_tables(model, protocol.tables)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    fitted = fit(model, optimizer, rng, epochs=config.epochs,
                 batches=unknown_user_batches(protocol.n_train, config.batch_size),
                 batch_loss=lambda batch: protocol.batch_loss(model, batch),
                 validate=protocol.validation_metric, patience=config.patience,
                 schedule=config.lr_schedule, progress=progress, desc=f"train {config.model}",
                 metric_name="val_auc")
    metrics = {part: ctr_metrics(protocol.labels(part), predict_logits(model, ds, protocol.rows(part)))
               for part in ("valid", "test")}
    return TrainResult(model=model, model_args=model_args, metrics=metrics,
                       baselines=baselines(ds, split.train, split.test), protocol=PROTOCOL,
                       epochs_run=fitted.epochs_run, best_epoch=fitted.best_epoch,
                       seconds=time.perf_counter() - started)
