"""Retrieval, leave-one-out: full-softmax training, early-stopped on validation NDCG@10.

    recdeploy train --dataset ml-100k --out runs/demo

Validation ranks each user's second-to-last item (training items excluded); test ranks the
last item (training and validation items excluded). The most-popular baseline is scored
the same way, so the two numbers are comparable.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, Split, item_popularity, leave_one_out, seen_items_by_user
from recdeploy.train.loop import fit, shuffled_batches
from recdeploy.train.metrics import RankingMetrics, evaluate_full_ranking, popularity_scorer
from recdeploy.train.models import build_model
from recdeploy.train.tasks import TrainResult, check_part, register_protocol, register_task
from recdeploy.train.tasks.retrieval import RetrievalProtocol, model_scorer

PROTOCOL = {"split": "leave-one-out by timestamp",
            "protocol": "full ranking over all items, the user's known items excluded"}


def evaluation_sets(ds: Dataset, split: Split):
    """(valid users, valid targets, train-seen) and (test users, test targets, train+valid-seen)."""
    seen_train = seen_items_by_user(ds, split.train)
    seen_train_valid = seen_items_by_user(ds, np.concatenate([split.train, split.valid]))
    valid = (ds.users[split.valid], ds.items[split.valid], seen_train)
    test = (ds.users[split.test], ds.items[split.test], seen_train_valid)
    return valid, test


class LeaveOneOutProtocol(RetrievalProtocol):
    """One held-out item per user; metrics: RankingMetrics (HR@10, NDCG@10)."""
    task = "retrieval_loo"

    def __init__(self, ds: Dataset, split: Split):
        super().__init__(ds, split)
        valid, test = evaluation_sets(ds, split)
        self.sets = {"valid": valid, "test": test}

    def evaluate(self, score, part: str = "test") -> RankingMetrics:
        users, targets, seen = self.sets[check_part(part)]
        return evaluate_full_ranking(score, users, targets, seen)


@register_protocol("retrieval_loo")
def leave_one_out_protocol(ds: Dataset, seed: int = 0) -> LeaveOneOutProtocol:
    """seed: unused, the split is by time."""
    return LeaveOneOutProtocol(ds, leave_one_out(ds))


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
    protocol = LeaveOneOutProtocol(ds, split)
    fitted = fit(model, optimizer, rng, epochs=config.epochs,
                 batches=shuffled_batches(protocol.n_train, config.batch_size),
                 batch_loss=lambda rows: protocol.batch_loss(model, rows),
                 validate=protocol.validation_metric, patience=config.patience,
                 schedule=config.lr_schedule, progress=progress, desc=f"train {config.model}",
                 metric_name="val_ndcg10")
    valid = protocol.evaluate(model_scorer(model), "valid")
    test = protocol.evaluate(model_scorer(model), "test")
    popularity = item_popularity(ds, np.concatenate([split.train, split.valid]))
    pop_test = protocol.evaluate(popularity_scorer(popularity), "test")
    return TrainResult(model=model, model_args=model_args,
                       metrics={"valid": valid.as_dict(), "test": test.as_dict()},
                       baselines={"most_popular": {"test": pop_test.as_dict()}}, protocol=PROTOCOL,
                       epochs_run=fitted.epochs_run, best_epoch=fitted.best_epoch,
                       seconds=time.perf_counter() - started)
