"""``recdeploy evaluate``: a checkpoint's test metrics next to its baselines, or the results table.

    recdeploy evaluate --run runs/demo
    recdeploy evaluate --runs runs/* [--results docs/results.md]

With ``--runs`` it prints one row per run (model, dataset, metric, ours, best baseline,
published anchor, protocol) and writes the Markdown table to ``--results``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recdeploy.train.checkpoint import CheckpointError, load_checkpoint
from recdeploy.train.cli import format_metrics_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=Path, help="run folder holding checkpoint/")
    which.add_argument("--runs", type=Path, nargs="+", help="run folders: print the results table")
    parser.add_argument("--results", type=Path, default=Path("docs/results.md"),
                        help="where --runs writes the Markdown table (default: docs/results.md)")
    args = parser.parse_args(argv)
    if args.runs:
        from recdeploy.train.results import load_rows, markdown_table, results_document
        rows = load_rows(args.runs)
        if not rows:
            print(f"recdeploy evaluate: no checkpoint/card.json in any of {len(args.runs)} run "
                  "folders; train one with `recdeploy train --out RUN_DIR`", file=sys.stderr)
            return 2
        print(markdown_table(rows))
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(results_document(rows))
        print(f"written: {args.results}")
        return 0
    try:
        checkpoint = load_checkpoint(args.run)
    except CheckpointError as err:
        print(f"recdeploy evaluate: {err}", file=sys.stderr)
        return 2
    print(format_metrics_table(checkpoint.card))
    return 0
