"""A/B routing by a stable hash and the shadow comparison's numbers (no server)."""
import numpy as np
import pytest

from recdeploy.clients.router import ABRouter, arm_of, compare_lists


class FakeClient:
    """Answers user u with items u, u+1, ... (champion) or the same shifted by one (challenger)."""

    def __init__(self, url, protocol, model):
        self.shift = 0 if model == "a" else 1

    def recommend(self, users, k):
        ids = np.array([[u + self.shift + j for j in range(k)] for u in users], dtype=np.int64)
        return ids, np.tile(np.arange(k, 0, -1, dtype=np.float32), (len(users), 1))


def test_arms_are_stable_near_the_share_and_reshuffled_by_the_salt():
    users = list(range(20_000))
    arms = arm_of(users, "ab", 0.2)
    assert abs(arms.mean() - 0.2) < 0.01
    assert np.array_equal(arms, arm_of(users, "ab", 0.2))                 # stable
    assert np.array_equal(arm_of(users[::-1], "ab", 0.2), arms[::-1])      # per user, not per position
    assert (arm_of(users, "other", 0.2) != arms).mean() > 0.2               # a new salt reshuffles
    assert not arm_of(users, "ab", 0.0).any() and arm_of(users, "ab", 1.0).all()
    with pytest.raises(ValueError, match="share must be between 0 and 1, got 1.5"):
        arm_of(users, "ab", 1.5)


def test_compare_lists_identical_reversed_and_partly_shared():
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    sa = np.array([[4.0, 3, 2, 1]] * 3, dtype=np.float32)
    b = np.array([[1, 2, 3, 4], [4, 3, 2, 1], [1, 2, 9, 8]])
    sb = np.array([[4.0, 3, 2, 1], [4.0, 3, 2, 1], [4.5, 3, 2, 1]], dtype=np.float32)
    overlap, rho, drift = compare_lists(a, sa, b, sb)
    assert overlap.tolist() == [1.0, 1.0, 0.5]
    assert rho[0] == 1.0 and rho[1] == pytest.approx(-1.0) and 0 < rho[2] < 1
    assert drift[0] == 0.0 and drift[1] == pytest.approx(np.mean([3, 1, 1, 3])) and drift[2] == pytest.approx(0.25)


def test_routing_and_a_sampled_shadow_through_fake_clients():
    users = list(range(400))
    router = ABRouter("x", "a", "b", share=0.25, salt="s", client_factory=FakeClient)
    ids, _, arms = router.recommend(users, 4)
    assert arms.tolist() == arm_of(users, "s", 0.25).tolist()
    assert ids[:, 0].tolist() == [u + a for u, a in zip(users, arms)]
    shadow = ABRouter("x", "a", "b", salt="s", shadow=True, shadow_share=0.5, client_factory=FakeClient)
    ids, _, arms = shadow.recommend(users, 4)
    stats = shadow.wait().as_dict()
    shadow.close()
    assert not arms.any() and ids[:, 0].tolist() == users                  # everyone got the champion
    assert stats["rows"] == int(arm_of(users, "s/shadow", 0.5).sum()) and 150 < stats["rows"] < 250
    assert stats["overlap_at_k"] == 0.75 and stats["score_drift"] == pytest.approx(1.0)
