"""Retrieval on a random 8:1:1 split, full ranking: RecBole's "general" ML-1M benchmark protocol.

    recdeploy train --model neumf --dataset ml-1m --out runs/neumf-ml1m
    recdeploy train --model two_tower_features --dataset ml-1m --out runs/two_tower_features-ml1m

Protocol (fixed, so results compare with the published anchors): ratings >= 3 kept as
implicit positives; each user's interactions shuffled (seeded) and split 8:1:1 into train /
validation / test (RecBole ``RS`` with ``group_by: user``). A user has several test items:
the model ranks every item in the catalogue, the user's train (and, for test, validation)
items excluded, and NDCG@10 / HR@10 / Recall@10 are computed over all of the user's held-out
items, then averaged over users with at least one (RecBole's full-sort evaluation). Early
stopping on validation NDCG@10. The most-popular baseline (train counts) is ranked the same way.
A neighbourhood model (``item_knn``) is fitted once on the training part, in closed form.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, Split, filter_ratings, item_popularity, random_split
from recdeploy.train.loop import FitResult, fit, shuffled_batches
from recdeploy.train.metrics import popularity_scorer
from recdeploy.train.models import build_model
from recdeploy.train.models.neumf import NeuMFConfig
from recdeploy.train.models.two_tower import FeatureTwoTower, encode_side_features
from recdeploy.train.tasks import (
    TrainResult,
    check_part,
    fit_closed_form,
    is_closed_form,
    register_protocol,
    register_task,
)
from recdeploy.train.tasks.retrieval import RetrievalProtocol, model_scorer

MIN_RATING = 3.0
RATIOS = (0.8, 0.1, 0.1)
PROTOCOL = {"split": "ratings >= 3 kept; random 8:1:1 per user (seeded)",
            "protocol": "full ranking over all items, the user's earlier-split items excluded; "
                        "metrics over all of a user's held-out items, averaged over users"}


@dataclass(frozen=True)
class MultiTargetMetrics:
    ndcg_at_10: float
    hr_at_10: float
    recall_at_10: float
    n_users: int

    def as_dict(self) -> dict:
        return {"ndcg@10": round(self.ndcg_at_10, 4), "hr@10": round(self.hr_at_10, 4),
                "recall@10": round(self.recall_at_10, 4), "users": self.n_users}


def _csr(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((items, users))
    return np.searchsorted(users[order], np.arange(n_users + 1)), items[order]


def evaluate_multi_target(score_users: Callable[[np.ndarray], np.ndarray], n_users: int,
                          target_users: np.ndarray, target_items: np.ndarray,
                          exclude_users: np.ndarray, exclude_items: np.ndarray, k: int = 10,
                          batch_size: int = 256) -> MultiTargetMetrics:
    """Full-ranking @k where each user has a set of held-out items.

    score_users(user indices B) -> B x I. (target_users, target_items) are the held-out pairs;
    (exclude_users, exclude_items) the pairs removed from ranking (targets never are). Per user:
    DCG = sum over hits at 0-based position p of 1/log2(p+2), IDCG = the same for min(#targets,
    k) hits at the top; HR = any hit; Recall = hits / #targets. Ties count against the targets.
    """
    t_ptr, t_items = _csr(target_users, target_items, n_users)
    e_ptr, e_items = _csr(exclude_users, exclude_items, n_users)
    evaluated = np.flatnonzero(np.diff(t_ptr) > 0)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discount)
    ndcg, hr, recall = [], [], []
    for start in range(0, len(evaluated), batch_size):
        batch = evaluated[start:start + batch_size]
        scores = np.asarray(score_users(batch), dtype=np.float64).copy()
        is_target = np.zeros(scores.shape, dtype=bool)
        for row, u in enumerate(batch):
            scores[row, e_items[e_ptr[u]:e_ptr[u + 1]]] = -np.inf
            is_target[row, t_items[t_ptr[u]:t_ptr[u + 1]]] = True
        # a target tied with a non-target ranks below it: nudge targets one float64 ulp down
        # (scores come from float32, so this never crosses another distinct score)
        scores = np.where(is_target, np.nextafter(scores, -np.inf), scores)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1, kind="stable"), 1)
        hits = np.take_along_axis(is_target, top, 1)
        n_targets = is_target.sum(1)
        ndcg.append((hits * discount).sum(1) / ideal[np.minimum(n_targets, k) - 1])
        hr.append(hits.any(1))
        recall.append(hits.sum(1) / n_targets)
    def cat(parts):
        return (np.concatenate(parts) if parts else np.zeros(0))
    ndcg, hr, recall = cat(ndcg), cat(hr), cat(recall)
    def mean(a):
        return (float(a.mean()) if len(a) else 0.0)
    return MultiTargetMetrics(ndcg_at_10=mean(ndcg), hr_at_10=mean(hr), recall_at_10=mean(recall),
                              n_users=len(evaluated))


class RandomSplitProtocol(RetrievalProtocol):
    """ds: the positives only (``protocol_split``), split indexes its rows; every held-out
    item of a user counts. Metrics: MultiTargetMetrics (NDCG@10, HR@10, Recall@10)."""
    task = "retrieval_random"

    def evaluate(self, score, part: str = "test") -> MultiTargetMetrics:
        split = self.split
        rows, seen = ((split.valid, split.train) if check_part(part) == "valid"
                      else (split.test, np.concatenate([split.train, split.valid])))
        ds = self.ds
        return evaluate_multi_target(score, ds.n_users, ds.users[rows], ds.items[rows],
                                     ds.users[seen], ds.items[seen])


def protocol_split(ds: Dataset, seed: int) -> tuple[Dataset, Split]:
    """The protocol's data: the positives (ratings >= 3) and their seeded 8:1:1 per-user split."""
    positives = filter_ratings(ds, MIN_RATING)
    return positives, random_split(positives, RATIOS, seed=seed, by_user=True)


