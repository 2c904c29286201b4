"""``recdeploy bench-criteo``: the large-CTR slice measured end to end, per served variant.

    recdeploy bench-criteo --preset small --serve          # demo-size data, served by Triton (minutes)
    recdeploy bench-criteo --preset full --train-rows 1000000
    make bench-criteo                                      # the full size (~17 min on 2 cores, ~12 GB RAM)
    recdeploy bench-criteo --train-rows 30000 --cached-serve   # criteo_rank_cached vs criteo_rank, served

Steps: prepare the rows (synthetic by default, ``--data-path`` for your Criteo TSV files) ->
train DLRM (or ``--model dcn_v2_criteo``) on ``--threads`` cores, timing samples/s -> score
FP32, row-wise INT8 / INT4 and a grid of frequency-aware mixed-precision tables on the held-out
rows -> pick the smallest within ``--budget`` of the FP32 validation AUC -> export FP32, INT8,
INT4 and the pick to ONNX (weights beside the graph past 2 GiB), each parity-checked against
PyTorch -> per variant, in a fresh process: file size, load time, session RSS, latency and
throughput at batch 1 / 64 / 256 / 2048 impressions -> with ``--serve``, per variant a real
tritonserver (time to ready, server RSS, served == in-process, perf_analyzer) -> ``report.md``,
``bench.json``, ``pareto.png`` in ``--out``.

With ``--train-rows`` below the training rows, throughput is measured on that many rows and the
time for 10^7 is extrapolated (the report says so); AUCs are then those of a partly trained model.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recdeploy.compress.config import CompressionConfigError
from recdeploy.compress.criteo_mlp import mlp_candidates, mlp_parameters, parse_ratios
from recdeploy.compress.criteo_tables import (
    Candidate,
    candidates,
    choose_variant,
    evaluate,
    state_bytes,
    table_bytes,
)
from recdeploy.export.repository import write_manifest, write_model
from recdeploy.export.scenarios.criteo import (
    export_criteo,
    export_ranker,
    features_module,
    held_out_impressions,
    probe_inputs,
    ranker_spec,
)
from recdeploy.export.triton_config import build_model_config
from recdeploy.perf.criteo_cached import render_cached, serve_cached
from recdeploy.perf.criteo_measure import file_bytes, measure_session, pareto_chart, server_rss_mb
from recdeploy.perf.criteo_scale import render_cache, render_scale, run_cache, run_scale
from recdeploy.perf.lab import LabConfig, run_lab
from recdeploy.serve.canary import run_canary
from recdeploy.serve.server import ServerConfig, TritonServer
from recdeploy.train.criteo.prepare import PreparedCriteo
from recdeploy.train.data import cache_dir
from recdeploy.train.datasets.criteo import load_criteo
from recdeploy.train.models import build_model
from recdeploy.train.onnx_io import check_parity, onnx_files
from recdeploy.train.tasks.criteo_ctr import part_metrics, predict_logits, train_rows


@dataclass(frozen=True)
class Preset:
    rows: int               # synthetic rows (train 90 %, valid 5 %, test 5 %)
    scale: float            # times Kaggle's per-field cardinalities
    dim: int                # embedding dimension
    max_vocab: int = 0      # kept ids per field (0: all seen)
    hash_rows: int = 0      # hashed rows for a capped field's other ids


PRESETS = {
    "small": Preset(300_000, 0.02, 16),
    "medium": Preset(2_000_000, 0.2, 32, 200_000, 300_000),
    # >= 10^7 rows x 64 (>= 2.5 GB FP32): big fields capped at 10^6 kept ids + 2 x 10^6 hashed;
    # 11.2M rows so that one epoch is >= 10^7 training samples (90 %: 10,080,000)
    "full": Preset(11_200_000, 1.0, 64, 1_000_000, 2_000_000),
}
BATCHES = (1, 64, 256, 2048)


def train_and_score(args, data: PreparedCriteo) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(args.seed)
    model = build_model(args.model, rows_per_field=list(data.rows_per_field), dim=args.dim)
    stats = train_rows(model, data, args.lr, args.batch_size, np.random.default_rng(args.seed),
                       max_rows=args.train_rows)
    n_train = data.part_range("train")[1]
    training = {"rows": stats.rows, "seconds": round(stats.seconds, 1), "threads": torch.get_num_threads(),
                "samples_per_s": round(stats.samples_per_s, 1), "cpu_seconds": round(stats.cpu_seconds, 1),
                "samples_per_cpu_s": round(stats.samples_per_cpu_s, 1),
                "minutes_for_1e7_rows": round(1e7 / stats.samples_per_s / 60, 1) if stats.seconds else None,
                "extrapolated": stats.rows < 10_000_000, "partial_epoch": stats.rows < n_train}
    return model, training


def score_variants(pool: list[Candidate], data: PreparedCriteo, budget: float) -> tuple[list[dict], dict, dict]:
    """-> (scores of every candidate, the pick: the smallest model within the budget, the modules
    worth exporting by name: FP32, INT8, INT4, the pick and every MLP-pruned candidate)."""
    scored, keep = [], {}
    labels = np.asarray(data.arrays("test")[0])
    for candidate in pool:
        test = part_metrics(labels, predict_logits(candidate.module, data, "test"))
        scored.append({"name": candidate.name, "settings": candidate.settings,
                       "table_bytes": table_bytes(candidate.module), "model_bytes": state_bytes(candidate.module),
                       "mlp_params": mlp_parameters(candidate.module),
                       "valid_auc": evaluate(candidate, data, "valid"), "test_auc": test["auc"],
                       "test_logloss": test["logloss"]})
        print(f"  {candidate.name:<16} tables {scored[-1]['table_bytes'] / 2**20:9.1f} MiB  "
              f"MLP params {scored[-1]['mlp_params']:>9,}  "
              f"valid AUC {scored[-1]['valid_auc']:.4f}  test AUC {test['auc']:.4f}", flush=True)
        keep[candidate.name] = candidate.module
    pick = choose_variant(scored, budget, key="model_bytes")
    wanted = {"fp32", "int8", "int4", pick["name"]} | {c.name for c in pool if "mlp_ratio" in c.settings}
    return scored, pick, {name: module for name, module in keep.items() if name in wanted}


def export_variants(modules: dict, data: PreparedCriteo, out: Path) -> dict[str, dict]:
    vocab = features_module.Vocab(data.vocab.keys, data.vocab.rows, data.vocab.offsets, data.vocab.sizes,
                                  data.vocab.hash_rows)
    inputs = probe_inputs(held_out_impressions(data, n=512), vocab)
    exported = {}
    for name, module in modules.items():
        started = time.perf_counter()
        path = export_ranker(module, inputs, out / "onnx" / name / "model.onnx", constant_folding=name == "fp32")
        parity = check_parity(module, path, inputs, ["SCORES"], atol=1e-4, rtol=1e-4)
        size = file_bytes(path)
        exported[name] = {"path": str(path), "file_bytes": size,
                          "external_data": path.with_name("model.onnx.data").is_file(),
                          "export_s": round(time.perf_counter() - started, 1),
                          "parity_max_abs_diff": parity.max_abs_diff["SCORES"]}
        print(f"  exported {name}: {size / 2**20:.1f} MiB, parity "
              f"{parity.max_abs_diff['SCORES']:.1e}", flush=True)
    return exported


def serve_variants(model, data: PreparedCriteo, exported: dict, out: Path, batches) -> dict[str, dict]:
    """One tritonserver per variant (the variant as criteo_ranker), so memory is its own."""
    served = {}
    for name, info in exported.items():
        repo = out / "repository"
        export_criteo(model, data, repo)
        if name != "fp32":
            write_model(repo, build_model_config(ranker_spec()), onnx_files(Path(info["path"])))
            write_manifest(repo)
        started = time.perf_counter()
        with TritonServer(ServerConfig(model_repository=repo)) as server:
            ready_s = time.perf_counter() - started
            rss = server_rss_mb(server._process.pid) if server._process else {}
            canary = run_canary(repo, server.grpc_url, "grpc")
            lab = LabConfig(repository=repo, batch_sizes=tuple(batches), concurrency=(1, 4),
                            inprocess_seconds=1.0)
            rows, _ = run_lab(lab, out / "perf" / name, progress=False, log=lambda _: None)
            after = server_rss_mb(server._process.pid) if server._process else {}
        served[name] = {"ready_s": round(ready_s, 1), "server_rss_mb": round(sum(rss.values()), 1),
                        "server_rss_after_perf_mb": round(sum(after.values()), 1), "rss_by_process": after,
                        "canary": canary.summary(),
                        "perf": {r.batch_size: {"served_recs_per_s": r.served_peak_recs_per_s,
                                                "p99_ms": r.served_p99_ms_at_peak,
                                                "inprocess_recs_per_s": r.inprocess.recommendations_per_s}
                                 for r in rows}}
        print(f"  served {name}: ready in {ready_s:.1f} s, server RSS {served[name]['server_rss_mb']:.0f} MB; "
              f"{canary.summary()}", flush=True)
    return served


def render(report: dict) -> str:
    t, full = report["training"], report["variants"][0]
    lines = [f"# Criteo bench ({report['preset']}, {report['model']})", "",
             f"- data: {report['data']}",
             f"- embedding tables: {report['embedding_rows']:,} rows x {report['dim']} "
             f"({full['table_bytes'] / 2**30:.2f} GiB FP32)",
             f"- training: {t['rows']:,} rows in {t['seconds']} s on {t['threads']} threads = "
             f"**{t['samples_per_s']:,.0f} samples/s** wall -> {t['minutes_for_1e7_rows']} min per 10^7 rows"
             + (" (extrapolated)" if t["extrapolated"] else "")
             + f"; {t['samples_per_cpu_s']:,.0f} samples per CPU-second ({t['cpu_seconds']} CPU-s: "
             f"two uncontended cores give up to twice that per second)",
             f"- Bayes AUC (planted truth) on test: {report.get('bayes_auc_test', 'n/a')}",
             f"- pick within {report['budget']:g} AUC of FP32 (half of it on validation): **{report['pick']['name']}** "
             f"({report['pick']['table_bytes'] / full['table_bytes']:.1%} of FP32 table memory, "
             f"{report['pick']['model_bytes'] / full['model_bytes']:.1%} of the FP32 model's bytes, test AUC "
             f"{report['pick']['test_auc'] - full['test_auc']:+.4f})", "",
             "| variant | tables MiB | of FP32 | MLP params | model MiB | test AUC | ΔAUC | logloss | file MiB "
             "| load s | session RSS MB |" + "".join(f" ms @{b} |" for b in report["batches"])
             + " server RSS MB | ready s |",
             "|---|" + "---:|" * (10 + len(report["batches"])) + "---:|---:|"]
    for v in report["variants"]:
        e, s = v.get("export", {}), v.get("session", {})
        served = v.get("served", {})
        cells = [f"{v['table_bytes'] / 2**20:.1f}", f"{v['table_bytes'] / full['table_bytes']:.1%}",
                 f"{v['mlp_params']:,}" if "mlp_params" in v else "", f"{v['model_bytes'] / 2**20:.1f}",
                 f"{v['test_auc']:.4f}", f"{v['test_auc'] - full['test_auc']:+.4f}", f"{v['test_logloss']:.4f}",
                 f"{e['file_bytes'] / 2**20:.1f}" if e else "", f"{s['load_s']:.2f}" if s else "",
                 f"{s['rss_mb']:.0f}" if s else ""]
        cells += [f"{s['latency_ms'][b]:.2f}" if s else "" for b in report["batches"]]
        cells += [f"{served['server_rss_mb']:.0f}" if served else "", f"{served['ready_s']}" if served else ""]
        lines.append(f"| {v['name']} | " + " | ".join(cells) + " |")
    lines += ["", "Timings measured on a shared machine under load: compare within one run.",
              "", "![memory vs AUC](pareto.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy bench-criteo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--data-path", type=Path, default=None, help="your Criteo TSV file(s) instead")
    parser.add_argument("--model", default="dlrm", choices=("dlrm", "dcn_v2_criteo"))
    parser.add_argument("--train-rows", type=int, default=None, help="train on the first N rows only")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (default 2)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--budget", type=float, default=0.001, help="allowed absolute AUC loss (0.001)")
    parser.add_argument("--serve", action="store_true", help="also serve each variant with tritonserver")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=None, help="override the preset's synthetic rows")
    parser.add_argument("--max-vocab", type=int, default=None, help="override the preset's kept ids per field")
    parser.add_argument("--hash-rows", type=int, default=None, help="override the preset's hashed rows")
    parser.add_argument("--scale-only", action="store_true",
                        help="the full-size tables without the full-size data (see perf/criteo_scale.py)")
    parser.add_argument("--cache-only", action="store_true",
                        help="the memory-mapped table + CLOCK row cache at the full row count")
    parser.add_argument("--cached-serve", action="store_true",
                        help="serve criteo_rank_cached beside criteo_rank and measure both (perf/criteo_cached.py)")
    parser.add_argument("--cache-share", type=float, default=0.01,
                        help="--cached-serve: the share of the table's rows the cache holds (default 0.01)")
    parser.add_argument("--quick-grid", action="store_true",
                        help="one mixed-precision candidate (2 %% hot, prune unseen) instead of six")
    parser.add_argument("--prune-mlp", default="", metavar="RATIOS",
                        help="also DLRM with this share of the MLPs' hidden neurons pruned, e.g. 0.25,0.5 "
                             "(each with FP32 and with INT4 tables)")
    parser.add_argument("--prune-finetune-rows", type=int, default=0,
                        help="--prune-mlp: also each pruned model with its MLPs fine-tuned on this many "
                             "rows, distilled from the unpruned model")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        ratios = parse_ratios(args.prune_mlp) if args.prune_mlp else ()
    except CompressionConfigError as error:
        parser.error(str(error))
    if args.prune_finetune_rows < 0 or (args.prune_finetune_rows and not ratios):
        parser.error("--prune-finetune-rows takes rows >= 0 and needs --prune-mlp")
    if ratios and args.model != "dlrm":
        parser.error(f"--prune-mlp prunes DLRM's MLPs; not supported for --model {args.model}")
    preset = PRESETS[args.preset]
    preset = Preset(args.rows or preset.rows, preset.scale, preset.dim,
                    preset.max_vocab if args.max_vocab is None else args.max_vocab,
                    preset.hash_rows if args.hash_rows is None else args.hash_rows)
    args.dim = preset.dim
    out = args.out or Path(f"reports/bench-criteo-{args.preset}")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    if args.cache_only:
        print("== cached table", flush=True)
        cache = run_cache(out / "cache")
        (out / "cache.json").write_text(json.dumps(cache, indent=2))
        (out / "cache.md").write_text(render_cache(cache))
        print(render_cache(cache))
        return 0
    if args.scale_only:
        print("== full-size tables (random ids)", flush=True)
        full = PRESETS["full"]
        scale = run_scale(out, full.dim, args.max_vocab or full.max_vocab, args.hash_rows or full.hash_rows,
                          args.train_rows or 100_000, args.batch_size, args.lr, BATCHES)
        (out / "scale.json").write_text(json.dumps(scale, indent=2, default=str))
        (out / "scale.md").write_text(render_scale(scale))
        print(render_scale(scale))
        return 0
    print(f"== prepare ({args.preset})", flush=True)
    data = load_criteo(args.data_path, rows=preset.rows, scale=preset.scale,
                       max_vocab=preset.max_vocab, hash_rows=preset.hash_rows,
                       folder=None if args.data_path else cache_dir() / "criteo" / f"bench-{args.preset}-{preset.rows}")
    print(data.summary(), flush=True)
    print("== train", flush=True)
    model, training = train_and_score(args, data)
    print(f"  {training}", flush=True)
    if args.cached_serve:
        print("== serve cached tables", flush=True)
        cached = serve_cached(model, data, out, args.cache_share)
        (out / "cached.json").write_text(json.dumps(cached, indent=2))
        (out / "cached.md").write_text(render_cached(cached))
        print(render_cached(cached))
        return 0
    print("== compress (scored on held-out rows)", flush=True)
    grid = {"hot_shares": (0.02,), "prune": (1,)} if args.quick_grid else {}
    pool = candidates(model, data.row_counts(), **grid)
    if ratios:
        pool += mlp_candidates(model, data, ratios, args.prune_finetune_rows)
    scored, pick, modules = score_variants(pool, data, args.budget)
    print("== export + measure", flush=True)
    exported = export_variants(modules, data, out)
    for row in scored:
        if row["name"] in exported:
            row["export"] = exported[row["name"]]
            row["session"] = measure_session(Path(row["export"]["path"]), data.rows_per_field, BATCHES)
            row["latency_ms"] = row["session"]["latency_ms"]
            print(f"  {row['name']}: load {row['session']['load_s']:.2f} s, RSS {row['session']['rss_mb']:.0f} MB, "
                  f"latency {row['latency_ms']}", flush=True)
    if args.serve:
        print("== serve", flush=True)
        served = serve_variants(model, data, exported, out, (1, 64))
        for row in scored:
            if row["name"] in served:
                row["served"] = served[row["name"]]
    report = {"preset": args.preset, "model": args.model, "dim": args.dim, "data": data.summary(),
              "embedding_rows": data.n_items, "training": training, "budget": args.budget, "pick": pick,
              "bayes_auc_test": round(data.meta["bayes_auc"]["test"], 4) if "bayes_auc" in data.meta else None,
              "batches": list(BATCHES), "variants": scored}
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    pareto_chart(scored, out / "pareto.png", args.budget)
    (out / "report.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
