"""``recdeploy demo``: the whole loop on MovieLens-100k, on CPU, in one command.

    recdeploy demo                       # what `make demo` runs
    recdeploy demo --epochs 5 --concurrency 1,4

train (two-tower, full ranking vs most-popular) -> export (ONNX parity-checked, Triton
repository with the recommend ensemble) -> serve (the real tritonserver on 127.0.0.1) ->
query over gRPC and HTTP, checked against the in-process pipeline -> perf_analyzer sweep of
every ensemble (three-step ``recommend`` and one-graph ``recommend_fused``) next to the same
pipelines in-process -> ``<out>/report.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def check_served_equals_inprocess(client, reference, user_ids: np.ndarray, k: int) -> float:
    """Served top-K ids must equal in-process ids; returns the max |score diff|."""
    served_ids, served_scores = client.recommend(user_ids, k)
    local_ids, local_scores = reference.recommend(user_ids, k)
    if not np.array_equal(served_ids, local_ids):
        rows = np.flatnonzero((served_ids != local_ids).any(axis=1))
        raise RuntimeError(f"served top-{k} differs from in-process for users {user_ids[rows].tolist()}")
    return float(np.abs(served_scores - local_scores).max())


def render_report(card: dict, parity: dict, served: dict, sample: str, perf_md: Path,
                  seconds: dict) -> str:
    ours, pop = card["metrics"]["test"], card["baselines"]["most_popular"]["test"]
    lines = [
        "# recdeploy demo report", "",
        f"Dataset: {card['dataset']} ({card['n_users']} users, {card['n_items']} items); "
        f"split: {card['split']}; protocol: {card['protocol']}.", "",
        "## Quality", "",
        "| model | HR@10 | NDCG@10 |", "|---|---|---|",
        f"| {card['model']} | {ours['hr@10']:.4f} | {ours['ndcg@10']:.4f} |",
        f"| most-popular | {pop['hr@10']:.4f} | {pop['ndcg@10']:.4f} |", "",
        "## Export and serving checks", "",
        f"- ONNX vs PyTorch, max |diff| over real users: {max(parity.values()):.2e}",
        f"- served (gRPC and HTTP) top-10 equals in-process top-10 for {served['users']} users; "
        f"max |score diff| {served['max_score_diff']:.2e}",
        f"- unknown user {served['cold_user']} got the most popular items: {served['cold_ok']}", "",
        "## A served recommendation", "", "```", sample, "```", "",
        f"## Throughput (perf_analyzer) — see [{perf_md.name}]({perf_md.relative_to(perf_md.parent.parent)})", "",
        perf_md.read_text().split("\n", 1)[1] if perf_md.is_file() else "(no perf report)", "",
        "## Wall time", "",
        *[f"- {stage}: {value:.1f} s" for stage, value in seconds.items()],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from recdeploy.train.config import TrainConfig

    parser = argparse.ArgumentParser(prog="recdeploy demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k", choices=("ml-100k", "ml-1m"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--concurrency", type=_int_list, default=(1, 4, 8),
                        help="perf_analyzer concurrency levels (default 1,4,8)")
    parser.add_argument("--user", type=int, default=42, help="user whose recommendations are shown")
    args = parser.parse_args(argv)

    from recdeploy.clients.cli import format_recommendations
    from recdeploy.clients.triton_client import RecommendClient
    from recdeploy.export.cli import run_export
    from recdeploy.export.inprocess import InProcessRecommender
    from recdeploy.perf.lab import LabConfig, run_lab, write_lab_report
    from recdeploy.serve.server import ServerConfig, TritonServer
    from recdeploy.train.cli import run_training
    from recdeploy.train.data import load_dataset

    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(stage: str, since: float) -> float:
        seconds[stage] = time.perf_counter() - since
        return time.perf_counter()

    print("== 1/5 train", flush=True)
    card = run_training(TrainConfig(dataset=args.dataset, epochs=args.epochs), args.out)
    t = lap("train", started)

    print("== 2/5 export", flush=True)
    parity = run_export(args.out, args.repository)["parity"]
    t = lap("export", t)

    ds = load_dataset(args.dataset)
    titles = dict(zip(ds.item_ids.tolist(), ds.item_titles))
    rng = np.random.default_rng(0)
    check_users = np.sort(rng.choice(ds.user_ids, size=64, replace=False))
    cold_user = int(ds.user_ids.max()) + 1000

    print("== 3/5 serve (real tritonserver, 127.0.0.1)", flush=True)
    with TritonServer(ServerConfig(model_repository=args.repository, verify_manifest=True)) as server:
        t = lap("server start", t)
        print(f"   ready: grpc {server.grpc_url}, http {server.http_url}; log {server.log_path}")

        print("== 4/5 query over gRPC and HTTP, compare with in-process", flush=True)
        reference = InProcessRecommender(args.repository)
        diffs = []
        for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
            with RecommendClient(url, protocol) as client:
                diffs.append(check_served_equals_inprocess(client, reference, check_users, 10))
        with RecommendClient(server.grpc_url, "grpc") as client:
            ids, scores = client.recommend([args.user], 10)
            cold_ids, _ = client.recommend([cold_user], 10)
        popular = ds.item_ids[np.argsort(-np.bincount(ds.items, minlength=ds.n_items), kind="stable")[:10]]
        served = {"users": len(check_users), "max_score_diff": max(diffs), "cold_user": cold_user,
                  "cold_ok": bool(np.array_equal(cold_ids[0], popular))}
        sample = format_recommendations(args.user, ids[0], scores[0], titles)
        print(sample)
        print(f"   served == in-process for {len(check_users)} users (max |score diff| "
              f"{served['max_score_diff']:.1e}); cold start -> most popular: {served['cold_ok']}")
        t = lap("query + checks", t)

    print("== 5/5 perf_analyzer: every ensemble served vs in-process", flush=True)
    perf_dir = args.out / "perf"
    lab = LabConfig(repository=args.repository, batch_sizes=(1, 64), concurrency=args.concurrency,
                    inprocess_seconds=2.0)
    rows, results = run_lab(lab, perf_dir)
    perf_md = write_lab_report(rows, results, perf_dir, {"dataset": args.dataset, "model": card["model"],
                                                         "k": 10, "device": "CPU"})
    t = lap("perf", t)

    seconds["total"] = time.perf_counter() - started
    report = args.out / "report.md"
    report.write_text(render_report(card, parity, served, sample, perf_md, seconds))
    (args.out / "demo.json").write_text(json.dumps({"card": card, "served": served, "seconds": seconds,
                                                    "perf": [row.to_dict() for row in rows]}, indent=2))
    print(perf_md.read_text())
    print(f"demo done in {seconds['total']:.0f} s; report: {report}")
    return 0 if served["cold_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