@register_protocol("retrieval_random")
def random_split_protocol(ds: Dataset, seed: int = 0) -> RandomSplitProtocol:
    """seed: the run's, which drew its split."""
    return RandomSplitProtocol(*protocol_split(ds, seed))


def _model_args(config: TrainConfig, ds: Dataset) -> tuple[dict, dict | None]:
    """Builder arguments; models with side features also get their encoded feature codes."""
    args = {"n_users": ds.n_users, "n_items": ds.n_items, "dim": config.dim}
    mlp_dim = getattr(config.options, "mlp_dim", 0)
    if mlp_dim:
        args["mlp_dim"] = mlp_dim
    if config.model != "two_tower_features":
        return args, None
    encoded = encode_side_features(ds)
    return {**args, **encoded["sizes"]}, encoded


def _loss(model, config: TrainConfig, users: torch.Tensor, items: torch.Tensor,
          generator: torch.Generator) -> torch.Tensor:
    """Pairwise models (NeuMF): BCE with ``negatives`` uniform negatives per positive (as in
    its paper), or with ``loss="sampled_softmax"`` a softmax over each positive and
    ``negatives`` uniform items shared by the batch (a negative equal to the row's positive is
    masked). The towers train on the full softmax (``RetrievalProtocol.batch_loss``)."""
    options = config.options
    assert isinstance(options, NeuMFConfig)  # the pairwise model here is NeuMF
    if options.loss == "sampled_softmax":
        negatives = torch.randint(0, model.n_items, (options.negatives,), generator=generator)
        sampled = model.score_items(users, negatives).masked_fill(negatives[None] == items[:, None],
                                                                  float("-inf"))
        logits = torch.cat([model(users, items)[:, None], sampled], 1)
        return (torch.nn.functional.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long))
                + options.reg * model.l2(users, items).mean())
    negatives = torch.randint(0, model.n_items, (len(users) * options.negatives,), generator=generator)
    all_users = torch.cat([users, users.repeat(options.negatives)])
    all_items = torch.cat([items, negatives])
    labels = torch.cat([torch.ones(len(users)), torch.zeros(len(negatives))])
    logits = model(all_users, all_items)
    return (torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
            + options.reg * model.l2(all_users, all_items).mean())


