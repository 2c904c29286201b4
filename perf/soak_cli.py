"""``recdeploy soak``: soak and hot-swap benchmarks of a served entry (see perf/soak.py).

    recdeploy soak --repository model_repository --duration 60 --concurrency 64
    recdeploy soak --repository model_repository --swap-onnx other/model.onnx --skip-soak
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from recdeploy.perf.hot_swap import SwapResult, hot_swap
from recdeploy.perf.soak import SoakResult, soak
from recdeploy.perf.soak import __doc__ as SOAK_DOC


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recdeploy soak", description=SOAK_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--entry", default=None, help="the entry to load (default: the repository's first)")
    parser.add_argument("--out", type=Path, default=Path("reports/soak"))
    parser.add_argument("--duration", type=float, default=60.0, help="soak seconds (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=64, help="default: %(default)s")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0,
                        help="fail when server + stub RSS grows more (default: %(default)s)")
    parser.add_argument("--swap-onnx", type=Path, default=None,
                        help="a different export of the entry's scoring model (same catalogue): also "
                             "run the hot swap")
    parser.add_argument("--swap-model", default=None,
                        help="the model to swap (default: the one the entry's scenario names)")
    parser.add_argument("--swap-duration", type=float, default=30.0, help="default: %(default)s")
    parser.add_argument("--swap-concurrency", type=int, default=16, help="default: %(default)s")
    parser.add_argument("--skip-soak", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    passed = True
    try:
        if not args.skip_soak:
            passed &= _report_soak(soak(args.repository, args.out, args.concurrency, args.duration, args.k,
                                        args.max_rss_growth_mib, args.entry), args.out)
        if args.swap_onnx is not None:
            passed &= _report_swap(hot_swap(args.repository, args.swap_onnx, args.out, args.swap_concurrency,
                                            args.swap_duration, args.k, args.entry, args.swap_model), args.out)
    except ValueError as error:
        print(f"recdeploy soak: {error}", file=sys.stderr)
        return 2
    return 0 if passed else 1


def _report_soak(result: SoakResult, out: Path) -> bool:
    (out / "soak.json").write_text(json.dumps(asdict(result) | {"passed": result.passed}, indent=1))
    print(f"soak {result.entry}: c={result.concurrency} {result.duration_s:.0f}s "
          f"{result.load.infer_per_s:.0f} infer/s p99 {result.load.p99_ms:.1f} ms; "
          f"server success {result.server_success} failure {result.server_failure}; "
          f"perf_analyzer {'ok' if result.load.ok else 'FAILED: ' + result.load.error[-300:]}; "
          f"RSS {result.rss_start_mib:.0f} -> {result.rss_end_mib:.0f} MiB (peak "
          f"{result.rss_peak_mib:.0f}), growth {result.rss_growth_mib:+.1f} MiB "
          f"(bound {result.max_rss_growth_mib:.0f}): {'PASS' if result.passed else 'FAIL'}")
    return result.passed


def _report_swap(swap: SwapResult, out: Path) -> bool:
    (out / "hot_swap.json").write_text(json.dumps(asdict(swap) | {"passed": swap.passed}, indent=1))
    print(f"hot swap {swap.entry} ({swap.model}): c={swap.concurrency} {swap.duration_s:.0f}s "
          f"{swap.load.infer_per_s:.0f} infer/s p99 {swap.load.p99_ms:.1f} ms; load "
          f"{swap.load_requests} ok / {swap.load_failures} failed "
          f"{'' if swap.load.ok else '(' + swap.load.error[-300:] + ')'}; probe "
          f"{swap.probe_answers} answers, {len(swap.probe_errors)} errors, "
          f"{swap.unexpected_answers} unexpected; publish call {swap.publish_call_s:.2f} s, "
          f"first v2 answer after {swap.publish_to_first_v2_s} s, stale v1 after publish "
          f"{swap.stale_v1_after_publish}; rollback call {swap.rollback_call_s:.2f} s, first v1 "
          f"after {swap.rollback_to_first_v1_s} s, stale v2 {swap.stale_v2_after_rollback}: "
          f"{'PASS' if swap.passed else 'FAIL'}")
    return swap.passed


if __name__ == "__main__":
    sys.exit(main())
