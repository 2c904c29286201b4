"""Off-policy estimators on a synthetic contextual bandit whose true policy value is exact."""
import numpy as np
import pytest

from recdeploy.train.ope import (
    OpeError,
    bootstrap,
    doubly_robust,
    estimate_all,
    importance_weights,
    ips,
    on_policy,
    slot_positions,
    snips,
)

CONTEXTS, ACTIONS = 5, 8


@pytest.fixture(scope="module")
def bandit():
    """Click probabilities p[x, a], a uniform logging policy, a softmax target policy, and
    the target's exact value sum_x P(x) sum_a pi(a|x) p(x, a) (contexts uniform)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.3, size=(CONTEXTS, ACTIONS))
    target = np.exp(8 * p) / np.exp(8 * p).sum(axis=1, keepdims=True)
    truth = float(np.mean((target * p).sum(axis=1)))
    n = 60_000
    x = rng.integers(0, CONTEXTS, size=n)
    a = rng.integers(0, ACTIONS, size=n)
    r = (rng.random(n) < p[x, a]).astype(float)
    return {"p": p, "target": target, "truth": truth, "x": x, "a": a, "r": r,
            "pscore": np.full(n, 1 / ACTIONS)}


def test_estimators_recover_the_true_value(bandit):
    b = bandit
    w = importance_weights(b["target"][b["x"], b["a"]], b["pscore"])
    q = b["p"] + 0.05                                       # a biased reward model
    est = estimate_all(b["r"], w, q_logged=q[b["x"], b["a"]], q_policy=(b["target"] * q).sum(1)[b["x"]],
                       n_boot=200)
    for name in ("ips", "snips", "dr"):
        assert est[name].covers(b["truth"]), (name, est[name], b["truth"])
        assert abs(est[name].value - b["truth"]) < 0.01
    # the direct method inherits the model's +0.05 bias; DR removes it
    assert est["dm"].value == pytest.approx(b["truth"] + 0.05, abs=2e-3)   # contexts drawn, not exact
    assert not est["dm"].covers(b["truth"])
    # a perfect reward model leaves DR only the outcome noise: a tighter interval than IPS
    # (by ~1 - CTR here: the clicks' own noise dominates)
    exact = estimate_all(b["r"], w, q_logged=b["p"][b["x"], b["a"]],
                         q_policy=(b["target"] * b["p"]).sum(1)[b["x"]], n_boot=200)
    assert exact["dr"].high - exact["dr"].low < 0.97 * (exact["ips"].high - exact["ips"].low)


def test_wrong_propensities_bias_ips_and_the_interval_shows_it(bandit):
    b = bandit
    w = importance_weights(b["target"][b["x"], b["a"]], b["pscore"] / 2)   # claims half the true pscore
    est = estimate_all(b["r"], w, n_boot=200)
    assert est["ips"].value == pytest.approx(2 * ips(b["r"], importance_weights(
        b["target"][b["x"], b["a"]], b["pscore"])), rel=1e-9)
    assert not est["ips"].covers(b["truth"])
    assert est["snips"].covers(b["truth"])               # a constant factor cancels in SNIPS


def test_logging_policy_evaluates_to_its_on_policy_mean(bandit):
    b = bandit
    w = importance_weights(b["pscore"], b["pscore"])
    assert ips(b["r"], w) == pytest.approx(b["r"].mean()) == pytest.approx(snips(b["r"], w))
    assert on_policy(b["r"], n_boot=100).covers(float(b["p"].mean()))


def test_bootstrap_interval_is_deterministic_and_narrows_with_rows():
    rng = np.random.default_rng(1)
    r = (rng.random(40_000) < 0.1).astype(float)
    small = bootstrap(lambda rewards: float(rewards.mean()), {"rewards": r[:1000]}, n_boot=200)
    large = bootstrap(lambda rewards: float(rewards.mean()), {"rewards": r}, n_boot=200)
    assert small == bootstrap(lambda rewards: float(rewards.mean()), {"rewards": r[:1000]}, n_boot=200)
    assert small.low < small.value < small.high and large.rows == 40_000
    assert (large.high - large.low) < 0.25 * (small.high - small.low)     # ~ 1/sqrt(40)


def test_doubly_robust_is_exact_with_a_perfect_model_and_no_noise():
    q_logged = np.array([0.2, 0.5, 0.1])
    assert doubly_robust(q_logged, np.array([3.0, 0.0, 1.0]), q_logged, np.array([0.4, 0.4, 0.4])) == \
        pytest.approx(0.4)


def test_slot_positions_of_a_deterministic_ranking():
    scores = np.array([[0.1, 0.9, 0.5, -np.inf], [1.0, 1.0, 0.0, 2.0]])
    assert slot_positions(scores, 3).tolist() == [[3, 1, 2, 0], [2, 3, 0, 1]]


@pytest.mark.parametrize("target,pscore,match", [
    ([0.5], [0.0], "propensities must lie in"),
    ([0.5], [1.5], "propensities must lie in"),
    ([1.5], [0.5], "target probabilities must lie in"),
    ([0.5, 0.5], [0.5], "differ in shape"),
])
def test_bad_propensities_are_refused(target, pscore, match):
    with pytest.raises(OpeError, match=match):
        importance_weights(np.array(target), np.array(pscore))


def test_bad_columns_are_refused():
    with pytest.raises(OpeError, match="one value per logged row"):
        estimate_all(np.zeros(3), np.ones(2))
    with pytest.raises(OpeError, match="needs both q_logged and q_policy"):
        estimate_all(np.zeros(3), np.ones(3), q_logged=np.zeros(3))
    with pytest.raises(OpeError, match="no logged rows"):
        estimate_all(np.zeros(0), np.zeros(0))
