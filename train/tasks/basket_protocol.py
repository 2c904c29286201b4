"""The next-basket protocol (grocery): split, metrics and baselines that every model of the
``next_basket`` task is measured with. The task itself (training) is ``next_basket.py``.

    proto = protocol("next_basket", load_dataset("instacart"))
    proto.evaluate(score, "test")     # score(user indices B) -> B x I over the catalogue

Split: per user, the last basket (order) is the test basket, the one before it validation,
the rest train; users with fewer than 3 baskets are never evaluated. The history a model
may read for test is every basket before the test basket (the validation one included);
for validation, the baskets before it. Full ranking over every product; *nothing* is
excluded, since most of a grocery basket is items bought before.

Metrics per user u with target basket T (distinct items) and top-10 list L, averaged over
users: Recall@10 = |L ∩ T| / |T|; NDCG@10 = sum over hits at 0-based position p of
1/log2(p+2), divided by the same sum for min(|T|, 10) hits on top; HR@10 = 1 if L ∩ T is not
empty. Ties count against the targets. Repeat vs explore (Li et al., TOIS 2023): T splits
into the items u bought before (in the history) and the new ones; recall_repeat@10 and
recall_explore@10 are Recall@10 against each part, averaged over the users who have one;
repeat_share@10 is the share of L that u bought before.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recdeploy.train.baskets import UserHistories, basket_index, basket_split, user_histories
from recdeploy.train.data import Dataset
from recdeploy.train.metrics import popularity_scorer
from recdeploy.train.tasks import check_part, register_protocol
from recdeploy.train.tasks.retrieval import RetrievalProtocol

K = 10
PROTOCOL = {"split": "per user, last basket test, the one before validation (Instacart order_number)",
            "protocol": "full ranking over all products, bought items kept (repeats allowed); "
                        "Recall/NDCG/HR@10 over the basket's distinct items, averaged over users"}
# the popularity term only fills a list past the user's own items
POP_WEIGHT = 1e-4


@dataclass(frozen=True)
class BasketMetrics:
    recall_at_10: float
    ndcg_at_10: float
    hr_at_10: float
    recall_repeat: float
    recall_explore: float
    repeat_share: float
    n_users: int
    per_user_recall: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.zeros(0))

    def as_dict(self) -> dict:
        return {"recall@10": round(self.recall_at_10, 4), "ndcg@10": round(self.ndcg_at_10, 4),
                "hr@10": round(self.hr_at_10, 4), "recall_repeat@10": round(self.recall_repeat, 4),
                "recall_explore@10": round(self.recall_explore, 4),
                "repeat_share@10": round(self.repeat_share, 4), "users": self.n_users}


def row_mask(shape: tuple[int, ...], items: list[np.ndarray]) -> np.ndarray:
    """bool B x I, True at row b's ``items[b]``."""
    mask = np.zeros(shape, dtype=bool)
    if items:
        rows = np.repeat(np.arange(len(items)), [len(i) for i in items])
        mask[rows, np.concatenate(items).astype(np.int64)] = True
    return mask


