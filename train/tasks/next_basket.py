"""Next basket (grocery): which products a user buys in their next order.

    recdeploy train --model basket_knn --dataset instacart --out runs/basket_knn-instacart
    recdeploy train --model two_tower --task next_basket --dataset instacart --out runs/two_tower-instacart
    recdeploy train --model sasrec --task next_basket --dataset instacart --out runs/sasrec-instacart

Split, metrics and baselines: ``basket_protocol.py`` (last basket test, the one before
validation, full ranking with bought items kept). Every model is measured beside the two
baselines by the same code: global popularity (purchase counts in the history) and the
user's own recency-weighted purchase frequency (P-TopFreq: ``basket_knn`` with alpha = 1,
its decay chosen on validation), which published next-basket work finds hard to beat.

Models:
- ``basket_knn``: personal frequency blended with item-kNN over basket co-occurrence; no
  gradient training: neighbours come from the training baskets and (neighbours, decay,
  alpha) are chosen on the validation basket from a small grid (unless given). The card
  also reports pure item-kNN (alpha = 0) and the paired difference to P-TopFreq.
- ``two_tower``: user and item embeddings, full softmax over the catalogue on every
  training purchase (a product bought five times is five examples).
- ``sasrec``: the product sequence in time and cart order, next-product full softmax;
  its history for test is every product before the test basket.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from recdeploy.train.baskets import UserHistories, basket_rows
from recdeploy.train.config import ConfigError, TrainConfig
from recdeploy.train.data import Dataset
from recdeploy.train.loop import fit, shuffled_batches
from recdeploy.train.memory import keep_freed_memory
from recdeploy.train.models import build_model
from recdeploy.train.models.basket_knn import TUNE, BasketKNN, BasketKNNConfig
from recdeploy.train.models.sasrec import SASRec, SASRecConfig
from recdeploy.train.tasks import TrainResult, register_task
from recdeploy.train.tasks.basket_protocol import (
    POP_WEIGHT,
    PROTOCOL,
    BasketMetrics,
    NextBasketProtocol,
    paired_difference,
)
from recdeploy.train.tasks.retrieval import model_scorer as tower_scorer
from recdeploy.train.tasks.sequential import (
    IGNORE,
    chunked_softmax_loss,
    history_tokens,
    length_buckets,
    training_windows,
)
from recdeploy.train.tasks.sequential import model_scorer as sequence_scorer

# the validation grid of basket_knn's settings left at -1
NEIGHBOURS = (20, 100)
DECAYS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.5, 0.3, 0.0)


def knn_scorer(model: BasketKNN, history: UserHistories, batch_size: int = 128) -> Callable:
    """user indices -> B x I scores of ``model`` on each user's rows of ``history``."""
    @torch.no_grad()
    def score(users: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(users), batch_size):
            items, ages = history.padded(users[start:start + batch_size])
            out.append(model(torch.from_numpy(items), torch.from_numpy(ages)).numpy())
        return np.concatenate(out) if out else np.zeros((0, model.n_items), np.float32)
    return score


def _grid(value: float, grid: tuple) -> tuple:
    return grid if value == TUNE else (value,)


@torch.no_grad()
def _parts(model: BasketKNN, history: UserHistories, users: np.ndarray, batch_size: int = 64):
    """(own, near) of ``users`` as float32 [len(users), I] arrays, computed in batches."""
    owns, nears = [], []
    for start in range(0, len(users), batch_size):
        own, near = model.parts(*(torch.from_numpy(a) for a in history.padded(users[start:start + batch_size])))
        owns.append(own.numpy())
        nears.append(near.numpy())
    return np.concatenate(owns), np.concatenate(nears)


def _blend(own: np.ndarray, near: np.ndarray, prior: np.ndarray, alpha: float, position: np.ndarray) -> Callable:
    """user indices -> alpha * own + (1 - alpha) * near + prior, rows found by ``position``."""
    def score(users: np.ndarray) -> np.ndarray:
        rows = position[users]
        return alpha * own[rows] + (1 - alpha) * near[rows] + prior
    return score


