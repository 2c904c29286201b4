"""recdeploy train --nproc: 2 ranks on this machine (gloo) against one process, and ranks that die."""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recdeploy.train.cli import main as train_main
from recdeploy.train.cli import run_training
from recdeploy.train.config import ConfigError, TrainConfig
from recdeploy.train.distributed import Group, shard
from recdeploy.train.launch import DistributedTrainingError, closed_form_note, launch, launch_training
from recdeploy.train.tasks.ctr import CtrBatch

HERE = Path(__file__).parent


def test_shard_takes_every_nth_row_of_tensors_arrays_and_batch_dataclasses():
    second = Group(rank=1, world_size=2)
    assert shard(torch.arange(5), second).tolist() == [1, 3]
    assert shard(np.arange(5), Group(rank=2, world_size=3)).tolist() == [2]
    batch = shard(CtrBatch(torch.arange(4), torch.tensor([True, False, True, False])), second)
    assert batch.rows.tolist() == [1, 3] and batch.unknown.tolist() == [False, False]
    assert shard(CtrBatch(torch.arange(4)), second).unknown is None
    assert shard(torch.arange(5), Group()).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError, match="cannot split a batch of type list"):
        shard([1, 2], second)


def test_closed_form_models_say_they_ignore_nproc():
    assert "item_knn is fitted in closed form" in closed_form_note(TrainConfig.for_model("item_knn"), 2)
    assert closed_form_note(TrainConfig.for_model("biased_mf"), 2) is None
    with pytest.raises(ConfigError, match="--nproc must be >= 1, got 0"):
        launch(print, (), 0)


def test_two_ranks_train_what_one_process_trains_and_only_rank_0_writes(tmp_path):
    # biased_mf's loss is a mean over examples with no random draws inside it, so splitting
    # each global batch over 2 ranks and all-reducing the weighted gradients takes the same
    # Adam steps as one process; only float summation order differs.
    config = TrainConfig.for_model("biased_mf", epochs=1)
    one = run_training(config, tmp_path / "one", progress=False)
    ranks = launch_training(config, tmp_path / "two", nproc=2, progress=False)
    assert sorted(ranks) == [0, 1]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]           # the ranks hold the same model
    two = ranks[0]["metrics"]
    assert two["test"]["rmse"] == pytest.approx(one["metrics"]["test"]["rmse"], abs=1e-4)
    assert two["valid"]["rmse"] == pytest.approx(one["metrics"]["valid"]["rmse"], abs=1e-4)
    weights_one = torch.load(tmp_path / "one" / "checkpoint" / "model.pt")
    weights_two = torch.load(tmp_path / "two" / "checkpoint" / "model.pt")
    # measured: max |diff| 2e-4 (one of 54k item-factor entries; Adam divides a near-zero
    # gradient's rounding by its near-zero second moment), mean |diff| 2e-8
    for name, tensor in weights_one.items():
        diff = (tensor - weights_two[name]).abs()
        assert diff.max() < 1e-3 and diff.mean() < 1e-6, (name, diff.max(), diff.mean())
    assert ranks[1]["checkpoint"] is None and ranks[0]["checkpoint"] == str(tmp_path / "two" / "checkpoint")
    assert sorted(p.name for p in (tmp_path / "two").rglob("*")) == ["card.json", "checkpoint", "model.pt"]
    card = json.loads((tmp_path / "two" / "checkpoint" / "card.json").read_text())
    assert card["distributed"] == {"nproc": 2, "backend": "gloo"}


@pytest.fixture
def targets(monkeypatch):
    """ddp_targets importable here and in the spawned ranks (they find it through PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    import ddp_targets
    yield ddp_targets
    sys.modules.pop("ddp_targets", None)


def test_fit_on_two_ranks_takes_the_one_process_steps_even_with_an_empty_shard(targets):
    one = targets.fit_tiny()
    ranks = launch(targets.fit_tiny, (), nproc=2)
    for rank in (0, 1):
        assert torch.allclose(ranks[rank]["weight"], one["weight"], atol=1e-6), rank
        assert torch.allclose(ranks[rank]["bias"], one["bias"], atol=1e-6), rank
        assert ranks[rank]["loss"] == pytest.approx(one["loss"], rel=1e-6)     # summed over ranks


def test_a_dead_rank_stops_the_run_with_its_exit(targets):
    started = time.monotonic()
    with pytest.raises(DistributedTrainingError,
                       match=r"rank 1 \(pid \d+\) exited with code 17: no Python error recorded"):
        launch(targets.exit_on_rank_1, (17,), nproc=2)
    assert time.monotonic() - started < 60      # rank 0 was waiting on it: not a hang


def test_a_rank_that_raises_names_its_error(targets):
    with pytest.raises(DistributedTrainingError, match="rank 1 .*rank 1 cannot read its shard"):
        launch(targets.raise_on_rank_1, (), nproc=2)


def test_a_stuck_rank_trips_the_collective_timeout(targets):
    started = time.monotonic()
    with pytest.raises(DistributedTrainingError, match="rank 0 .*exited with code 1"):
        launch(targets.hang_on_rank_1, (120.0,), nproc=2, collective_timeout_s=5)
    assert time.monotonic() - started < 60


def test_cli_refuses_a_bad_nproc(capsys):
    assert train_main(["--out", "unused", "--model", "biased_mf", "--nproc", "0"]) == 2
    assert "--nproc must be >= 1, got 0" in capsys.readouterr().err