def _pretrain_gmf(model, config: TrainConfig, protocol: RandomSplitProtocol, rng,
                  progress: bool) -> None:
    """NeuMF's GMF branch alone on the exact softmax over the catalogue (model.gmf_scores),
    early-stopped on validation NDCG@10; then the MLP branch's output weights start at zero,
    so joint training starts from exactly the pretrained GMF model."""
    optimizer = torch.optim.Adam(model.gmf_parameters(), lr=config.lr)
    with torch.no_grad():
        model.out.weight[0, model.dim:] = 0.0

    @torch.no_grad()
    def gmf_score(batch: np.ndarray) -> np.ndarray:
        return model.gmf_scores(torch.from_numpy(batch)).numpy()

    users, items = protocol.train_users, protocol.train_items
    options = config.options
    assert isinstance(options, NeuMFConfig)
    fit(model, optimizer, rng, epochs=options.pretrain_epochs,
        batches=shuffled_batches(protocol.n_train, config.batch_size),
        batch_loss=lambda rows: torch.nn.functional.cross_entropy(model.gmf_scores(users[rows]), items[rows]),
        validate=lambda _: protocol.evaluate(gmf_score, "valid").ndcg_at_10, patience=config.patience,
        schedule=config.lr_schedule, progress=progress, desc=f"pretrain {config.model} GMF",
        metric_name="val_ndcg10")
    with torch.no_grad():
        model.out.weight[0, model.dim:] = 0.0


@register_task("retrieval_random")
def run(config: TrainConfig, ds: Dataset, progress: bool = True) -> TrainResult:
    return train(config, *protocol_split(ds, config.seed), progress)


def train(config: TrainConfig, ds: Dataset, split: Split, progress: bool = True) -> TrainResult:
    """ds holds only the positives; split indexes its rows."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    if is_closed_form(config):     # a neighbourhood model (item_knn): fitted once, no epochs
        knn, knn_args = fit_closed_form(config, ds, split.train)
        return _result(knn, knn_args, RandomSplitProtocol(ds, split), FitResult(0, 0, None), started)
    model_args, encoded = _model_args(config, ds)
    model = build_model(config.model, **model_args)
    if encoded is not None:
        assert isinstance(model, FeatureTwoTower)  # the model with side features
        model.set_features(encoded)
    pairwise = hasattr(model, "l2")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=0.0 if pairwise else config.weight_decay)
    protocol = RandomSplitProtocol(ds, split)
    users, items = protocol.train_users, protocol.train_items

    def batch_loss(rows: torch.Tensor) -> torch.Tensor:
        if pairwise:
            return _loss(model, config, users[rows], items[rows], generator)
        return protocol.batch_loss(model, rows)

    pretrain = getattr(config.options, "pretrain_epochs", 0)
    if pretrain:
        _pretrain_gmf(model, config, protocol, rng, progress)
    # after a pretraining, the joint phase keeps the pretrained model unless it beats it
    fitted = fit(model, optimizer, rng, epochs=config.epochs,
                 batches=shuffled_batches(protocol.n_train, config.batch_size), batch_loss=batch_loss,
                 validate=protocol.validation_metric, patience=config.patience,
                 validate_start=bool(pretrain), schedule=config.lr_schedule, progress=progress,
                 desc=f"train {config.model}", metric_name="val_ndcg10")
    return _result(model, model_args, protocol, fitted, started)


def _result(model, model_args: dict, protocol: RandomSplitProtocol, fitted: FitResult,
            started: float) -> TrainResult:
    """The fitted model's valid and test metrics beside the most-popular baseline's."""
    valid = protocol.evaluate(model_scorer(model), "valid")
    test = protocol.evaluate(model_scorer(model), "test")
    pop_test = protocol.evaluate(popularity_scorer(item_popularity(protocol.ds, protocol.split.train)), "test")
    return TrainResult(model=model, model_args=model_args,
                       metrics={"valid": valid.as_dict(), "test": test.as_dict()},
                       baselines={"most_popular": {"test": pop_test.as_dict()}}, protocol=PROTOCOL,
                       epochs_run=fitted.epochs_run, best_epoch=fitted.best_epoch,
                       seconds=time.perf_counter() - started)
