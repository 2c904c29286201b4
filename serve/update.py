"""Incremental update of a served SASRec: warm-start on new events, gate, publish, roll back.

    result = update_served(repo, model, UpdateConfig(), url="127.0.0.1:8001", since_ts=t)
    recdeploy update --run runs/sasrec --repository repo_next --url 127.0.0.1:8001 --since 975000000

What it does, in order:
1. Read the users whose clicks arrived since ``since_ts`` (the feedback stream) and every
   known user's history from the online store (Redis: what serving reads right now).
2. Hold out each changed user's newest item; warm-start a copy of the current model for a
   few epochs over the changed users' last windows plus a replay sample of other users'
   (so yesterday's knowledge is not forgotten). Minutes on 2 cores, not a retrain.
3. Gate: NDCG@10 on the held-out items (the newest behaviour, not seen in fine-tuning), the
   user's seen items masked as serving does. Publish only when at least ``min_users`` users
   were held out (fewer is no evidence either way) and the candidate is no worse than the
   served model *and* than the frozen one (the run's original training) by more than
   ``budget`` (absolute NDCG): daily updates cannot drift below the frozen model step by step.
4. Publish the ONNX scorer (parity-checked) as a new version through ``swap.publish_version``
   (explicit model control: staged, renamed, manifest, load), then the start-up canary
   (served == in-process). A canary failure rolls the version back on its own.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recdeploy.clients.feedback import read_events
from recdeploy.export.feature_store import StoreSpec
from recdeploy.export.scenarios.sequential import (
    SCORER,
    SequentialInProcess,
    check_scorer,
    export_scorer_onnx,
    parity_cases_of,
)
from recdeploy.serve.canary import CanaryError, run_canary
from recdeploy.serve.swap import SwapError, publish_version, rollback
from recdeploy.train.metrics import rank_of_target
from recdeploy.train.models.sasrec import SASRec
from recdeploy.train.tasks.sequential import (
    chunked_softmax_loss,
    history_tokens,
    length_buckets,
    training_windows,
)


@dataclass(frozen=True)
class UpdateConfig:
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 128
    # other users' last windows per changed user, replayed so old behaviour is kept
    replay_ratio: float = 2.0
    # the candidate may lose at most this much held-out NDCG@10 against the served model
    budget: float = 0.005
    # fewer held-out users than this: the gate has no evidence, nothing is published
    min_users: int = 20
    seed: int = 0


@dataclass
class UpdateResult:
    users: int                      # users with new clicks
    gate_served: float              # held-out NDCG@10 of the model being served
    gate_candidate: float
    passed: bool
    gate_frozen: float | None = None     # held-out NDCG@10 of the frozen model, when given
    reason: str = ""
    published: int | None = None    # the new scorer version, when published and kept
    rolled_back: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    model: SASRec | None = None   # the candidate (published or not)
    sequences: list[np.ndarray] = field(default_factory=list)   # real histories for the ONNX parity check

    def summary(self) -> str:
        verdict = (f"published as {SCORER} version {self.published}" if self.published else
                   "rolled back after the canary" if self.rolled_back else f"not published ({self.reason})")
        return (f"update over {self.users} users: held-out NDCG@10 served {self.gate_served:.4f} vs "
                f"candidate {self.gate_candidate:.4f} -> {verdict}; "
                + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))


def store_sequences(recommender: SequentialInProcess, users: np.ndarray) -> list[np.ndarray]:
    """Each user's whole history (internal items, time order) as the online store has it now."""
    rows = recommender.table.fetch(np.asarray(users, dtype=np.int64), ("history",))
    ragged = rows.fields["history"]
    return [ragged.values[s:s + n] for s, n in zip(ragged.starts, ragged.lengths)]


def ndcg_next(model: SASRec, histories: list[np.ndarray], targets: np.ndarray,
              seen: list[np.ndarray], max_len: int) -> float:
    """Mean NDCG@10 of one target per user after its history, seen items masked (as served)."""
    if not len(targets):
        return 0.0
    with torch.no_grad():
        scores = model.next_item_scores(torch.from_numpy(history_tokens(histories, max_len))).numpy()
    excluded = [np.setdiff1d(s, [t]) for s, t in zip(seen, targets)]
    ranks = rank_of_target(scores, targets, excluded)
    return float(np.mean(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0)))


