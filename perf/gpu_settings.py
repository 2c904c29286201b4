"""The settings of one GPU benchmark run (``python -m recdeploy.perf.gpu_bench --help``)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def parse_args(argv: list[str] | None, description: str = "") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.perf.gpu_bench", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports/gpu")))
    parser.add_argument("--items", type=int, default=None, help="[10^6; 20000 with --no-gpu]")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--batches", default="1,32,64,128,256", help="in-process batch sizes [%(default)s]")
    parser.add_argument("--served-batch", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=64, help="items per chunk of the two-stage top-K")
    parser.add_argument("--groups", type=int, default=16,
                        help="chunks per group of the three-stage top-K (gpu_fp16_cascade; 0: off)")
    parser.add_argument("--triton-chunk", type=int, default=8, help="items per chunk of the Triton kernel (0: off)")
    parser.add_argument("--triton-groups", type=int, default=64, help="chunks per group after the Triton kernel")
    parser.add_argument("--profile", default="graph_fp32,graph_fp16",
                        help="variants profiled at the served batch (and the fastest eager GPU-shaped one)")
    parser.add_argument("--aoti-budget-s", type=float, default=80, help="the AOTInductor part [%(default)s]")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--measurement-interval-ms", type=int, default=1000)
    parser.add_argument("--max-queue-delay-us", type=int, default=200)
    parser.add_argument("--deadline-s", type=float, default=270, help="the whole run [%(default)s]")
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out")
    parser.add_argument("--no-gpu", action="store_true", help="everything on the CPU (a smoke run anywhere)")
    args = parser.parse_args(argv)
    args.items = args.items or (20_000 if args.no_gpu else 1_000_000)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.profile = [s.strip() for s in args.profile.split(",") if s.strip()]
    return args
