"""``recdeploy perf``: measure a served recommender with perf_analyzer and write a report.

    recdeploy perf --url 127.0.0.1:8001 --model recommend --users users.txt -k 10 \\
        --batch-size 1,32 --concurrency 1,2,4,8 --out reports/perf
    python -m recdeploy.perf --help

A thin shell over recdeploy.perf.analyzer.run_sweeps and recdeploy.perf.report.write_report.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EPILOG = """\
what it does:
  1. writes OUT/input_data.json: one perf_analyzer step per user id from --users
     (ids of real users from your dataset; perf_analyzer cycles through them and
     packs --batch-size consecutive ids into each request)
  2. runs perf_analyzer once per (model, batch size, concurrency level), without a
     shell; raw CSVs and logs land in OUT/raw/
  3. writes OUT/perf.csv, OUT/summary.json, OUT/report.md and
     OUT/throughput_vs_p99.png (one curve per model and batch size)

reading the numbers:
  inferences/s is perf_analyzer's throughput; it counts every user row of a batch,
  so it equals recommendations/s. requests/s = inferences/s / batch size.
  Latencies are per request (one batch), client side, in ms.

examples:
  recdeploy perf --url 127.0.0.1:8001 --model recommend --users 1,2,3,4,5,6,7,8
  recdeploy perf --model recommend,recommend_int8 --users runs/demo/test_users.txt \\
      --batch-size 1,32 --concurrency 1,2,4,8 --measurement-interval-ms 5000

