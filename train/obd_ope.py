"""Off-policy evaluation on the Open Bandit Dataset: the estimators checked against a policy's
on-policy truth, then the learned ranking valued from uniform-random logs.

    report = ope_report(ds, split, probabilities, arrays, context_index)   # the obd_ctr task calls it

Validation (model-free; every campaign, the whole week): the Bernoulli-TS logging policy is
valued from the *uniform-random* logs with IPS, SNIPS and DR, and compared with the click
rate BTS actually got in its own logs (its on-policy value, with a bootstrap interval). BTS
is not contextual, so its policy is its empirical slot distribution in its own logs,
pi_bts(item | slot, campaign) (time-averaged: BTS's posterior moved during the week). DR's
reward model: item x slot click rates of the random logs, cross-fitted over two halves.

The learned ranking (test period, uniform-random logs): for each logged impression the model
ranks the campaign's items for the context at the served (fixed) slot; the policy puts its
top 3 in slots 1-3, deterministically, so a logged row counts when the policy would have put
the logged item in the logged slot (weight 1 / propensity). DR's reward model is the learned
model itself at the logged slot. Beside it: the most-clicked-items ranking (item click rates
of the training period) the same way, and the logged policies' own on-policy click rates in
the test period. A deterministic policy over ~50 items matches ~2% of the logged rows, so
these intervals are wide: the report says how wide.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recdeploy.train.data import Dataset, Split
from recdeploy.train.datasets.obd import CAMPAIGNS
from recdeploy.train.obd_features import ContextArrays, features
from recdeploy.train.ope import estimate_all, importance_weights, on_policy, slot_positions

SLOTS = 3
RANDOM, BTS = 0, 1


def bts_marginal(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    """pi[slot, item]: how often the BTS logs show each item in each slot (1..3), per slot
    within the item's campaign (rows: BTS rows)."""
    position, campaign = ds.row_features["position"][rows], ds.row_features["campaign"][rows]
    counts = np.zeros((SLOTS + 1, ds.n_items))
    np.add.at(counts, (position, ds.items[rows]), 1.0)
    item_campaign = ds.item_features["campaign"]
    pi = np.zeros_like(counts)
    for c in np.unique(campaign):
        own = item_campaign == c
        totals = counts[:, own].sum(axis=1, keepdims=True)
        pi[:, own] = np.divide(counts[:, own], totals, out=np.zeros_like(counts[:, own]), where=totals > 0)
    return pi


def slot_rates(ds: Dataset, rows: np.ndarray, smoothing: float = 20.0) -> np.ndarray:
    """Smoothed click rate per [slot, item] over rows (toward the rows' mean)."""
    prior = float(ds.ratings[rows].mean()) if len(rows) else 0.0
    shown, clicked = np.zeros((SLOTS + 1, ds.n_items)), np.zeros((SLOTS + 1, ds.n_items))
    np.add.at(shown, (ds.row_features["position"][rows], ds.items[rows]), 1.0)
    np.add.at(clicked, (ds.row_features["position"][rows], ds.items[rows]), ds.ratings[rows])
    return (clicked + smoothing * prior) / (shown + smoothing)


def validate_on_bts(ds: Dataset, n_boot: int = 1000, seed: int = 0) -> dict:
    """BTS's value estimated from the random logs vs its on-policy click rate."""
    policy = ds.row_features["policy"]
    random_rows, bts_rows = np.flatnonzero(policy == RANDOM), np.flatnonzero(policy == BTS)
    pi = bts_marginal(ds, bts_rows)
    slot, item = ds.row_features["position"][random_rows], ds.items[random_rows]
    halves = np.random.default_rng(seed).random(len(random_rows)) < 0.5
    q_logged, q_policy = np.empty(len(random_rows)), np.empty(len(random_rows))
    campaign = ds.row_features["campaign"][random_rows]
    in_campaign = ds.item_features["campaign"][None, :] == np.arange(int(campaign.max()) + 1)[:, None]
    for fold in (False, True):                       # cross-fitting: q from the other half
        q = slot_rates(ds, random_rows[halves != fold])
        expected = (pi * q) @ in_campaign.T          # [slot, campaign]: BTS's expected click rate
        mine = halves == fold
        q_logged[mine] = q[slot[mine], item[mine]]
        q_policy[mine] = expected[slot[mine], campaign[mine]]
    weights = importance_weights(pi[slot, item], ds.row_features["propensity"][random_rows])
    rewards, bts_campaign = ds.ratings[random_rows], ds.row_features["campaign"][bts_rows]

    def versus_truth(mine: np.ndarray, truth_rows: np.ndarray) -> dict:
        estimates = estimate_all(rewards[mine], weights[mine], q_logged[mine], q_policy[mine], n_boot=n_boot,
                                 seed=seed)
        truth = on_policy(ds.ratings[truth_rows], n_boot=n_boot, seed=seed)
        return {"truth_on_policy": truth.to_dict(),
                "estimates": {name: {**e.to_dict(), "covers_truth": e.covers(truth.value)}
                              for name, e in estimates.items()}}

    names = {c: name for c, name in enumerate(CAMPAIGNS)}
    return {"target": "bts (its slot distribution in its own logs)", "logs": "random, all campaigns, whole week",
            **versus_truth(np.ones(len(random_rows), dtype=bool), bts_rows),
            "random_on_policy": on_policy(rewards, n_boot=n_boot, seed=seed).to_dict(),
            "by_campaign": {names.get(int(c), str(c)): versus_truth(campaign == c, bts_rows[bts_campaign == c])
                            for c in np.unique(campaign)}}


