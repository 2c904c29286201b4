"""``recdeploy demo``: the whole loop for one scenario, on CPU, in one command.

    recdeploy demo                                   # what `make demo` runs: retrieval, ML-100k
    recdeploy demo --scenario sequential             # any scenario (recdeploy scenarios lists them)
    recdeploy demo --epochs 5 --concurrency 1,4

train (the runs the scenario's demo names, evaluated with their protocol against the
baselines) -> export (ONNX parity-checked, a Triton repository of the scenario's entries) ->
serve (the real tritonserver on 127.0.0.1) -> every entry queried over gRPC and HTTP,
checked against its in-process pipeline (the canary: real ids and a cold start) ->
perf_analyzer sweep of every entry next to the same pipelines in-process, with the served
answers' quality -> ``<out>/report.md``.
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
from recdeploy.export.scenarios import SCENARIOS, ExportReport, entries_of, scenario_named
from recdeploy.perf.lab import LabConfig, run_lab
from recdeploy.perf.lab_report import write_lab_report
from recdeploy.serve.canary import CanaryReport, run_canary
from recdeploy.serve.server import ServerConfig, TritonServer
from recdeploy.train.cli import format_metrics_table, run_training
from recdeploy.train.config import TrainConfig
from recdeploy.train.data import load_dataset


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def render_report(scenario: str, cards: dict[str, dict], export: ExportReport, served: list[CanaryReport],
                  sample: str, perf_md: Path, seconds: dict) -> str:
    lines = [f"# recdeploy demo report: {scenario}", ""]
    for role, card in cards.items():
        lines += [f"## Quality of the {role} ({card['model']} on {card['dataset']}, {card['n_users']} users, "
                  f"{card['n_items']} items)", "", "```", format_metrics_table(card), "```", ""]
    lines += [
        "## Export and serving checks", "",
        *[f"- {check}: max |diff| {diff:.2e}" for check, diff in export.parity.items()],
        *[f"- {check.summary()}" for check in served], "",
        "## A served answer", "", "```", sample, "```", "",
        f"## Throughput (perf_analyzer) — see [{perf_md.name}]({perf_md.relative_to(perf_md.parent.parent)})", "",
        perf_md.read_text().split("\n", 1)[1] if perf_md.is_file() else "(no perf report)", "",
        "## Wall time", "",
        *[f"- {stage}: {value:.1f} s" for stage, value in seconds.items()],
    ]
    return "\n".join(lines) + "\n"


def sample_answer(repository: Path, url: str, titles: dict[int, str]) -> str:
    """The repository's first entry asked its scenario's first canary request, one row shown."""
    name, entry = next(iter(entries_of(repository).items()))
    request = scenario_named(entry.scenario).canary_requests(repository, entry)[0]
    row = {key: value[:1] for key, value in request.items()}
    with RecommendClient(url, "grpc", model=name) as client:
        answer = client.infer(row, ["ITEM_IDS", "SCORES"])
    shown = ", ".join(f"{key} {value.reshape(-1)[:8].tolist()}" for key, value in row.items())
    user = int(row["USER_ID"][0, 0]) if "USER_ID" in row else 0
    return f"{name} <- {shown}\n" + format_recommendations(user, answer["ITEM_IDS"][0], answer["SCORES"][0], titles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="retrieval", choices=sorted(SCENARIOS),
                        help="what to demo (default retrieval: a two-tower's top-K)")
    parser.add_argument("--dataset", default=None, help="override the dataset the scenario's demo uses")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo, or "
                        "runs/demo-<scenario>)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--epochs", type=int, default=None, help="override the demo runs' epochs")
    parser.add_argument("--concurrency", type=_int_list, default=(1, 4, 8),
                        help="perf_analyzer concurrency levels (default 1,4,8)")
    args = parser.parse_args(argv)
    scenario = scenario_named(args.scenario)
    out = args.out or Path("runs/demo" if args.scenario == "retrieval" else f"runs/demo-{args.scenario}")

    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(stage: str, since: float) -> float:
        seconds[stage] = time.perf_counter() - since
        return time.perf_counter()

    print(f"== 1/5 train ({args.scenario})", flush=True)
    runs, cards = {}, {}
    for role, recipe in scenario.demo_runs().items():
        settings = {**recipe.settings, **({"epochs": args.epochs} if args.epochs else {})}
        config = TrainConfig.for_model(recipe.model, dataset=args.dataset or recipe.dataset, **settings)
        runs[role] = out if role == "run" else out.with_name(f"{out.name}-{role}")
        cards[role] = run_training(config, runs[role])
    t = lap("train", started)

    print("== 2/5 export", flush=True)
    export = run_export(runs["run"], args.repository, ranker_run=runs.get("ranker"), scenario=args.scenario)
    print(export.summary(args.repository))
    t = lap("export", t)
    ds = load_dataset(cards["run"]["dataset"])
    titles = dict(zip(ds.item_ids.tolist(), ds.item_titles))

    print("== 3/5 serve (real tritonserver, 127.0.0.1)", flush=True)
    with TritonServer(ServerConfig(model_repository=args.repository, verify_manifest=True)) as server:
        t = lap("server start", t)
        print(f"   ready: grpc {server.grpc_url}, http {server.http_url}; log {server.log_path}")

        print("== 4/5 every entry over gRPC and HTTP against its in-process pipeline", flush=True)
        served = [run_canary(args.repository, server.grpc_url, "grpc"),
                  run_canary(args.repository, server.http_url, "http")]
        for check in served:
            print(f"   {check.summary()}")
        sample = sample_answer(args.repository, server.grpc_url, titles)
        print(sample)
        t = lap("query + checks", t)

    print("== 5/5 perf_analyzer: every entry served vs in-process", flush=True)
    perf_dir = out / "perf"
    lab = LabConfig(repository=args.repository, batch_sizes=(1, 64), concurrency=args.concurrency,
                    inprocess_seconds=2.0)
    rows, results = run_lab(lab, perf_dir)
    perf_md = write_lab_report(rows, results, perf_dir, {"scenario": args.scenario, "dataset": ds.name,
                                                         "k": 10, "device": "CPU"})
    t = lap("perf", t)

    seconds["total"] = time.perf_counter() - started
    report = out / "report.md"
    report.write_text(render_report(args.scenario, cards, export, served, sample, perf_md, seconds))
    (out / "demo.json").write_text(json.dumps({
        "scenario": args.scenario, "cards": cards, "served": [asdict(r) for r in served],
        "seconds": seconds, "perf": [row.to_dict() for row in rows]}, indent=2))
    print(perf_md.read_text())
    print(f"demo done in {seconds['total']:.0f} s; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
