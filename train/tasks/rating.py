"""Rating prediction (explicit feedback): RMSE on held-out ratings, early-stopped on validation.

    recdeploy train --model biased_mf --dataset ml-1m --out runs/biased_mf-ml1m

Protocol: all ratings shuffled (seeded) and split 80/10/10 into train / validation (early
stopping) / test. The training part has the size of one fold of 5-fold cross-validation,
the protocol of the published anchors (Surprise's SVD rows in ANCHORS.md). Predictions are
clipped to the dataset's rating range, as Surprise does. The baseline is μ + b_u + b_i fitted
on the same training rows (regularised alternating least squares, Surprise's BaselineOnly).

``--task rating_cv`` is the anchors' own protocol, 5-fold cross-validation: the ratings are
shuffled (seeded) into 5 folds; each fold is the test set once. On the other four, one eighth is
held out to choose the number of epochs (early stopping), then the model is refit from scratch
on all four for that many epochs, so it trains on 80 % of the ratings as Surprise's folds do.
The card's test RMSE is the mean over the folds (Surprise reports the mean too), each fold's
value beside it. It costs ten trainings; the checkpoint is the first fold's refit model.

    recdeploy train --model biased_mf --task rating_cv --dataset ml-1m --out runs/biased_mf-cv-ml1m

Neighbourhood models (``user_knn``) are fitted once, in closed form, on the training rows: no
epochs, validation only reported; under rating_cv the refit is a fit on all four folds.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, DatasetError, Split, random_split
from recdeploy.train.loop import FitResult, fit, shuffled_batches
from recdeploy.train.models import build_model
from recdeploy.train.models.biased_mf import BiasedMF, BiasedMFConfig
from recdeploy.train.tasks import TrainResult, fit_closed_form, is_closed_form, register_task

RATIOS = (0.8, 0.1, 0.1)
PROTOCOL = {"split": "random 80/10/10 of all ratings (seeded; train = one 5-fold CV fold's size)",
            "protocol": "RMSE on held-out ratings, predictions clipped to the rating range"}
FOLDS = 5
CV_PROTOCOL = {"split": f"{FOLDS}-fold cross-validation of all ratings (seeded); per fold 1/8 of "
                        "the training folds chooses the epochs, then a refit on all of them",
               "protocol": "RMSE on each held-out fold, predictions clipped to the rating range; "
                           "mean over the folds"}


def cv_splits(n_rows: int, folds: int = FOLDS, seed: int = 0) -> list[Split]:
    """Seeded k-fold splits: fold k is the test rows once; the rest split 7:1 into train / valid."""
    if n_rows < 2 * folds * 8:
        raise DatasetError(f"{folds}-fold cross-validation needs at least {2 * folds * 8} ratings, "
                           f"got {n_rows}")
    parts = np.array_split(np.random.default_rng(seed).permutation(n_rows), folds)
    splits = []
    for k in range(folds):
        rest = np.concatenate([part for j, part in enumerate(parts) if j != k])
        n_valid = len(rest) // 8
        splits.append(Split(train=np.sort(rest[n_valid:]), valid=np.sort(rest[:n_valid]),
                            test=np.sort(parts[k])))
    return splits


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - actual) ** 2)))


def fit_baseline(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int,
                 n_items: int, reg_user: float = 15.0, reg_item: float = 10.0, sweeps: int = 10):
    """μ, b_u, b_i by alternating regularised least squares (Surprise's BaselineOnly defaults)."""
    mu = float(ratings.mean())
    b_u, b_i = np.zeros(n_users), np.zeros(n_items)
    count_u = np.bincount(users, minlength=n_users)
    count_i = np.bincount(items, minlength=n_items)
    for _ in range(sweeps):
        b_i = np.bincount(items, ratings - mu - b_u[users], n_items) / (reg_item + count_i)
        b_u = np.bincount(users, ratings - mu - b_i[items], n_users) / (reg_user + count_u)
    return mu, b_u, b_i


def _predict(model, users: np.ndarray, items: np.ndarray, low: float, high: float,
             batch_size: int = 65536) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            u = torch.from_numpy(users[start:start + batch_size])
            i = torch.from_numpy(items[start:start + batch_size])
            out.append(model(u, i).numpy())
    return np.clip(np.concatenate(out) if out else np.zeros(0), low, high)


@register_task("rating")
def run(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    return train(config, ds, random_split(ds, RATIOS, seed=config.seed), progress)


@register_task("rating_cv")
def run_cv(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    folds = []
    for k, split in enumerate(cv_splits(ds.n_interactions, FOLDS, config.seed)):
        if progress:
            print(f"fold {k + 1}/{FOLDS}: {len(split.train):,} train / {len(split.valid):,} valid / "
                  f"{len(split.test):,} test ratings")
        chosen = train(config, ds, split, progress)
        everything = Split(train=np.sort(np.concatenate([split.train, split.valid])),
                           valid=split.valid, test=split.test)
        refit = train(config, ds, everything, progress, fixed_epochs=chosen.best_epoch)
        folds.append(replace(refit, metrics={**refit.metrics, "valid": chosen.metrics["valid"]},
                             epochs_run=chosen.epochs_run, best_epoch=chosen.best_epoch,
                             seconds=chosen.seconds + refit.seconds))

    def mean_of(results: list[dict]) -> dict:
        rmses = [r["rmse"] for r in results]
        return {"rmse": round(float(np.mean(rmses)), 4), "rmse_std": round(float(np.std(rmses)), 4),
                "folds": rmses}

    first = folds[0]
    return TrainResult(
        model=first.model, model_args=first.model_args,
        metrics={"valid": mean_of([f.metrics["valid"] for f in folds]),
                 "test": {**mean_of([f.metrics["test"] for f in folds]), "ratings": ds.n_interactions}},
        baselines={name: {"test": mean_of([f.baselines[name]["test"] for f in folds])}
                   for name in first.baselines},
        protocol=CV_PROTOCOL, epochs_run=first.epochs_run, best_epoch=first.best_epoch,
        seconds=sum(f.seconds for f in folds),
        extra={"folds": [{"epochs_run": f.epochs_run, "best_epoch": f.best_epoch,
                          "test_rmse": f.metrics["test"]["rmse"]} for f in folds]})


def train(config: TrainConfig, ds: Dataset, split: Split, progress: bool = True,
          fixed_epochs: int | None = None) -> TrainResult:
    """Early-stopped on split.valid; with fixed_epochs, exactly that many epochs on split.train
    and the last weights kept (a refit whose epoch count validation already chose)."""
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    low, high = float(ds.ratings.min()), float(ds.ratings.max())
    tr_u, tr_i, tr_r = ds.users[split.train], ds.items[split.train], ds.ratings[split.train]
    if is_closed_form(config):        # a neighbourhood model: no epochs, nothing to early-stop
        model, model_args = fit_closed_form(config, ds, split.train)
        fitted = FitResult(epochs_run=0, best_epoch=0, best_metric=None)
    else:
        model, model_args, fitted = _fit_biased_mf(config, ds, split, progress, fixed_epochs)

    def evaluate(rows: np.ndarray) -> float:
        return rmse(_predict(model, ds.users[rows], ds.items[rows], low, high), ds.ratings[rows])

    mu, b_u, b_i = fit_baseline(tr_u, tr_i, tr_r, ds.n_users, ds.n_items)
    te_u, te_i, te_r = ds.users[split.test], ds.items[split.test], ds.ratings[split.test]
    baselines = {
        "biases": {"test": {"rmse": round(rmse(np.clip(mu + b_u[te_u] + b_i[te_i], low, high), te_r), 4)}},
        "global_mean": {"test": {"rmse": round(rmse(np.full(len(te_r), mu), te_r), 4)}}}
    return TrainResult(model=model, model_args=model_args,
                       metrics={"valid": {"rmse": round(evaluate(split.valid), 4)},
                                "test": {"rmse": round(evaluate(split.test), 4),
                                         "ratings": int(len(split.test))}},
                       baselines=baselines, protocol=PROTOCOL, epochs_run=fitted.epochs_run,
                       best_epoch=fitted.best_epoch, seconds=time.perf_counter() - started)


def _fit_biased_mf(config: TrainConfig, ds: Dataset, split: Split, progress: bool,
                   fixed_epochs: int | None) -> tuple[BiasedMF, dict, FitResult]:
    """Adam on the squared error plus the per-example L2, early-stopped on split.valid's RMSE."""
    rng = np.random.default_rng(config.seed)
    low, high = float(ds.ratings.min()), float(ds.ratings.max())
    tr_u, tr_i, tr_r = ds.users[split.train], ds.items[split.train], ds.ratings[split.train]
    model_args = {"n_users": ds.n_users, "n_items": ds.n_items, "dim": config.dim,
                  "global_mean": round(float(tr_r.mean()), 6)}
    model = build_model(config.model, **model_args)
    options = config.options
    assert isinstance(model, BiasedMF) and isinstance(options, BiasedMFConfig)  # the rating tasks' model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    users, items, ratings = (torch.from_numpy(a) for a in (tr_u, tr_i, tr_r))

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        u, i = users[batch], items[batch]
        error = model(u, i) - ratings[batch]
        return error.pow(2).mean() + options.reg * model.l2(u, i).mean()

    def valid_rmse(_) -> float:
        return rmse(_predict(model, ds.users[split.valid], ds.items[split.valid], low, high),
                    ds.ratings[split.valid])

    # a refit (fixed_epochs) trains on split.valid too, so it has nothing to validate on
    fitted = fit(model, optimizer, rng, epochs=fixed_epochs or config.epochs,
                 batches=shuffled_batches(len(users), config.batch_size), batch_loss=batch_loss,
                 validate=None if fixed_epochs is not None else valid_rmse,
                 patience=config.patience, higher_is_better=False, schedule=config.lr_schedule,
                 progress=progress, desc=f"train {config.model}", metric_name="val_rmse")
    return model, model_args, fitted