def policy_slots(scores: np.ndarray, ds: Dataset) -> np.ndarray:
    """scores [U, I] -> slot [U, C, I]: per context and campaign C, the deterministic top-3
    of that campaign's items (0 = not shown)."""
    item_campaign = ds.item_features["campaign"]
    n_campaigns = int(item_campaign.max()) + 1
    out = np.zeros((len(scores), n_campaigns, ds.n_items), dtype=np.int64)
    for c in range(n_campaigns):
        out[:, c] = slot_positions(np.where(item_campaign[None, :] == c, scores, -np.inf), SLOTS)
    return out


def value_ranking(ds: Dataset, rows: np.ndarray, slots: np.ndarray, q: np.ndarray | None,
                  n_boot: int, seed: int) -> dict:
    """A deterministic ranking (slots [U, C, I]) valued on logged rows; q [U, slot, I] the
    reward model for DR (None: IPS and SNIPS only)."""
    users, items = ds.users[rows], ds.items[rows]
    slot, campaign = ds.row_features["position"][rows], ds.row_features["campaign"][rows]
    target = (slots[users, campaign, items] == slot).astype(np.float64)
    weights = importance_weights(target, ds.row_features["propensity"][rows])
    q_logged = q_policy = None
    if q is not None:
        shown = np.argmax(slots[users, campaign] == slot[:, None], axis=1)   # the item in the logged slot
        q_logged, q_policy = q[users, slot, items], q[users, slot, shown]
    estimates = estimate_all(ds.ratings[rows], weights, q_logged, q_policy, n_boot=n_boot, seed=seed)
    return {"matched_rows": int(target.sum()), "matched_clicks": int(ds.ratings[rows][target > 0].sum()),
            "estimates": {name: e.to_dict() for name, e in estimates.items()}}


def ope_report(ds: Dataset, split: Split, probabilities: Callable[[np.ndarray, np.ndarray], np.ndarray],
               arrays: ContextArrays, context_index: np.ndarray, served_position: int = 1,
               n_boot: int = 1000, seed: int = 0) -> dict:
    """The validation and the learned ranking's value (see the module docstring).
    probabilities(sparse, dense) -> click probabilities; context_index [U, 4]."""
    items = np.arange(1, ds.n_items + 1)
    served = probabilities(*features(arrays, context_index[:, None, :], items[None, :], served_position))
    by_slot = np.stack([np.zeros_like(served)] + [
        probabilities(*features(arrays, context_index[:, None, :], items[None, :], s)) for s in range(1, SLOTS + 1)],
        axis=1)                                                                  # [U, slot, I]
    test = split.test[ds.row_features["policy"][split.test] == RANDOM]
    test_bts = split.test[ds.row_features["policy"][split.test] == BTS]
    train_ctr = slot_rates(ds, split.train).mean(axis=0)                          # item click rate
    popular = np.broadcast_to(train_ctr, served.shape)
    return {
        "validation": validate_on_bts(ds, n_boot, seed),
        "policies": {
            "model": {"policy": f"top-3 of the model's scores at slot {served_position}",
                      **value_ranking(ds, test, policy_slots(served, ds), by_slot, n_boot, seed)},
            "item_ctr": {"policy": "top-3 items by training-period click rate",
                         **value_ranking(ds, test, policy_slots(popular, ds), by_slot, n_boot, seed)}},
        "logged": {"random": on_policy(ds.ratings[test], n_boot=n_boot, seed=seed).to_dict(),
                   "bts": on_policy(ds.ratings[test_bts], n_boot=n_boot, seed=seed).to_dict()},
        "logs": "uniform-random impressions of the test period"}