perf_analyzer comes from the tritonclient[all]==2.51.0 wheel; set PERF_ANALYZER to use
another binary (the GPU bundle does).
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,2,4, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recdeploy perf", description="Benchmark a served recommender ensemble with perf_analyzer.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_argument_group("what to measure")
    target.add_argument("--url", default="127.0.0.1:8001",
                        help="server host:port, no scheme (gRPC default port 8001, HTTP 8000) [%(default)s]")
    target.add_argument("--protocol", choices=("grpc", "http"), default="grpc", help="[%(default)s]")
    target.add_argument("--model", type=_name_list, default=(),
                        help="served entries (ensembles or models), comma-separated, e.g. "
                             "recommend,recommend_int8 (required without --lab; with --lab: "
                             "default every entry of the repository)")
    target.add_argument("--users",
                        help="real user ids: a file (one per line, or comma/space separated) or a comma list "
                             "(required unless --lab, which takes them from the repository)")
    target.add_argument("-k", type=int, default=10, help="top-K asked for in every request [%(default)s]")
    target.add_argument("--dataset", help="dataset name recorded in the report (e.g. ml-100k)")
    load = parser.add_argument_group("load")
    load.add_argument("--batch-size", type=_int_list, default=(1,),
                      help="users per request, comma-separated for several [1]")
    load.add_argument("--concurrency", type=_int_list, default=(1, 2, 4),
                      help="concurrent requests, increasing, comma-separated [1,2,4]")
    load.add_argument("--measurement-interval-ms", type=int, default=2000,
                      help="perf_analyzer window length [%(default)s]")
    load.add_argument("--stability-percentage", type=float, default=10.0,
                      help="max spread of 3 windows that counts as stable [%(default)s]")
    load.add_argument("--max-trials", type=int, default=10, help="windows before giving up [%(default)s]")
    load.add_argument("--percentile", type=int, help="stabilise on this latency percentile instead of the mean")
    load.add_argument("--shared-memory", choices=("none", "system", "cuda"), default="none", help="[%(default)s]")
    load.add_argument("--metrics-url", help="Triton metrics host:port/metrics; adds --collect-metrics (GPU only)")
    load.add_argument("--analyzer-args", type=shlex.split, default=(), metavar="'FLAGS'",
                      help="extra perf_analyzer flags, one string after '=' "
                           "(e.g. --analyzer-args='--async --max-threads=2')")
    load.add_argument("--timeout-s", type=float, help="per perf_analyzer process (default from the window settings)")
    lab = parser.add_argument_group("lab: start a server on a repository, compare served with in-process")
    lab.add_argument("--lab", type=Path, metavar="REPOSITORY",
                     help="measure every entry of this exported repository (or those named by --model) "
                          "served AND in-process at each --batch-size, on request rows built from its "
                          "real users and items, with the quality of the served answers; starts and "
                          "stops its own server")
    lab.add_argument("--queue-delays-us", type=_int_list, default=(0,), metavar="US",
                     help="dynamic batching max_queue_delay_microseconds values to sweep [0]")
    lab.add_argument("--instances", type=_int_list, default=(1,), metavar="N",
                     help="instances per model to sweep [1]")
    lab.add_argument("--server-args", type=shlex.split, default=(), metavar="'FLAGS'",
                     help="extra tritonserver flags, one string after '=' "
                          "(e.g. --server-args='--http-thread-count=4')")
    lab.add_argument("--scale", type=_int_list, metavar="ITEMS",
                     help="also measure the fused model on synthetic catalogues of these sizes "
                          "(e.g. 100000,1000000) against the machine's own GEMM roofline")
    parser.add_argument("--out", type=Path, default=Path("reports/perf"), help="output folder [%(default)s]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_lab_command(args) -> int:
    from recdeploy.perf.analyzer import PerfAnalyzerFailedError, PerfAnalyzerNotFoundError
    from recdeploy.perf.lab import LabConfig, LabError, run_lab
    from recdeploy.perf.lab_report import write_lab_report

    models = args.model
    try:
        config = LabConfig(repository=args.lab, ensembles=models, batch_sizes=args.batch_size,
                           concurrency=args.concurrency, k=args.k, protocol=args.protocol,
                           measurement_interval_ms=args.measurement_interval_ms,
                           stability_percentage=max(args.stability_percentage, 25.0),
                           schedules=tuple((d, n) for d in args.queue_delays_us for n in args.instances),
                           server_args=tuple(args.server_args), analyzer_args=tuple(args.analyzer_args))
        rows, results = run_lab(config, args.out, progress=not args.no_progress)
    except (LabError, ValueError) as exc:
        print(f"recdeploy perf: {exc}", file=sys.stderr)
        return 2
    except (PerfAnalyzerNotFoundError, PerfAnalyzerFailedError) as exc:
        print(f"recdeploy perf: {exc}", file=sys.stderr)
        return 1
    metadata = {"repository": str(args.lab), "k": args.k, "client": "perf_analyzer on the same machine"}
    if args.scale:
        from recdeploy.perf.scale import render_scale_markdown, run_scale
        scale_rows = run_scale(args.scale, args.out, threads=2)
        (args.out / "scale.md").write_text(render_scale_markdown(scale_rows))
    report = write_lab_report(rows, results, args.out, metadata)
    if args.scale:
        report.write_text(report.read_text() + "\n" + (args.out / "scale.md").read_text())
    print(report.read_text())
    print(f"report: {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.lab:
        return run_lab_command(args)
    if not args.users or not args.model:
        print("recdeploy perf: --model and --users are required (or use --lab REPOSITORY)", file=sys.stderr)
        return 2
    from recdeploy.perf.analyzer import PerfAnalyzerFailedError, PerfAnalyzerNotFoundError, PerfConfig, run_sweeps
    from recdeploy.perf.input_data import read_user_ids, write_input_data
    from recdeploy.perf.report import render_table, write_report

    try:
        users = read_user_ids(args.users)
        input_path = write_input_data(args.out / "input_data.json", users, args.k, max(args.batch_size or (1,)))
        configs = [PerfConfig(model_name=model, url=args.url, protocol=args.protocol, concurrency=args.concurrency,
                              batch_size=batch, input_data=input_path,
                              measurement_interval_ms=args.measurement_interval_ms,
                              stability_percentage=args.stability_percentage, max_trials=args.max_trials,
                              percentile=args.percentile, shared_memory=args.shared_memory,
                              metrics_url=args.metrics_url, timeout_s=args.timeout_s,
                              extra_args=tuple(args.analyzer_args))
                   for model in args.model for batch in args.batch_size]
        if not configs:
            raise ValueError("--model and --batch-size must each name at least one value")
    except ValueError as exc:
        print(f"recdeploy perf: {exc}", file=sys.stderr)
        return 2
    try:
        results = run_sweeps(configs, args.out, progress=not args.no_progress)
    except (PerfAnalyzerNotFoundError, PerfAnalyzerFailedError) as exc:
        print(f"recdeploy perf: {exc}", file=sys.stderr)
        return 1
    metadata = {"models": ", ".join(args.model), "url": args.url, "protocol": args.protocol,
                "k": args.k, "users": len(users)}
    if args.dataset:
        metadata["dataset"] = args.dataset
    files = write_report(results, args.out, metadata)
    for result in results:
        print(f"\n{result.label}\n{render_table(result)}")
    print(f"\nreport: {files.markdown}\nplot:   {files.plot}\ndata:   {files.csv}, {files.summary}")
    return 0
