"""The Redis feature store on the real tritonserver: served == in-process, live writes used by
the very next request, and Redis stopped / restarted under a running server."""
import time

import numpy as np
import pytest
import torch

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.feature_store import append_items, parse_store_url
from recdeploy.export.scenarios.retrieval import InProcessRecommender, export_retrieval, known_user_ids
from recdeploy.export.scenarios.sequential import ENSEMBLE, SequentialInProcess, export_sequential
from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.config import TrainConfig
from recdeploy.train.tasks.sequential import sequential_dataset, train

pytestmark = pytest.mark.integration
REDIS_URL = "redis://127.0.0.1:6379/0"


def served_and_reference(server, repo, model, users, k=10):
    with RecommendClient(server.grpc_url, model=model) as client:
        ids, scores = client.recommend(users, k=k)
    return ids, scores


# ------------------------------------------------------------------ retrieval on a test-owned Redis

@pytest.fixture(scope="module")
def retrieval_redis(start_redis):
    return start_redis("always")


@pytest.fixture(scope="module")
def retrieval_repo(tmp_path_factory, trained_run, ml100k, retrieval_redis):
    run, _ = trained_run
    repo = tmp_path_factory.mktemp("online_retrieval")
    checkpoint = load_checkpoint(run)
    spec = parse_store_url(retrieval_redis.url, "online", timeout_ms=100, retry_after_ms=500)
    export_retrieval(checkpoint.model, ml100k, repo, checkpoint.card, spec)
    return repo, spec


@pytest.fixture(scope="module")
def retrieval_server(retrieval_repo):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=retrieval_repo[0])) as running:
        yield running


def test_a_redis_export_has_no_baked_lists_and_no_fused_entries(retrieval_repo):
    repo, _ = retrieval_repo
    files = {p.name for p in (repo / "feature_lookup" / "1").iterdir()}
    assert "store.json" in files and "seen_items.npy" not in files
    assert not (repo / "recommend_fused").exists()


def test_served_equals_inprocess_over_redis(retrieval_server, retrieval_repo):
    repo, _ = retrieval_repo
    users = np.r_[known_user_ids(repo)[::60], 10 ** 9]
    ids, scores = served_and_reference(retrieval_server, repo, "recommend", users)
    want_ids, want_scores = InProcessRecommender(repo).recommend(users, 10)
    assert np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_a_click_written_to_the_store_is_filtered_by_the_next_request(retrieval_server, retrieval_repo):
    repo, spec = retrieval_repo
    user = int(known_user_ids(repo)[11])
    before, _ = served_and_reference(retrieval_server, repo, "recommend", [user])
    top = int(before[0, 0])
    item_ids = InProcessRecommender(repo).item_ids
    append_items(spec.client(), spec.prefix, user, [int(np.flatnonzero(item_ids == top)[0])], ("seen",))
    after, _ = served_and_reference(retrieval_server, repo, "recommend", [user])
    assert top not in after[0].tolist()
    assert after[0, :9].tolist() == before[0, 1:].tolist()     # the rest moves up by one


def test_redis_stopped_and_restarted_under_the_server(retrieval_server, retrieval_repo, retrieval_redis):
    repo, _ = retrieval_repo
    users = known_user_ids(repo)[:4]
    personal, _ = served_and_reference(retrieval_server, repo, "recommend", users)
    reference = InProcessRecommender(repo)
    popular = reference.item_ids[np.argsort(-reference.popularity, kind="stable")[:10]]
    retrieval_redis.stop(kill=True)
    start = time.perf_counter()
    cold, _ = served_and_reference(retrieval_server, repo, "recommend", users)
    assert time.perf_counter() - start < 5.0          # one 100 ms timeout, not a hang
    assert all(row.tolist() == popular.tolist() for row in cold)
    assert retrieval_server.is_ready()
    retrieval_redis.start()                           # AOF: the store and live writes come back
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        again, _ = served_and_reference(retrieval_server, repo, "recommend", users)
        if np.array_equal(again, personal):
            break
        time.sleep(0.2)
    assert np.array_equal(again, personal)             # reconnected by itself


# ------------------------------------------------------------------ sequential on the machine's Redis

@pytest.fixture(scope="module")
def sequential_online(tmp_path_factory, ml100k):
    import redis

    from recdeploy.export.feature_store import clear_prefix

    config = TrainConfig(model="sasrec", dataset="ml-100k", dim=16, max_len=20, layers=1, epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(config, sequential_dataset(ml100k), progress=False)
    finally:
        torch.set_num_threads(threads)
    repo = tmp_path_factory.mktemp("online_sequential")
    spec = parse_store_url(REDIS_URL, f"recdeploy-test:online-seq:{repo.name}")
    try:
        export_sequential(result.model, ml100k, repo, {"dataset_fingerprint": ml100k.fingerprint()}, spec)
    except ValueError as error:
        pytest.skip(f"no Redis at 127.0.0.1:6379: {error}")
    yield repo, spec
    clear_prefix(redis.Redis.from_url(REDIS_URL), spec.prefix)


@pytest.fixture(scope="module")
def sequential_server(sequential_online):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=sequential_online[0])) as running:
        yield running


def test_sequential_served_equals_inprocess_and_follows_a_new_interaction(sequential_server, sequential_online):
    repo, spec = sequential_online
    reference = SequentialInProcess(repo)
    users = np.r_[reference.topk.load_npy(str(repo / "history_lookup" / "1"), "user_ids")[::90], 10 ** 9]
    ids, scores = served_and_reference(sequential_server, repo, ENSEMBLE, users)
    want_ids, want_scores = reference.recommend(users, 10)
    assert np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)

    user = int(users[0])
    watched = int(ids[0, 0])
    append_items(spec.client(), spec.prefix, user, [int(np.flatnonzero(reference.item_ids == watched)[0])],
                 ("history", "seen"))
    after, after_scores = served_and_reference(sequential_server, repo, ENSEMBLE, [user])
    assert watched not in after[0].tolist()
    # SASRec re-read the history: items on both lists got new scores (not a filtered old list)
    before = dict(zip(ids[0].tolist(), scores[0].tolist()))
    moved = [abs(before[i] - s) for i, s in zip(after[0].tolist(), after_scores[0].tolist()) if i in before]
    assert moved and max(moved) > 1e-4
    assert np.array_equal(after, reference.recommend(np.array([user]), 10)[0])
