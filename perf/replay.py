"""Replay a dataset's chronological tail day by day through the online loop, frozen vs updated.

    recdeploy replay --dataset ml-100k --days 8 --out runs/replay          # in-process gate only
    recdeploy replay --dataset ml-100k --days 8 --served --out runs/replay # + hot swap + canary

The simulation: cut the dataset at a day boundary so that ``--tail-fraction`` of the
interactions come after it; train SASRec on the earlier period and export it with the Redis
store (histories and seen items as of the cut). Then, for each simulated day d, every real
rating of day d arrives as feedback through ``FeedbackLog`` (rating >= 3: a click, applied to
the store by the consumer; below: an impression, logged only), and at the end of the day
``serve.update`` warm-starts the model on that day's clicks, gates it and (``--served``)
publishes it through the hot-swap path with the canary. Quality is next-day NDCG@10: users
the store knows who click unseen catalogue items on day d+1, all of those items the
relevant set, both models reading the same store (so the frozen model sees the new
histories too; what differs is only the weights). Writes ``replay.json``, ``replay.md`` and
``replay.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from recdeploy.clients.feedback import Consumer, Event, FeedbackLog
from recdeploy.export.feature_store import clear_prefix, parse_store_url
from recdeploy.export.scenarios.sequential import SequentialInProcess, export_sequential, history_module
from recdeploy.serve.server import ServerConfig, TritonServer
from recdeploy.serve.update import UpdateConfig, candidate_update, publish_candidate
from recdeploy.train.config import TrainConfig
from recdeploy.train.data import Dataset, load_dataset
from recdeploy.train.models.sasrec import SASRec
from recdeploy.train.tasks.sequential import sequential_dataset, train

DAY = 86_400


@dataclass(frozen=True)
class ReplayConfig:
    dataset: str = "ml-100k"
    days: int = 8
    tail_fraction: float = 0.1
    store_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "recdeploy:replay"
    dim: int = 32
    max_len: int = 50
    layers: int = 2
    epochs: int = 15
    update: UpdateConfig = field(default_factory=UpdateConfig)


def slice_rows(raw: Dataset, keep: np.ndarray) -> Dataset:
    """The same users, items and ids; only the interactions where ``keep``."""
    return Dataset(name=raw.name, user_ids=raw.user_ids, item_ids=raw.item_ids, item_titles=raw.item_titles,
                   users=raw.users[keep], items=raw.items[keep], ratings=raw.ratings[keep],
                   timestamps=raw.timestamps[keep], user_features=raw.user_features,
                   item_features=raw.item_features)


def cut_time(raw: Dataset, tail_fraction: float) -> int:
    """The first day boundary (UTC midnight) after which about ``tail_fraction`` of the data lies."""
    return int(np.quantile(raw.timestamps, 1.0 - tail_fraction)) // DAY * DAY


def day_events(raw: Dataset, start: int) -> list[Event]:
    rows = np.flatnonzero((raw.timestamps >= start) & (raw.timestamps < start + DAY))
    rows = rows[np.argsort(raw.timestamps[rows], kind="stable")]
    return [Event(int(raw.user_ids[raw.users[r]]), int(raw.item_ids[raw.items[r]]),
                  "click" if raw.ratings[r] >= 3 else "impression", float(raw.timestamps[r])) for r in rows]


def next_day_ndcg(models: dict[str, SASRec], rec: SequentialInProcess, events: list[Event],
                  item_index: dict[int, int]) -> tuple[dict[str, float], int]:
    """NDCG@10 of each model on the clicks of one day (unseen catalogue items), same store."""
    wanted: dict[int, set[int]] = {}
    for e in events:
        if e.kind == "click" and e.item in item_index:
            wanted.setdefault(e.user, set()).add(item_index[e.item])
    users = np.array(sorted(wanted), dtype=np.int64)
    if not len(users):
        return {name: float("nan") for name in models}, 0
    history, seen, known = history_module.lookup_histories(users, rec.table)
    targets = [wanted[u] - set(s[s >= 0].tolist()) for u, s in zip(users.tolist(), seen)]
    rows = [i for i, t in enumerate(targets) if known[i, 0] and t]
    if not rows:
        return {name: float("nan") for name in models}, 0
    out = {}
    for name, model in models.items():
        with torch.no_grad():
            scores = model.next_item_scores(torch.from_numpy(history[rows])).numpy()
        for j, i in enumerate(rows):
            scores[j, seen[i][seen[i] >= 0]] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        gains = []
        for j, i in enumerate(rows):
            hits = np.isin(top[j], list(targets[i]))
            ideal = np.sum(1.0 / np.log2(np.arange(2, 2 + min(10, len(targets[i])))))
            gains.append(float(np.sum(hits / np.log2(np.arange(2, 12)))) / ideal)
        out[name] = float(np.mean(gains))
    return out, len(rows)


def replay(config: ReplayConfig, out: Path, served: bool = False, progress: bool = True) -> dict:
    raw = load_dataset(config.dataset)
    cut = cut_time(raw, config.tail_fraction)
    before = slice_rows(raw, raw.timestamps < cut)
    started = time.perf_counter()
    trained = train(TrainConfig(model="sasrec", dataset=config.dataset, dim=config.dim, max_len=config.max_len,
                                layers=config.layers, epochs=config.epochs, patience=3),
                    sequential_dataset(before), progress=progress)
    train_seconds = time.perf_counter() - started
    frozen = trained.model.eval()
    assert isinstance(frozen, SASRec)
    repo = out / "repository"
    spec = parse_store_url(config.store_url, config.prefix)
    export_sequential(frozen, before, repo, {"dataset_fingerprint": before.fingerprint()}, spec)
    clear_prefix(spec.client(), f"{spec.prefix}:events")
    rec = SequentialInProcess(repo)
    item_ids = rec.item_ids
    item_index = {int(raw_id): i for i, raw_id in enumerate(item_ids.tolist())}
    everyone = history_module.load_npy(str(repo / "history_lookup" / "1"), "user_ids").astype(np.int64)
    log, consumer = FeedbackLog(spec), Consumer(spec, "replay")
    server = TritonServer(ServerConfig(model_repository=repo, model_control_mode="explicit")) if served else None
    days, current = [], frozen
    try:
        if server is not None:
            server.start()
        for d in range(config.days):
            today = day_events(raw, cut + d * DAY)
            t0 = time.perf_counter()
            log.log(today)
            applied = consumer.drain()
            apply_s = time.perf_counter() - t0
            changed = np.array(sorted(applied.users), dtype=np.int64)
            result = candidate_update(current, rec, changed, everyone, config.update, frozen)
            if result.passed and server is not None:
                result = publish_candidate(repo, result, server.grpc_url, out / "retired")
            if result.passed and not result.rolled_back and result.model is not None:
                current = result.model
            quality, n_users = next_day_ndcg({"frozen": frozen, "updated": current}, rec,
                                              day_events(raw, cut + (d + 1) * DAY), item_index)
            days.append({"day": d + 1, "date": time.strftime("%Y-%m-%d", time.gmtime(cut + d * DAY)),
                         "events": len(today), "clicks_applied": applied.applied, "users_updated": result.users,
                         "apply_s": round(apply_s, 3), "update_s": round(sum(result.seconds.values()), 2),
                         "gate_served": round(result.gate_served, 4),
                         "gate_candidate": round(result.gate_candidate, 4), "published": result.passed,
                         "gate_frozen": None if result.gate_frozen is None else round(result.gate_frozen, 4),
                         "refused": result.reason,
                         "rolled_back": result.rolled_back, "next_day_users": n_users,
                         "ndcg_frozen": round(quality["frozen"], 4), "ndcg_updated": round(quality["updated"], 4)})
            if progress:
                print(json.dumps(days[-1]), flush=True)
    finally:
        log.close()
        consumer.close()
        if server is not None:
            server.stop()
    report = {"config": {**asdict(config), "served": served}, "cut": cut, "train_seconds": round(train_seconds, 1),
              "train_interactions": before.n_interactions, "days": days}
    write_report(report, out)
    return report


def write_report(report: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(report, indent=2))
    days = report["days"]
    lines = ["| day | date | events | clicks applied | users updated | update s | gate served → candidate | "
             "published | next-day users | NDCG@10 frozen | NDCG@10 updated |",
             "|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|"]
    for r in days:
        lines.append(f"| {r['day']} | {r['date']} | {r['events']} | {r['clicks_applied']} | {r['users_updated']} | "
                     f"{r['update_s']} | {r['gate_served']:.4f} → {r['gate_candidate']:.4f} | "
                     f"{'yes' if r['published'] and not r['rolled_back'] else 'no'} | {r['next_day_users']} | "
                     f"{r['ndcg_frozen']:.4f} | {r['ndcg_updated']:.4f} |")
    frozen = np.nanmean([r["ndcg_frozen"] for r in days]) if days else float("nan")
    updated = np.nanmean([r["ndcg_updated"] for r in days]) if days else float("nan")
    lines.append(f"\nMean next-day NDCG@10 over {len(days)} days: frozen {frozen:.4f}, updated {updated:.4f}.")
    (out / "replay.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = [r["day"] for r in days]
    ax.plot(x, [r["ndcg_frozen"] for r in days], "o-", label="frozen (trained before the tail)")
    ax.plot(x, [r["ndcg_updated"] for r in days], "s-", label="updated daily (warm start, gated)")
    ax.set_xlabel("simulated day")
    ax.set_ylabel("next-day NDCG@10")
    ax.set_title(f"{report['config']['dataset']}: next-day NDCG@10, frozen vs daily-updated SASRec")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "replay.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy replay", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--days", type=int, default=8, help="simulated days (one more is needed to evaluate)")
    parser.add_argument("--tail-fraction", type=float, default=0.1, help="share of interactions after the cut")
    parser.add_argument("--store", default="redis://127.0.0.1:6379/0", help="Redis for the store and stream")
    parser.add_argument("--prefix", default="recdeploy:replay")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the model trained before the cut")
    parser.add_argument("--update-epochs", type=int, default=2)
    parser.add_argument("--update-lr", type=float, default=1e-3)
    parser.add_argument("--budget", type=float, default=0.005, help="held-out NDCG@10 the update may lose")
    parser.add_argument("--min-users", type=int, default=20, help="held-out users the gate needs")
    parser.add_argument("--served", action="store_true",
                        help="serve the repository and publish each passing update (hot swap + canary)")
    parser.add_argument("--out", type=Path, default=Path("runs/replay"))
    args = parser.parse_args(argv)
    config = ReplayConfig(dataset=args.dataset, days=args.days, tail_fraction=args.tail_fraction,
                          store_url=args.store, prefix=args.prefix, epochs=args.epochs,
                          update=UpdateConfig(epochs=args.update_epochs, lr=args.update_lr, budget=args.budget,
                                              min_users=args.min_users))
    report = replay(config, args.out, served=args.served)
    print((args.out / "replay.md").read_text())
    print(f"chart: {args.out / 'replay.png'}; train {report['train_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
