"""GPU vs CPU on one machine: the fused retrieval model over a synthetic 10^6-item catalogue.

    bash perf/gpu_bench.sh                                  # on a lent GPU machine (see there)
    python -m recdeploy.perf.gpu_bench --items 20000 --no-gpu --out /tmp/gb   # CPU smoke run

Builds the fused lookup -> score -> mask -> top-K model (random vectors: speed does not depend
on what they learned), exports TorchScript variants (GPU FP16, GPU FP32, CPU FP32), serves
them with the real tritonserver through the python-based ``pytorch`` backend (``KIND_GPU``
instances on cuda), checks served answers against the in-process module, runs perf_analyzer
at the same batch size and concurrency for each, measures the same modules in-process, and
writes ``gpu_report.md`` + ``gpu_summary.json`` + perf CSVs under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.fused import export_fused_torchscript, fused_ensemble_spec, fused_model_spec, module_runner
from recdeploy.export.repository import write_manifest, write_model
from recdeploy.export.scenarios.base import contract_pipeline, user_requests
from recdeploy.export.triton_config import build_ensemble_config, build_model_config
from recdeploy.perf.analyzer import run_sweep
from recdeploy.perf.config import PerfConfig
from recdeploy.perf.inprocess import measure_inprocess
from recdeploy.perf.input_data import write_input_data
from recdeploy.perf.report import write_report
from recdeploy.perf.synthetic_catalogue import synthetic_fused
from recdeploy.serve.server import ServerConfig, TritonServer


def _variants(use_gpu: bool, cpu_threads: int):
    """(ensemble, model, kind, half, threads) for every variant the benchmark serves."""
    rows = [("recommend_cpu_fp32", "fused_cpu_fp32", "KIND_CPU", False, cpu_threads)]
    if use_gpu:
        rows = [("recommend_gpu_fp16", "fused_gpu_fp16", "KIND_GPU", True, 1),
                ("recommend_gpu_fp32", "fused_gpu_fp32", "KIND_GPU", False, 1)] + rows
    return rows


def write_repository(repo: Path, modules: dict, variants, max_queue_delay_us: int) -> None:
    for ensemble, model, kind, half, threads in variants:
        spec = fused_model_spec(model, platform="pytorch_libtorch", kind=kind, threads=threads, instances=1,
                                max_queue_delay_us=max_queue_delay_us)
        with tempfile.TemporaryDirectory() as tmp:
            path = export_fused_torchscript(modules[half], Path(tmp) / "model.pt")
            write_model(repo, build_model_config(spec), {"model.pt": path})
        write_model(repo, build_ensemble_config(fused_ensemble_spec(spec, ensemble)), {})
    write_manifest(repo)


def overlap_at_k(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |top-K(a) ∩ top-K(b)| / K over rows: how much FP16 changes the lists."""
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())]))