def warm_start(model: SASRec, sequences: list[np.ndarray], config: UpdateConfig) -> SASRec:
    """A copy of ``model`` fine-tuned on the last window of each sequence (full softmax)."""
    tuned = copy.deepcopy(model).train()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    last = [s[-(tuned.max_len + 1):] for s in sequences if len(s) >= 2]
    inputs, targets = (torch.from_numpy(a) for a in training_windows(last, tuned.max_len))
    lengths = (targets >= 0).sum(1).numpy()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for batch in length_buckets(lengths, config.batch_size, rng):
            width = max(1, int(lengths[batch].max()))
            index = torch.from_numpy(batch)
            wanted = targets[index, -width:]
            real = wanted >= 0
            hidden = tuned.encode(inputs[index, -width:])[real]
            loss = chunked_softmax_loss(hidden, tuned.item_vectors(), wanted[real])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return tuned.eval()


def candidate_update(model: SASRec, recommender: SequentialInProcess, changed: np.ndarray,
                     everyone: np.ndarray, config: UpdateConfig, frozen: SASRec | None = None) -> UpdateResult:
    """Warm-start and gate (steps 1-3); nothing is published. everyone: the store's known
    users (the replay sample is drawn from them)."""
    started = time.perf_counter()
    known = recommender.table.fetch(np.asarray(changed, np.int64), ("history",)).known
    changed = np.asarray(changed, np.int64)[known]
    sequences = store_sequences(recommender, changed)
    keep = [i for i, s in enumerate(sequences) if len(s) >= 3]
    changed, sequences = changed[keep], [sequences[i] for i in keep]
    rng = np.random.default_rng(config.seed)
    others = np.setdiff1d(everyone, changed)
    replay = rng.choice(others, size=min(len(others), int(config.replay_ratio * len(changed))), replace=False)
    replayed = store_sequences(recommender, replay)
    seen = recommender.table.fetch(changed, ("seen",)).fields["seen"]
    seen_lists = [seen.values[s:s + n] for s, n in zip(seen.starts, seen.lengths)]
    held_hist, held_target = [s[:-1] for s in sequences], np.array([s[-1] for s in sequences], np.int64)
    timings = {"read": time.perf_counter() - started}
    started = time.perf_counter()
    tuned = warm_start(model, held_hist + replayed, config) if len(changed) else model
    timings["warm_start"] = time.perf_counter() - started
    served = ndcg_next(model, held_hist, held_target, seen_lists, model.max_len)
    candidate = ndcg_next(tuned, held_hist, held_target, seen_lists, model.max_len)
    baseline = None if frozen is None else ndcg_next(frozen, held_hist, held_target, seen_lists, model.max_len)
    reason = ("" if len(changed) >= config.min_users else
              f"{len(changed)} held-out users < min_users {config.min_users}: no evidence")
    if not reason and candidate < served - config.budget:
        reason = f"candidate loses {served - candidate:.4f} NDCG@10 to the served model (budget {config.budget})"
    if not reason and baseline is not None and candidate < baseline - config.budget:
        reason = f"candidate loses {baseline - candidate:.4f} NDCG@10 to the frozen model (budget {config.budget})"
    return UpdateResult(len(changed), served, candidate, not reason, baseline, reason, seconds=timings, model=tuned,
                        sequences=held_hist + replayed)


def publish_candidate(repo: Path, result: UpdateResult, url: str, retired: Path) -> UpdateResult:
    """Step 4: ONNX (parity-checked) -> new scorer version -> canary; roll back if it fails."""
    started = time.perf_counter()
    assert result.model is not None
    with tempfile.TemporaryDirectory() as tmp:
        cases = parity_cases_of(result.sequences, result.model.max_len)
        path = export_scorer_onnx(result.model, cases["typical"], Path(tmp) / "model.onnx")
        check_scorer(result.model, path, cases)
        version = publish_version(repo, SCORER, {"model.onnx": path}, url)
    try:
        run_canary(repo, url)
        result.published = version
    except (CanaryError, SwapError):
        rollback(repo, SCORER, url, retired)
        result.rolled_back = True
    result.seconds["publish"] = time.perf_counter() - started
    return result


def changed_users(spec: StoreSpec, since_ts: float, until_ts: float = float("inf")) -> np.ndarray:
    """Users with clicks in [since_ts, until_ts) in the feedback stream."""
    return np.unique([e.user for e in read_events(spec, since_ts, until_ts) if e.kind == "click"]).astype(np.int64)
