"""A/B routing and shadow scoring between two entries of one server.

    router = ABRouter("127.0.0.1:8001", champion="recommend", challenger="recommend_int8", share=0.1)
    ids, scores, arm = router.recommend([42, 7], k=10)        # arm[i]: 0 champion, 1 challenger
    shadow = ABRouter(url, "recommend", "recommend_int8", shadow=True)
    shadow.recommend(users, 10); shadow.wait(); shadow.stats.summary()   # overlap@K, rank corr., drift

Routing is by a stable hash of (salt, user id): a user stays in one arm across requests,
processes and restarts, and a new salt reshuffles everyone. In shadow mode every user is
answered by the champion; the challenger gets the same request on a background thread (its
answer is never served, its latency never adds to the served one) and the two lists are
compared: overlap@K (shared items / K), Spearman's rank correlation over the union of the
two lists (an item missing from a list ranks K+1 there), and score drift (mean |score
difference| over shared items).
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from recdeploy.clients.triton_client import RecommendClient


def arm_of(user_ids: Sequence[int], salt: str, share: float) -> np.ndarray:
    """1 for the users the challenger answers (about ``share`` of them), 0 otherwise; stable."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"challenger share must be between 0 and 1, got {share}")
    out = np.zeros(len(user_ids), dtype=np.int64)
    for i, user in enumerate(user_ids):
        digest = hashlib.sha256(f"{salt}:{int(user)}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2.0 ** 64 < share
    return out


def compare_lists(ids_a: np.ndarray, scores_a: np.ndarray, ids_b: np.ndarray,
                  scores_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: overlap@K, Spearman rank correlation over the union, mean |score drift| on shared items."""
    k = ids_a.shape[1]
    overlap, rho, drift = np.zeros(len(ids_a)), np.zeros(len(ids_a)), np.full(len(ids_a), np.nan)
    for row, (a, b) in enumerate(zip(ids_a.tolist(), ids_b.tolist())):
        rank_a, rank_b = {item: r for r, item in enumerate(a)}, {item: r for r, item in enumerate(b)}
        shared = set(rank_a) & set(rank_b)
        overlap[row] = len(shared) / k
        union = sorted(set(rank_a) | set(rank_b))
        x = np.array([rank_a.get(i, k) for i in union], dtype=np.float64)
        y = np.array([rank_b.get(i, k) for i in union], dtype=np.float64)
        rho[row] = 1.0 if np.array_equal(x, y) else float(np.corrcoef(x, y)[0, 1])
        if shared:
            drift[row] = float(np.mean([abs(scores_a[row, rank_a[i]] - scores_b[row, rank_b[i]]) for i in shared]))
    return overlap, rho, drift


@dataclass
class ShadowStats:
    rows: int = 0
    overlap: list[float] = field(default_factory=list)
    rho: list[float] = field(default_factory=list)
    drift: list[float] = field(default_factory=list)
    errors: int = 0

    def add(self, overlap, rho, drift) -> None:
        self.rows += len(overlap)
        self.overlap += list(overlap)
        self.rho += list(rho)
        self.drift += [d for d in drift if np.isfinite(d)]

    def as_dict(self) -> dict[str, float]:
        return {"rows": self.rows, "overlap_at_k": float(np.mean(self.overlap)) if self.overlap else float("nan"),
                "spearman": float(np.mean(self.rho)) if self.rho else float("nan"),
                "score_drift": float(np.mean(self.drift)) if self.drift else float("nan"),
                "identical_lists": float(np.mean(np.array(self.overlap) == 1.0)) if self.overlap else float("nan"),
                "shadow_errors": self.errors}

    def summary(self) -> str:
        d = self.as_dict()
        return (f"shadow over {d['rows']} rows: overlap@K {d['overlap_at_k']:.3f}, Spearman {d['spearman']:.3f}, "
                f"score drift {d['score_drift']:.4f}, identical lists {d['identical_lists']:.1%}")


class ABRouter:
    """Route users between ``champion`` and ``challenger`` on one server, or shadow the challenger."""

    def __init__(self, url: str, champion: str, challenger: str, share: float = 0.5, salt: str = "ab",
                 shadow: bool = False, protocol: str = "grpc", shadow_share: float = 1.0,
                 client_factory=RecommendClient):
        """shadow_share: the users (by the same kind of stable hash) whose requests are also
        scored by the challenger; below 1 it bounds what the shadow costs the server."""
        arm_of([], salt, share)   # validates the shares
        arm_of([], salt, shadow_share)
        self.url, self.protocol, self.salt, self.share, self.shadow = url, protocol, salt, share, shadow
        self.shadow_share, self.client_factory = shadow_share, client_factory
        self.models = (champion, challenger)
        self.local = threading.local()
        self.stats = ShadowStats()
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow") if shadow else None
        self.pending: list[Future] = []

    def _client(self, arm: int) -> RecommendClient:
        clients = getattr(self.local, "clients", None)
        if clients is None:
            clients = self.local.clients = [self.client_factory(self.url, self.protocol, model=m)
                                            for m in self.models]
        return clients[arm]

    def recommend(self, user_ids: Sequence[int], k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        users = np.asarray(user_ids, dtype=np.int64)
        arms = np.zeros(len(users), np.int64) if self.shadow else arm_of(users.tolist(), self.salt, self.share)
        ids = np.full((len(users), k), -1, np.int64)
        scores = np.zeros((len(users), k), np.float32)
        for arm in (0, 1):
            rows = np.flatnonzero(arms == arm)
            if len(rows):
                ids[rows], scores[rows] = self._client(arm).recommend(users[rows].tolist(), k)
        if self.pool is not None:
            rows = np.flatnonzero(arm_of(users.tolist(), f"{self.salt}/shadow", self.shadow_share))
            if len(rows):
                future = self.pool.submit(self._shadow, users[rows], k, ids[rows], scores[rows])
                with self.lock:
                    self.pending.append(future)
        return ids, scores, arms

    def _shadow(self, users: np.ndarray, k: int, ids: np.ndarray, scores: np.ndarray) -> None:
        try:
            got_ids, got_scores = self._client(1).recommend(users.tolist(), k)
        except Exception:
            with self.lock:
                self.stats.errors += 1
            return
        result = compare_lists(ids, scores, got_ids, got_scores)
        with self.lock:
            self.stats.add(*result)

    def wait(self) -> ShadowStats:
        """Let every shadow request finish; returns the comparison so far."""
        with self.lock:
            pending, self.pending = self.pending, []
        for future in pending:
            future.result()
        return self.stats

    def close(self) -> None:
        if self.pool is not None:
            self.wait()
            self.pool.shutdown()
