"""``recdeploy update``: warm-start the served SASRec on the clicks since T, gate it, publish it.

    recdeploy serve --repository repo_next --model-control-mode explicit &
    recdeploy update --run runs/sasrec --repository repo_next --since 2026-11-28T00:00
    recdeploy update --run runs/sasrec --repository repo_next --since 1764288000 --budget 0.01

The repository must read a Redis store (``export --feature-store``) and its events stream
(``recdeploy feedback``): the users who clicked since ``--since`` are the ones fine-tuned on,
their histories come from the store. The model updated is the newest of ``RUN/updates/<n>``
(each published update is saved there) or RUN's own checkpoint. Exit status: 0 published,
3 the quality gate refused it (nothing changed), 4 the canary failed and it was rolled back.
See serve/update.py for the steps and docs/online-loop.md for measured days.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from recdeploy.export.feature_store import FeatureStoreError, repository_store
from recdeploy.export.scenarios.sequential import SequentialInProcess, history_module
from recdeploy.serve.canary import CanaryError
from recdeploy.serve.swap import SwapError
from recdeploy.serve.update import UpdateConfig, candidate_update, changed_users, publish_candidate
from recdeploy.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from recdeploy.train.models.sasrec import SASRec

PUBLISHED, REFUSED, ROLLED_BACK = 0, 3, 4


def parse_time(text: str) -> float:
    """Seconds since the epoch, or an ISO date/time (UTC unless it names a zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"--since/--until must be seconds since 1970 or an ISO time like "
                         f"2026-11-28T00:00, got {text!r}") from error
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def current_run(run: Path) -> Path:
    """The newest published update of ``run`` (RUN/updates/<n>), else ``run`` itself."""
    updates = [p for p in (Path(run) / "updates").glob("*") if p.name.isdigit() and (p / "checkpoint").is_dir()]
    return max(updates, key=lambda p: int(p.name)) if updates else Path(run)


def run_update(run: Path, repo: Path, url: str, since: float, until: float, config: UpdateConfig,
               retired: Path) -> int:
    source = current_run(run)
    checkpoint = load_checkpoint(source)
    if not isinstance(checkpoint.model, SASRec):
        raise ValueError(f"{source} holds a {checkpoint.config.model} model; the update warm-starts SASRec runs")
    recommender = SequentialInProcess(repo)
    everyone = history_module.load_npy(str(sorted(Path(repo).glob("history_lookup/[0-9]*"))[0]), "user_ids")
    changed = changed_users(repository_store(repo), since, until)
    print(f"{len(changed)} users clicked since {datetime.fromtimestamp(since, timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"updating {source}")
    frozen = load_checkpoint(run).model if source != Path(run) else None
    result = candidate_update(checkpoint.model, recommender, changed, np.asarray(everyone, np.int64), config,
                              frozen if isinstance(frozen, SASRec) else None)
    if result.passed:
        result = publish_candidate(repo, result, url, retired)
    print(result.summary())
    if not result.passed:
        return REFUSED
    if result.rolled_back:
        return ROLLED_BACK
    number = int(source.name) + 1 if source.parent.name == "updates" else 1
    assert result.model is not None
    card = {**checkpoint.card, "update": {"from": str(source), "since": since, "users": result.users,
                                          "gate": [result.gate_served, result.gate_candidate],
                                          "scorer_version": result.published}}
    save_checkpoint(Path(run) / "updates" / str(number), result.model, checkpoint.config, card)
    return PUBLISHED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy update", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the SASRec run the repository was exported from")
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address (explicit mode)")
    parser.add_argument("--since", required=True, help="take clicks from this time (epoch seconds or ISO)")
    parser.add_argument("--until", default=None, help="and before this time (default: all since)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--budget", type=float, default=0.005,
                        help="held-out NDCG@10 the candidate may lose against the served model")
    parser.add_argument("--min-users", type=int, default=20,
                        help="fewer users with held-out clicks than this: publish nothing (no evidence)")
    parser.add_argument("--retired", type=Path, default=Path("retired"),
                        help="where a rolled-back version folder is kept (outside the repository)")
    args = parser.parse_args(argv)
    try:
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else float("inf")
        return run_update(args.run, args.repository, args.url, since, until,
                          UpdateConfig(epochs=args.epochs, lr=args.lr, budget=args.budget,
                                                       min_users=args.min_users), args.retired)
    except (ValueError, CheckpointError, FeatureStoreError, SwapError, CanaryError) as error:
        print(f"recdeploy update: {error}", file=sys.stderr)
        return 2
