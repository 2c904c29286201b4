"""recdeploy update on the real tritonserver: a warm-started SASRec is published through the
hot-swap path with the canary; a failing gate publishes nothing; a failing canary rolls back."""
import time

import numpy as np
import pytest
import torch

from recdeploy.clients.feedback import Event, FeedbackLog
from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.feature_store import clear_prefix, parse_store_url
from recdeploy.export.scenarios.sequential import ENSEMBLE, SCORER, SequentialInProcess, export_sequential
from recdeploy.serve import update as update_module
from recdeploy.serve.canary import CanaryError
from recdeploy.serve.swap import versions
from recdeploy.serve.update import UpdateConfig
from recdeploy.serve.update_cli import PUBLISHED, REFUSED, ROLLED_BACK, main, run_update
from recdeploy.train.checkpoint import save_checkpoint
from recdeploy.train.config import TrainConfig
from recdeploy.train.tasks.sequential import sequential_dataset, train

pytestmark = pytest.mark.integration
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def online(tmp_path_factory, ml100k):
    import redis

    config = TrainConfig(model="sasrec", dataset="ml-100k", dim=16, max_len=20, layers=1, epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(config, sequential_dataset(ml100k), progress=False)
    finally:
        torch.set_num_threads(threads)
    base = tmp_path_factory.mktemp("update")
    run, repo = base / "run", base / "repo"
    save_checkpoint(run, result.model, config, result.card(config, ml100k))
    spec = parse_store_url(REDIS_URL, f"recdeploy-test:update:{base.name}")
    try:
        export_sequential(result.model, ml100k, repo, {"dataset_fingerprint": ml100k.fingerprint()}, spec)
    except ValueError as error:
        pytest.skip(f"no Redis at 127.0.0.1:6379: {error}")
    yield run, repo, spec
    clear_prefix(redis.Redis.from_url(REDIS_URL), spec.prefix)


@pytest.fixture(scope="module")
def server(online):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=online[1], model_control_mode="explicit")) as running:
        yield running


@pytest.fixture(scope="module")
def clicks(online):
    """40 users each click 3 catalogue items now; returns the time just before."""
    _, repo, spec = online
    rec = SequentialInProcess(repo)
    users = rec.topk.load_npy(str(repo / "history_lookup" / "1"), "user_ids")[:40]
    rng = np.random.default_rng(0)
    since = time.time() - 1
    FeedbackLog(spec).log([Event(int(u), int(i)) for u in users for i in rng.choice(rec.item_ids, 3)])
    from recdeploy.clients.feedback import apply_pending
    assert apply_pending(spec).applied == 120
    return since


def served_equals_inprocess(server, repo):
    users = np.array(SequentialInProcess(repo).topk.load_npy(str(repo / "history_lookup" / "1"), "user_ids")[:8])
    with RecommendClient(server.grpc_url, model=ENSEMBLE) as client:
        ids, _ = client.recommend(users, k=10)
    return np.array_equal(ids, SequentialInProcess(repo).recommend(users, 10)[0])


def test_a_gate_that_cannot_pass_publishes_nothing(online, server, clicks, tmp_path, capsys):
    run, repo, _ = online
    code = run_update(run, repo, server.grpc_url, clicks, float("inf"), UpdateConfig(epochs=1, budget=-1.0),
                      tmp_path)
    assert code == REFUSED and versions(repo / SCORER) == [1] and not (run / "updates").exists()
    code = run_update(run, repo, server.grpc_url, clicks, float("inf"), UpdateConfig(epochs=1, budget=1.0,
                                                                                     min_users=1000), tmp_path)
    assert code == REFUSED and versions(repo / SCORER) == [1]
    assert "< min_users 1000: no evidence" in capsys.readouterr().out


def test_an_update_is_published_with_the_canary_and_saved(online, server, clicks, tmp_path, capsys):
    run, repo, _ = online
    argv = ["--run", str(run), "--repository", str(repo), "--url", server.grpc_url, "--since", str(clicks),
            "--epochs", "1", "--budget", "1.0", "--retired", str(tmp_path)]
    assert main(argv) == PUBLISHED
    assert "40 users clicked" in capsys.readouterr().out
    assert versions(repo / SCORER) == [1, 2] and (run / "updates" / "1" / "checkpoint" / "card.json").is_file()
    assert served_equals_inprocess(server, repo)


def test_a_failing_canary_rolls_the_version_back(online, server, clicks, tmp_path, monkeypatch):
    run, repo, _ = online
    before = versions(repo / SCORER)

    def broken_canary(*args, **kwargs):
        raise CanaryError("served answers differ (simulated)")

    monkeypatch.setattr(update_module, "run_canary", broken_canary)
    code = run_update(run, repo, server.grpc_url, clicks, float("inf"), UpdateConfig(epochs=1, budget=1.0), tmp_path)
    assert code == ROLLED_BACK and versions(repo / SCORER) == before
    assert (tmp_path / SCORER / str(before[-1] + 1)).is_dir()
    assert served_equals_inprocess(server, repo)
