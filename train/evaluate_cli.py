"""``recdeploy evaluate``: print a checkpoint's full-ranking metrics next to most-popular.

    recdeploy evaluate --run runs/demo
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
    parser.add_argument("--run", type=Path, required=True, help="run folder holding checkpoint/")
    args = parser.parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.run)
    except CheckpointError as err:
        print(f"recdeploy evaluate: {err}", file=sys.stderr)
        return 2
    print(format_metrics_table(checkpoint.card))
    return 0