def _tune_knn(config: TrainConfig, ds: Dataset, proto: NextBasketProtocol, progress: bool):
    """-> (the chosen model, the best pure item-kNN (alpha 0) of the grid, the grid's results)."""
    options = config.options
    assert isinstance(options, BasketKNNConfig)  # the tuner of the basket_knn model
    baskets = basket_rows(ds, proto.split.train, proto.index)
    popularity = np.bincount(ds.items[proto.split.train], minlength=ds.n_items)
    valid = proto.parts["valid"]
    position = np.zeros(ds.n_users, dtype=np.int64)
    position[valid.users] = np.arange(len(valid.users))
    results: list[tuple[float, int, float, float]] = []   # (recall, neighbours, decay, alpha)
    for n in _grid(float(options.neighbours), NEIGHBOURS):
        model = BasketKNN(ds.n_items, int(n), pop_weight=POP_WEIGHT).fit(baskets, popularity)
        prior = POP_WEIGHT * model.popularity.numpy()
        for decay in _grid(options.decay, DECAYS):
            model.decay = decay
            own, near = _parts(model, valid.history, valid.users)
            for alpha in _grid(options.alpha, ALPHAS):
                recall = proto.evaluate(_blend(own, near, prior, alpha, position), "valid").recall_at_10
                results.append((recall, int(n), decay, alpha))
                if progress:
                    print(f"  neighbours {n:>4} decay {decay:.2f} alpha {alpha:.2f}: "
                          f"valid recall@10 {recall:.4f}", flush=True)

    def build(n: int, decay: float, alpha: float) -> BasketKNN:
        return BasketKNN(ds.n_items, n, alpha, decay, POP_WEIGHT).fit(baskets, popularity).eval()

    def best(rows):
        # ties: the simpler model (more weight on the user's own purchases, fewer neighbours)
        return max(rows, key=lambda r: (r[0], r[3], -r[1]))

    chosen = build(*best(results)[1:])
    knn_best = [r for r in results if r[3] == 0.0] or [(0.0, chosen.neighbours, chosen.decay, 0.0)]
    grid = [{"neighbours": n, "decay": d, "alpha": a, "valid_recall@10": round(r, 4)} for r, n, d, a in results]
    return chosen, build(*best(knn_best)[1:]), grid


def train_basket_knn(config: TrainConfig, ds: Dataset, proto: NextBasketProtocol, progress: bool) -> TrainResult:
    chosen, knn_only, grid = _tune_knn(config, ds, proto, progress)
    test_history = proto.parts["test"].history
    test = proto.evaluate(knn_scorer(chosen, test_history), "test")
    knn = proto.evaluate(knn_scorer(knn_only, test_history), "test")
    model_args = {"n_items": ds.n_items, "neighbours": chosen.neighbours, "alpha": chosen.alpha,
                  "decay": chosen.decay, "pop_weight": chosen.pop_weight}
    valid = proto.evaluate(knn_scorer(chosen, proto.parts["valid"].history), "valid")
    return _result(chosen, model_args, proto, valid, test, extra={
        "item_knn_only": {"test": knn.as_dict(), "neighbours": knn_only.neighbours, "decay": knn_only.decay},
        "grid": grid})


def train_two_tower(config: TrainConfig, ds: Dataset, proto: NextBasketProtocol, progress: bool) -> TrainResult:
    model_args = {"n_users": ds.n_users, "n_items": ds.n_items, "dim": config.dim}
    model = build_model(config.model, **model_args)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    fitted = fit(model, optimizer, np.random.default_rng(config.seed), epochs=config.epochs,
                 batches=shuffled_batches(proto.n_train, config.batch_size),
                 batch_loss=lambda rows: proto.batch_loss(model, rows), validate=proto.validation_metric,
                 patience=config.patience, schedule=config.lr_schedule, progress=progress,
                 desc=f"train {config.model}", metric_name="val_ndcg10")
    valid = proto.evaluate(tower_scorer(model), "valid")
    test = proto.evaluate(tower_scorer(model), "test")
    return _result(model, model_args, proto, valid, test, fitted=fitted)