def top_k_lists(scores: np.ndarray, is_target: np.ndarray, k: int = K) -> np.ndarray:
    """B x k item indices, best first; a target tied with a non-target ranks below it
    (targets are nudged one float64 ulp down; scores come from float32)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = np.where(is_target, np.nextafter(scores, -np.inf), scores)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((top, -np.take_along_axis(scores, top, 1)), axis=1)
    return np.take_along_axis(top, order, 1)


def evaluate_baskets(score_users: Callable[[np.ndarray], np.ndarray], users: np.ndarray,
                     targets: list[np.ndarray], bought: list[np.ndarray], k: int = K,
                     batch_size: int = 256) -> BasketMetrics:
    """score_users(user indices B) -> B x I; targets[j] / bought[j]: the distinct target
    items and the items bought before, of users[j] (see the module docstring)."""
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discount)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("recall", "ndcg", "hr", "share", "rep", "exp")}
    for start in range(0, len(users), batch_size):
        rows = slice(start, start + batch_size)
        scores = score_users(users[rows])
        is_target, before = row_mask(scores.shape, targets[rows]), row_mask(scores.shape, bought[rows])
        top = top_k_lists(scores, is_target, k)
        hits = np.take_along_axis(is_target, top, 1)
        n_targets = is_target.sum(1)
        parts["recall"].append(hits.sum(1) / n_targets)
        parts["ndcg"].append((hits * discount).sum(1) / ideal[np.minimum(n_targets, k) - 1])
        parts["hr"].append(hits.any(1))
        parts["share"].append(np.take_along_axis(before, top, 1).mean(1))
        for name, wanted in (("rep", is_target & before), ("exp", is_target & ~before)):
            n_wanted = wanted.sum(1)
            found = np.take_along_axis(wanted, top, 1).sum(1)
            parts[name].append(found[n_wanted > 0] / n_wanted[n_wanted > 0])

    def mean(name: str) -> float:
        values = np.concatenate(parts[name]) if parts[name] else np.zeros(0)
        return float(values.mean()) if len(values) else 0.0
    recall = np.concatenate(parts["recall"]) if parts["recall"] else np.zeros(0)
    return BasketMetrics(recall_at_10=mean("recall"), ndcg_at_10=mean("ndcg"), hr_at_10=mean("hr"),
                         recall_repeat=mean("rep"), recall_explore=mean("exp"), repeat_share=mean("share"),
                         n_users=len(users), per_user_recall=recall.astype(np.float64))


def paired_difference(ours: BasketMetrics, theirs: BasketMetrics, rounds: int = 2000,
                      seed: int = 0) -> dict:
    """Mean per-user Recall@10 difference (ours - theirs) with a 95% bootstrap interval
    over users (the same users resampled for both)."""
    diff = ours.per_user_recall - theirs.per_user_recall
    if not len(diff):
        return {"recall@10": 0.0, "ci95": [0.0, 0.0], "users": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(1)
    def rounded(x) -> float:
        return round(float(x), 4) + 0.0      # + 0.0: no "-0.0" in a card
    return {"recall@10": rounded(diff.mean()),
            "ci95": [rounded(np.quantile(means, 0.025)), rounded(np.quantile(means, 0.975))],
            "users": len(diff)}


@dataclass(frozen=True)
class EvalPart:
    """One evaluation round: who is evaluated, on what, with which history."""
    users: np.ndarray             # internal users with a target basket
    targets: list[np.ndarray]     # distinct target items per evaluated user
    history: UserHistories        # every user's baskets before the target one
    bought: list[np.ndarray]      # distinct items of each evaluated user's history
    popularity: np.ndarray        # float32 [I] purchases in the history rows (all users)


class NextBasketProtocol(RetrievalProtocol):
    """The split, metrics and baselines above. As a RetrievalProtocol (training pairs of
    the train rows, full softmax), it also trains and fine-tunes a two-tower; evaluate(score,
    part): score(user indices B) -> B x I; returns BasketMetrics."""
    task = "next_basket"
    primary_metric = "ndcg@10"

    def __init__(self, ds: Dataset):
        index = basket_index(ds)
        split = basket_split(ds, index)
        super().__init__(ds, split)
        self.index = index
        self.parts = {"valid": self._part(ds, split.valid, user_histories(ds, index, drop_last=2)),
                      "test": self._part(ds, split.test, user_histories(ds, index, drop_last=1))}

    @staticmethod
    def _part(ds: Dataset, rows: np.ndarray, history: UserHistories) -> EvalPart:
        order = np.lexsort((ds.items[rows], ds.users[rows]))
        users, items = ds.users[rows][order], ds.items[rows][order]
        evaluated = np.unique(users)
        bounds = np.searchsorted(users, np.r_[evaluated, ds.n_users])
        targets = [np.unique(items[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        popularity = np.bincount(history.items, minlength=ds.n_items).astype(np.float32)
        return EvalPart(users=evaluated.astype(np.int64), targets=targets, history=history,
                        bought=history.bought(evaluated), popularity=popularity)

    def evaluate(self, score, part: str = "test") -> BasketMetrics:
        p = self.parts[check_part(part)]
        return evaluate_baskets(score, p.users, p.targets, p.bought)

    def popularity_baseline(self, part: str = "test") -> BasketMetrics:
        return self.evaluate(popularity_scorer(self.parts[part].popularity), part)


@register_protocol("next_basket")
def _build(ds: Dataset, seed: int = 0) -> NextBasketProtocol:
    return NextBasketProtocol(ds)
