"""``recdeploy demo``: the whole loop on MovieLens-100k, on CPU, in one command.

    recdeploy demo                       # what `make demo` runs
    recdeploy demo --epochs 5 --concurrency 1,4

train (two-tower, full ranking vs most-popular) -> export (ONNX parity-checked, a Triton
repository whose scenario follows the model) -> serve (the real tritonserver on 127.0.0.1)
-> every entry queried over gRPC and HTTP, checked against its in-process pipeline (the
canary: real users and a cold start) -> perf_analyzer sweep of every entry next to the same
pipelines in-process, with the served answers' quality -> ``<out>/report.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from recdeploy.clients.cli import format_recommendations
from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.cli import run_export
from recdeploy.export.scenarios import ExportReport, entries_of
from recdeploy.perf.lab import LabConfig, run_lab
from recdeploy.perf.lab_report import write_lab_report
from recdeploy.serve.canary import CanaryReport, run_canary
from recdeploy.serve.server import ServerConfig, TritonServer
from recdeploy.train.cli import run_training
from recdeploy.train.config import TrainConfig
from recdeploy.train.data import load_dataset


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def render_report(card: dict, export: ExportReport, served: list[CanaryReport], sample: str,
                  perf_md: Path, seconds: dict) -> str:
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
        *[f"- {check}: max |diff| {diff:.2e}" for check, diff in export.parity.items()],
        *[f"- {report.summary()}" for report in served], "",
        "## A served recommendation", "", "```", sample, "```", "",
        f"## Throughput (perf_analyzer) — see [{perf_md.name}]({perf_md.relative_to(perf_md.parent.parent)})", "",
        perf_md.read_text().split("\n", 1)[1] if perf_md.is_file() else "(no perf report)", "",
        "## Wall time", "",
        *[f"- {stage}: {value:.1f} s" for stage, value in seconds.items()],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
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

    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(stage: str, since: float) -> float:
        seconds[stage] = time.perf_counter() - since
        return time.perf_counter()

    print("== 1/5 train", flush=True)
    card = run_training(TrainConfig(dataset=args.dataset, epochs=args.epochs), args.out)
    t = lap("train", started)

    print("== 2/5 export", flush=True)
    export = run_export(args.out, args.repository)
    print(export.summary(args.repository))
    t = lap("export", t)
    ds = load_dataset(args.dataset)
    titles = dict(zip(ds.item_ids.tolist(), ds.item_titles))
    entry = next(iter(entries_of(args.repository)))

    print("== 3/5 serve (real tritonserver, 127.0.0.1)", flush=True)
    with TritonServer(ServerConfig(model_repository=args.repository, verify_manifest=True)) as server:
        t = lap("server start", t)
        print(f"   ready: grpc {server.grpc_url}, http {server.http_url}; log {server.log_path}")

        print("== 4/5 every entry over gRPC and HTTP against its in-process pipeline", flush=True)
        served = [run_canary(args.repository, server.grpc_url, "grpc"),
                  run_canary(args.repository, server.http_url, "http")]
        for report in served:
            print(f"   {report.summary()}")
        with RecommendClient(server.grpc_url, "grpc", model=entry) as client:
            ids, scores = client.recommend([args.user], 10)
        sample = format_recommendations(args.user, ids[0], scores[0], titles)
        print(sample)
        t = lap("query + checks", t)

    print("== 5/5 perf_analyzer: every entry served vs in-process", flush=True)
    perf_dir = args.out / "perf"
    lab = LabConfig(repository=args.repository, batch_sizes=(1, 64), concurrency=args.concurrency,
                    inprocess_seconds=2.0)
    rows, results = run_lab(lab, perf_dir)
    perf_md = write_lab_report(rows, results, perf_dir, {"dataset": args.dataset, "model": card["model"],
                                                         "k": 10, "device": "CPU"})
    t = lap("perf", t)

    seconds["total"] = time.perf_counter() - started
    report = args.out / "report.md"
    report.write_text(render_report(card, export, served, sample, perf_md, seconds))
    (args.out / "demo.json").write_text(json.dumps({
        "card": card, "served": [asdict(r) for r in served], "seconds": seconds,
        "perf": [row.to_dict() for row in rows]}, indent=2))
    print(perf_md.read_text())
    print(f"demo done in {seconds['total']:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
