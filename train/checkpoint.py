"""Checkpoints: ``<run>/checkpoint/model.pt`` (weights) + ``card.json`` (what it is and how good).

The card records architecture, hyper-parameters, vocabulary sizes, the dataset fingerprint
and the measured metrics, so export and serving can refuse a mismatched dataset.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from recdeploy.train.config import TrainConfig
from recdeploy.train.models import build_model


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    model: torch.nn.Module
    config: TrainConfig
    card: dict


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoint"


def save_checkpoint(run_dir: Path, model: torch.nn.Module, config: TrainConfig, card: dict) -> Path:
    out = checkpoint_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "card.json").write_text(json.dumps({**card, "config": json.loads(config.to_json())},
                                              indent=2, sort_keys=True))
    return out


def load_checkpoint(run_dir: Path) -> Checkpoint:
    directory = checkpoint_dir(run_dir)
    card_path, weights = directory / "card.json", directory / "model.pt"
    if not card_path.is_file() or not weights.is_file():
        raise CheckpointError(f"no checkpoint in {directory} (expected card.json and model.pt); "
                              "train one with `recdeploy train --out RUN_DIR`")
    card = json.loads(card_path.read_text())
    config = TrainConfig.from_saved(card["config"])   # also the flat dict of older cards
    model = build_model(config.model, **card["model_args"])
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    return Checkpoint(model=model, config=config, card=card)
