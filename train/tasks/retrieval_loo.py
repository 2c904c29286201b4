"""Retrieval, leave-one-out: full-softmax training, early-stopped on validation NDCG@10.

    recdeploy train --dataset ml-100k --out runs/demo

Validation ranks each user's second-to-last item (training items excluded); test ranks the
last item (training and validation items excluded). The most-popular baseline is scored
the same way, so the two numbers are comparable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, Split, item_popularity, leave_one_out, seen_items_by_user
from recdeploy.train.metrics import evaluate_full_ranking, popularity_scorer
from recdeploy.train.models import build_model
from recdeploy.train.tasks import EarlyStopping, run_epoch, TrainResult, register_task

PROTOCOL = {"split": "leave-one-out by timestamp",
            "protocol": "full ranking over all items, the user's known items excluded"}


def _scorer(model: torch.nn.Module):
    @torch.no_grad()
    def score(users: np.ndarray) -> np.ndarray:
        return model.score_all(torch.from_numpy(users)).numpy()
    return score


def evaluation_sets(ds: Dataset, split: Split):
    """(valid users, valid targets, train-seen) and (test users, test targets, train+valid-seen)."""
    seen_train = seen_items_by_user(ds, split.train)
    seen_train_valid = seen_items_by_user(ds, np.concatenate([split.train, split.valid]))
    valid = (ds.users[split.valid], ds.items[split.valid], seen_train)
    test = (ds.users[split.test], ds.items[split.test], seen_train_valid)
    return valid, test


@register_task("retrieval_loo")
def run(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    return train(config, ds, leave_one_out(ds), progress)


def train(config: TrainConfig, ds: Dataset, split: Split, progress: bool = True) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    model_args = {"n_users": ds.n_users, "n_items": ds.n_items, "dim": config.dim}
    model = build_model(config.model, **model_args)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    users = torch.from_numpy(ds.users[split.train])
    items = torch.from_numpy(ds.items[split.train])
    (valid_users, valid_targets, seen_train), (test_users, test_targets, seen_all) = \
        evaluation_sets(ds, split)

    stopper, epoch = EarlyStopping(config.patience), 0
    bar = tqdm(range(1, config.epochs + 1), desc=f"train {config.model}", disable=not progress,
               unit="epoch")
    for epoch in bar:
        loss = run_epoch(model, optimizer, len(users), config.batch_size, rng, lambda batch:
                         torch.nn.functional.cross_entropy(model.score_all(users[batch]), items[batch]))
        model.eval()
        valid = evaluate_full_ranking(_scorer(model), valid_users, valid_targets, seen_train)
        bar.set_postfix(loss=f"{loss:.3f}", val_ndcg10=f"{valid.ndcg_at_10:.4f}")
        if stopper.update(model, valid.ndcg_at_10, epoch):
            break
    stopper.restore(model)
    valid = evaluate_full_ranking(_scorer(model), valid_users, valid_targets, seen_train)
    test = evaluate_full_ranking(_scorer(model), test_users, test_targets, seen_all)
    popularity = item_popularity(ds, np.concatenate([split.train, split.valid]))
    pop_test = evaluate_full_ranking(popularity_scorer(popularity), test_users, test_targets, seen_all)
    return TrainResult(model=model, model_args=model_args,
                       metrics={"valid": valid.as_dict(), "test": test.as_dict()},
                       baselines={"most_popular": {"test": pop_test.as_dict()}}, protocol=PROTOCOL,
                       epochs_run=epoch, best_epoch=stopper.best_epoch, seconds=time.perf_counter() - started)