def render(summary: dict) -> str:
    lines = ["# GPU vs CPU: fused retrieval over a synthetic catalogue", "",
             f"Machine: {summary['machine']}. Catalogue {summary['items']:,} items × {summary['dim']}, "
             f"{summary['users']:,} users, top-{summary['k']}; served by tritonserver 2.51 "
             "(python-based pytorch backend), measured with perf_analyzer.", "",
             "| variant | batch | concurrency | served recs/s | p50 ms | p99 ms | in-process recs/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in summary["rows"]:
        lines.append(f"| {row['model']} | {row['batch']} | {row['concurrency']} | "
                     f"{row['served_recs_per_s']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row.get('inprocess_recs_per_s', float('nan')):,.0f} |")
    lines += ["", *[f"- {note}" for note in summary["notes"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.perf.gpu_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports/gpu")))
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--measurement-interval-ms", type=int, default=2000)
    parser.add_argument("--max-queue-delay-us", type=int, default=200)
    parser.add_argument("--no-gpu", action="store_true", help="CPU variants only (a smoke run anywhere)")
    args = parser.parse_args(argv)

    use_gpu = not args.no_gpu
    if use_gpu and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device visible to torch; run with --no-gpu for a CPU smoke run",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    machine = torch.cuda.get_device_name(0) if use_gpu else "CPU only"
    machine += f", {os.cpu_count()} CPU cores, torch {torch.__version__}"
    print(f"gpu_bench: {machine}; building {args.items:,}-item catalogue", flush=True)
    fp32, features = synthetic_fused(args.items, args.users, args.dim)
    modules = {False: fp32}
    if use_gpu:
        modules[True] = synthetic_fused(args.items, args.users, args.dim, half=True)[0]
    variants = _variants(use_gpu, args.cpu_threads)
    repo = Path(tempfile.mkdtemp(prefix="gpu-bench-repo-"))
    write_repository(repo, modules, variants, args.max_queue_delay_us)
    user_ids = features.user_ids[np.random.default_rng(1).permutation(len(features.user_ids))]
    data = write_input_data(repo.parent / f"{repo.name}-input.json", user_ids[:2048].tolist(), args.k)

    inprocess = {}
    devices = {"KIND_GPU": "cuda", "KIND_CPU": "cpu"}
    sync = torch.cuda.synchronize if use_gpu else None
    torch.set_num_threads(args.cpu_threads)
    for _, model, kind, half, _ in variants:
        run = module_runner(modules[half], devices[kind])
        inprocess[model] = measure_inprocess(contract_pipeline(run), user_requests(user_ids, args.k), args.batch,
                                             seconds=3, label=model, synchronize=sync).recommendations_per_s
        print(f"  in-process {model} batch {args.batch}: {inprocess[model]:,.0f} recs/s", flush=True)
    if use_gpu:  # free the GPU copies before the server's instances load theirs
        for module in modules.values():
            module.to("cpu")
        torch.cuda.empty_cache()

    notes, rows, results = [], [], []
    # the python-based pytorch backend, as measured in the earlier GPU sessions: the native
    # libtorch backend (serve/native) is built and tested on CPU only so far, and its
    # compile would eat into the 5-minute device budget
    config = ServerConfig(model_repository=repo, startup_timeout_s=400, native_backends=False)
    with TritonServer(config) as server:
        print(f"  server ready after {time.perf_counter() - started:.0f} s", flush=True)
        check_users = user_ids[:args.batch]
        reference_ids, reference_scores = module_runner(fp32, "cpu")(
            check_users.reshape(-1, 1), np.full((len(check_users), 1), args.k, np.int32))
        for ensemble, model, _, half, _ in variants:
            with RecommendClient(server.grpc_url, model=ensemble, timeout_s=120) as client:
                ids, scores = client.recommend(check_users, args.k)
            if half:
                notes.append(f"{model}: top-{args.k} overlap with FP32 CPU = "
                             f"{overlap_at_k(ids, reference_ids):.4f} (FP16 catalogue)")
            else:
                diff = float(np.abs(scores - reference_scores).max())
                same = overlap_at_k(ids, reference_ids)
                notes.append(f"{model}: served vs in-process FP32 CPU: top-{args.k} overlap {same:.4f}, "
                             f"max |score diff| {diff:.2e}")
        plan = [(ensemble, model, args.batch) for ensemble, model, *_ in variants]
        if use_gpu:
            plan.append(("recommend_gpu_fp16", "fused_gpu_fp16", 1))
        for ensemble, model, batch in plan:
            perf = PerfConfig(model_name=ensemble, url=server.grpc_url, concurrency=(args.concurrency,),
                              batch_size=batch, input_data=data, stability_percentage=25,
                              measurement_interval_ms=args.measurement_interval_ms, max_trials=6)
            result = run_sweep(perf, repo.parent / f"{repo.name}-perf" / f"{ensemble}-b{batch}",
                               progress=False)
            results.append(result)
            peak = result.peak()
            rows.append({"model": model, "batch": batch, "concurrency": args.concurrency,
                         "served_recs_per_s": peak.throughput_infer_per_s,
                         "p50_ms": peak.p50_us / 1e3, "p99_ms": peak.p99_us / 1e3,
                         **({"inprocess_recs_per_s": inprocess[model]} if batch == args.batch else {})})
            print(f"  served {ensemble} batch {batch}: {peak.throughput_infer_per_s:,.0f} recs/s, "
                  f"p99 {peak.p99_us / 1e3:.2f} ms", flush=True)
    served = {row["model"]: row["served_recs_per_s"] for row in rows if row["batch"] == args.batch}
    if use_gpu:
        best_gpu = max(served["fused_gpu_fp16"], served["fused_gpu_fp32"])
        notes.append(f"GPU / CPU served throughput at batch {args.batch}: "
                     f"{best_gpu / served['fused_cpu_fp32']:.1f}x (target >= 20x)")
    notes.append(f"total wall time {time.perf_counter() - started:.0f} s")
    summary = {"machine": machine, "items": args.items, "users": args.users, "dim": args.dim,
               "k": args.k, "rows": rows, "notes": notes}
    (args.out / "gpu_summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "gpu_report.md").write_text(render(summary))
    write_report(results, args.out / "perf", {"machine": machine, "items": args.items})
    print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
