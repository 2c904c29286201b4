"""The training loop: full-softmax retrieval on leave-one-out data, early-stopped on validation.

    recdeploy train --dataset ml-100k --out runs/demo

Validation ranks each user's second-to-last item (training items excluded); test ranks the
last item (training and validation items excluded). The most-popular baseline is scored
the same way, so the two numbers are comparable.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, Split, item_popularity, seen_items_by_user
from recdeploy.train.metrics import RankingMetrics, evaluate_full_ranking, popularity_scorer
from recdeploy.train.models import build_model


@dataclass(frozen=True)
class TrainResult:
    model: torch.nn.Module
    valid: RankingMetrics
    test: RankingMetrics
    popularity_test: RankingMetrics
    epochs_run: int
    best_epoch: int
    seconds: float

    def card(self, config: TrainConfig, ds: Dataset) -> dict:
        return {
            "model": config.model, "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(),
            "n_users": ds.n_users, "n_items": ds.n_items, "split": "leave-one-out by timestamp",
            "protocol": "full ranking over all items, the user's known items excluded",
            "metrics": {"valid": self.valid.as_dict(), "test": self.test.as_dict()},
            "baselines": {"most_popular": {"test": self.popularity_test.as_dict()}},
            "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
            "train_seconds": round(self.seconds, 1),
        }


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


def train(config: TrainConfig, ds: Dataset, split: Split, progress: bool = True) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    model = build_model(config.model, n_users=ds.n_users, n_items=ds.n_items, dim=config.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    users = torch.from_numpy(ds.users[split.train])
    items = torch.from_numpy(ds.items[split.train])
    (valid_users, valid_targets, seen_train), (test_users, test_targets, seen_all) = \
        evaluation_sets(ds, split)

    best_ndcg, best_state, best_epoch, stale, epoch = -1.0, None, 0, 0, 0
    bar = tqdm(range(1, config.epochs + 1), desc=f"train {config.model}", disable=not progress,
               unit="epoch")
    for epoch in bar:
        model.train()
        order = torch.from_numpy(rng.permutation(len(users)))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = torch.nn.functional.cross_entropy(model.score_all(users[batch]), items[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        valid = evaluate_full_ranking(_scorer(model), valid_users, valid_targets, seen_train)
        bar.set_postfix(loss=f"{total / len(users):.3f}", val_ndcg10=f"{valid.ndcg_at_10:.4f}")
        if valid.ndcg_at_10 > best_ndcg:
            best_ndcg, best_state, best_epoch, stale = valid.ndcg_at_10, copy.deepcopy(
                model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    valid = evaluate_full_ranking(_scorer(model), valid_users, valid_targets, seen_train)
    test = evaluate_full_ranking(_scorer(model), test_users, test_targets, seen_all)
    popularity = item_popularity(ds, np.concatenate([split.train, split.valid]))
    pop_test = evaluate_full_ranking(popularity_scorer(popularity), test_users, test_targets, seen_all)
    return TrainResult(model=model, valid=valid, test=test, popularity_test=pop_test,
                       epochs_run=epoch, best_epoch=best_epoch,
                       seconds=time.perf_counter() - started)
