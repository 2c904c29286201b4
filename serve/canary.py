"""Start-up canary: the served ``recommend`` answer must equal the in-process pipeline's.

    report = run_canary(Path("model_repository"), "127.0.0.1:8001")   # CanaryError if not
    print(report.summary())

`recdeploy serve` runs it before it prints "ready" when the repository holds the
``recommend`` ensemble and ``recdeploy.json``. It catches what a health check cannot: a
server that is up and answers, but wrongly (numpy >= 2 in the stub's environment gives
empty tensors; a stub that imports another numpy; a scorer file that is not the one the
feature arrays were exported with).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENSEMBLE = "recommend"
SCORE_TOLERANCE = 1e-4


class CanaryError(ValueError):
    """The served answer differs from the in-process one (the message shows both)."""


@dataclass(frozen=True)
class CanaryReport:
    users: tuple[int, ...]
    k: int
    max_abs_score_diff: float

    def summary(self) -> str:
        return (f"canary: {ENSEMBLE} for {len(self.users)} users (k={self.k}, incl. one "
                f"unknown) equals the in-process pipeline (max |score diff| "
                f"{self.max_abs_score_diff:.1e})")


def wants_canary(repo: Path) -> bool:
    repo = Path(repo)
    return (repo / ENSEMBLE / "config.pbtxt").is_file() and (repo / "recdeploy.json").is_file()


def latest_version(model_dir: Path) -> int:
    """The highest numeric version folder: what Triton's default "latest 1" policy serves."""
    versions = [int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise CanaryError(f"{model_dir} has no version folder")
    return max(versions)


def canary_users(user_ids: np.ndarray, n: int = 7) -> np.ndarray:
    """``n`` real ids spread over the table, plus one id past the largest (a cold start)."""
    user_ids = np.asarray(user_ids, dtype=np.int64)
    picks = user_ids[np.linspace(0, len(user_ids) - 1, num=min(n, len(user_ids))).astype(int)]
    return np.append(np.unique(picks), user_ids.max() + 1)


def compare(users, served: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray],
            tolerance: float = SCORE_TOLERANCE) -> float:
    """Max |score diff|; CanaryError naming the first user whose list or scores differ."""
    served_ids, served_scores = (np.asarray(a) for a in served)
    want_ids, want_scores = (np.asarray(a) for a in expected)
    if served_ids.shape != want_ids.shape or served_scores.shape != want_scores.shape:
        raise CanaryError(f"served {ENSEMBLE} returned shapes {list(served_ids.shape)} / "
                          f"{list(served_scores.shape)}, in-process {list(want_ids.shape)}; "
                          f"empty tensors usually mean numpy >= 2 in the stub's environment")
    for row, user in enumerate(users):
        got, want = served_scores[row], want_scores[row]
        finite = np.isfinite(want)  # -inf pads the rows of users with few unseen items
        same_pattern = np.array_equal(finite, np.isfinite(got))
        worst = np.max(np.abs(got[finite] - want[finite]), initial=0.0) if same_pattern else np.inf
        if served_ids[row].tolist() != want_ids[row].tolist() or worst > tolerance:
            raise CanaryError(
                f"served {ENSEMBLE} differs from the in-process pipeline for user {int(user)}: "
                f"served {served_ids[row].tolist()} (scores {np.round(served_scores[row], 5).tolist()}), "
                f"expected {want_ids[row].tolist()} (scores {np.round(want_scores[row], 5).tolist()})")
    finite = np.isfinite(want_scores)
    return float(np.max(np.abs(served_scores[finite] - want_scores[finite]), initial=0.0))


def run_canary(repo: Path, grpc_url: str, k: int = 10) -> CanaryReport:
    """Ask the server and the in-process pipeline for the same users; CanaryError if they differ."""
    import onnxruntime as ort

    from recdeploy.clients.triton_client import RecommendClient
    from recdeploy.export.inprocess import InProcessRecommender

    repo = Path(repo)
    reference = InProcessRecommender(repo)
    version = latest_version(repo / "scorer")
    if version != 1:  # InProcessRecommender reads version 1; the server serves the latest
        reference.session = ort.InferenceSession(str(repo / "scorer" / str(version) / "model.onnx"),
                                                 providers=["CPUExecutionProvider"])
    users = canary_users(reference.table.user_ids)
    k = min(k, len(reference.item_ids))
    with RecommendClient(grpc_url, "grpc", model=ENSEMBLE) as client:
        served = client.recommend(users.tolist(), k=k)
    diff = compare(users, served, reference.recommend(users, k=k))
    return CanaryReport(tuple(int(u) for u in users), k, diff)
