"""Off-policy evaluation: the value of a target policy from logs another policy collected.

    w = target_prob / pscore                     # per logged row: pi_e(a_i | x_i) / pi_0(a_i | x_i)
    estimates = estimate_all(rewards, w, q_logged=q_hat(a_i), q_policy=sum_a pi_e(a) q_hat(a))
    estimates["snips"].value, estimates["snips"].low, estimates["snips"].high

Pure numpy, one row per logged decision (for a slate of positions, one row per position with
the policies' probabilities of the item *in that position*, as the Open Bandit Dataset logs
them). Estimators (Dudik et al. 2011; Swaminathan & Joachims 2015):

- IPS:   mean(w r), unbiased when the logging propensities are right and cover the target's
  actions, high variance when w is large;
- SNIPS: sum(w r) / sum(w), IPS normalised by the weights' own mean (slightly biased, far
  less variance);
- DM:    mean(q_policy), a reward model's prediction of the target's actions (biased by the
  model, no variance from w);
- DR:    mean(q_policy + w (r - q_logged)), DM corrected by IPS on the model's residuals:
  unbiased if either the propensities or the reward model are right.

Intervals are percentile bootstrap intervals over logged rows (``bootstrap``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


class OpeError(ValueError):
    """Logged data an estimator cannot use (lengths differ, propensities outside (0, 1], ...)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval at ``level``, over ``rows`` logged rows."""
    value: float
    low: float
    high: float
    rows: int
    level: float = 0.95

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def to_dict(self, digits: int = 6) -> dict:
        return {"value": round(self.value, digits), "low": round(self.low, digits),
                "high": round(self.high, digits), "rows": self.rows, "level": self.level}


def importance_weights(target_prob: np.ndarray, pscore: np.ndarray) -> np.ndarray:
    """pi_e(a_i|x_i) / pi_0(a_i|x_i) per logged row; pscore must be the logging policy's
    probability of the logged action, in (0, 1]."""
    target_prob = np.asarray(target_prob, dtype=np.float64)
    pscore = np.asarray(pscore, dtype=np.float64)
    if target_prob.shape != pscore.shape:
        raise OpeError(f"target probabilities {target_prob.shape} and propensities {pscore.shape} differ in shape")
    if np.any(~(pscore > 0)) or np.any(pscore > 1):
        raise OpeError("propensities must lie in (0, 1]: a logged action the logging policy could "
                       "not take has no importance weight")
    if np.any(target_prob < 0) or np.any(target_prob > 1):
        raise OpeError("target probabilities must lie in [0, 1]")
    return target_prob / pscore


def ips(rewards, weights) -> float:
    return float(np.mean(np.asarray(weights) * np.asarray(rewards)))


def snips(rewards, weights) -> float:
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    return float(np.sum(weights * np.asarray(rewards)) / total) if total > 0 else 0.0


def direct(q_policy) -> float:
    return float(np.mean(q_policy))


def doubly_robust(rewards, weights, q_logged, q_policy) -> float:
    rewards, weights = np.asarray(rewards, np.float64), np.asarray(weights, np.float64)
    return float(np.mean(np.asarray(q_policy) + weights * (rewards - np.asarray(q_logged))))


# name -> (estimator, the columns it reads)
ESTIMATORS: dict[str, tuple[Callable[..., float], tuple[str, ...]]] = {
    "ips": (ips, ("rewards", "weights")),
    "snips": (snips, ("rewards", "weights")),
    "dm": (direct, ("q_policy",)),
    "dr": (doubly_robust, ("rewards", "weights", "q_logged", "q_policy")),
}


def _columns(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(value, dtype=np.float64).reshape(-1) for name, value in columns.items()}
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise OpeError(f"every column needs one value per logged row, got lengths {lengths}")
    if not arrays or not next(iter(lengths.values())):
        raise OpeError("no logged rows to estimate from")
    return arrays


def bootstrap(statistic: Callable[..., float], columns: Mapping[str, np.ndarray], n_boot: int = 1000,
              level: float = 0.95, seed: int = 0) -> Estimate:
    """statistic(**columns) on the rows, and its percentile interval over ``n_boot`` resamples
    of the rows with replacement (the same resampled rows for every column)."""
    if n_boot < 10 or not 0 < level < 1:
        raise OpeError(f"need n_boot >= 10 and 0 < level < 1, got {n_boot} and {level}")
    arrays = _columns(columns)
    n = len(next(iter(arrays.values())))
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, n, size=n)
        draws[b] = statistic(**{name: a[pick] for name, a in arrays.items()})
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Estimate(statistic(**arrays), float(low), float(high), n, level)


def estimate_all(rewards, weights, q_logged=None, q_policy=None, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> dict[str, Estimate]:
    """IPS and SNIPS, plus DM and DR when the reward model's predictions are given:
    q_logged (of the logged action) and q_policy (expected under the target policy)."""
    columns = {"rewards": rewards, "weights": weights}
    if (q_logged is None) != (q_policy is None):
        raise OpeError("DR needs both q_logged and q_policy (or neither, for IPS and SNIPS only)")
    if q_logged is not None:
        columns.update(q_logged=q_logged, q_policy=q_policy)
    arrays = _columns(columns)
    if np.any(arrays["weights"] < 0):
        raise OpeError("importance weights must be non-negative")
    return {name: bootstrap(fn, {c: arrays[c] for c in needs}, n_boot, level, seed)
            for name, (fn, needs) in ESTIMATORS.items() if all(c in arrays for c in needs)}


def on_policy(rewards, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Estimate:
    """The mean reward of logs the policy collected itself, with its bootstrap interval."""
    return bootstrap(lambda rewards: float(np.mean(rewards)), {"rewards": rewards}, n_boot, level, seed)


def slot_positions(scores: np.ndarray, slots: int) -> np.ndarray:
    """A deterministic ranking policy: scores [R, A] (-inf: not eligible) -> the 1-based slot
    each action gets, 0 for actions outside the first ``slots``. Ties: the lower action index."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)
    slot = np.zeros(scores.shape, dtype=np.int64)
    top = order[:, :slots]
    rows = np.arange(len(scores))[:, None]
    slot[rows, top] = np.arange(1, top.shape[1] + 1)
    return np.where(np.isfinite(scores), slot, 0)