def train_sasrec(config: TrainConfig, ds: Dataset, proto: NextBasketProtocol, progress: bool) -> TrainResult:
    keep_freed_memory()
    options = config.options
    assert isinstance(options, SASRecConfig)  # the trainer of the sasrec model
    model_args = {"n_items": ds.n_items, "dim": config.dim, "max_len": options.max_len,
                  "layers": options.layers, "heads": options.heads, "dropout": options.dropout,
                  "output_embedding": options.output_embedding}
    model = build_model(config.model, **model_args)
    assert isinstance(model, SASRec)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    before_valid = proto.parts["valid"].history.sequences()      # exactly the training rows
    tokens = {part: history_tokens(proto.parts[part].history.sequences(), options.max_len)
              for part in ("valid", "test")}
    inputs, targets = (torch.from_numpy(a) for a in training_windows(before_valid, options.max_len))
    lengths = (targets != IGNORE).sum(1).numpy()

    def batch_loss(batch: np.ndarray) -> tuple[torch.Tensor, int]:
        width = max(1, int(lengths[batch].max()))
        index = torch.from_numpy(batch)
        wanted = targets[index, -width:]
        real = wanted != IGNORE
        hidden = model.encode(inputs[index, -width:])[real]
        return chunked_softmax_loss(hidden, model.item_vectors(), wanted[real]), int(real.sum())

    fitted = fit(model, optimizer, np.random.default_rng(config.seed), epochs=config.epochs,
                 batches=lambda rng: length_buckets(lengths, config.batch_size, rng), batch_loss=batch_loss,
                 validate=lambda _: proto.evaluate(sequence_scorer(model, tokens["valid"]), "valid").ndcg_at_10,
                 patience=config.patience, schedule=config.lr_schedule, progress=progress,
                 desc=f"train {config.model}", metric_name="val_ndcg10")
    valid = proto.evaluate(sequence_scorer(model, tokens["valid"]), "valid")
    test = proto.evaluate(sequence_scorer(model, tokens["test"]), "test")
    return _result(model, model_args, proto, valid, test, fitted=fitted,
                   extra={"train_windows": len(inputs)})


TRAINERS: dict[str, Callable[..., TrainResult]] = {
    "basket_knn": train_basket_knn, "two_tower": train_two_tower, "sasrec": train_sasrec}


def _result(model, model_args: dict, proto: NextBasketProtocol, valid: BasketMetrics, test: BasketMetrics,
            fitted=None, extra: dict | None = None) -> TrainResult:
    """The card: the model's metrics, both baselines and its paired difference to P-TopFreq."""
    own, own_decay = _personal_frequency(proto)
    baselines: dict[str, Any] = {
        "most_popular": {"test": proto.popularity_baseline("test").as_dict()},
        "personal_frequency": {"test": own.as_dict(), "decay": own_decay}}
    return TrainResult(model=model.eval(), model_args=model_args,
                       metrics={"valid": valid.as_dict(), "test": test.as_dict()}, baselines=baselines,
                       protocol=PROTOCOL, epochs_run=fitted.epochs_run if fitted else 0,
                       best_epoch=fitted.best_epoch if fitted else 0,
                       extra={"vs_personal_frequency": paired_difference(test, own), **(extra or {})})


def _personal_frequency(proto: NextBasketProtocol) -> tuple[BasketMetrics, float]:
    """P-TopFreq on test, its decay chosen on validation: no neighbours, alpha = 1."""
    ds = proto.ds
    popularity = np.bincount(ds.items[proto.split.train], minlength=ds.n_items)
    best = (-1.0, 1.0)
    model = BasketKNN(ds.n_items, 1, 1.0, 1.0, POP_WEIGHT).fit([], popularity)
    for decay in DECAYS:
        model.decay = decay
        best = max(best, (proto.evaluate(knn_scorer(model, proto.parts["valid"].history), "valid").recall_at_10,
                          decay))
    model.decay = best[1]
    return proto.evaluate(knn_scorer(model, proto.parts["test"].history), "test"), best[1]


@register_task("next_basket")
def run(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    if config.model not in TRAINERS:
        raise ConfigError(f"the next_basket task trains {', '.join(TRAINERS)}, not {config.model!r}")
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    proto = NextBasketProtocol(ds)
    if progress:
        print(f"next_basket: {len(proto.parts['test'].users)} users evaluated, {proto.n_train:,} "
              "training purchases", flush=True)
    result = TRAINERS[config.model](config, ds, proto, progress)
    seconds = time.perf_counter() - started
    result.extra.update({"train_minutes": round(seconds / 60, 2), "n_interactions": ds.n_interactions})
    return replace(result, seconds=seconds)

