"""The online store: the Redis store answers exactly what the file store answers, sees live
writes on the next call, and falls back to cold starts within its timeout when Redis is gone."""
import time

import numpy as np
import pytest

from recdeploy.export.feature_store import (
    FeatureStoreError,
    append_items,
    parse_store_url,
    store_item_ids,
    write_redis_store,
)
from recdeploy.export.scenarios.retrieval import build_feature_arrays, lookup_module
from recdeploy.export.scenarios.sequential import build_history_arrays, history_module
from recdeploy.export.triton_python import load_store
from recdeploy.train.tasks.sequential import sequential_dataset

REDIS_URL = "redis://127.0.0.1:6379/0"
store_module = load_store()


def redis_store(prefix, url=REDIS_URL, timeout_ms=200, retry_after_ms=1000):
    return store_module.RedisStore(url, prefix, timeout_ms, retry_after_ms)


@pytest.fixture(scope="module")
def features(ml100k):
    return build_feature_arrays(ml100k)


@pytest.fixture(scope="module")
def histories(ml100k):
    return build_history_arrays(ml100k, sequential_dataset(ml100k))


def test_redis_seen_items_equal_the_file_store_for_every_user(features, redis_prefix):
    spec = parse_store_url(REDIS_URL, redis_prefix)
    write_redis_store(spec, features.user_ids, {"seen": (features.seen_indptr, features.seen_items)},
                      features.item_ids)
    users = np.r_[features.user_ids, -1, 10 ** 9, features.user_ids[:3]].reshape(-1, 1)
    table = lookup_module.UserTable(features.user_ids, features.seen_indptr, features.seen_items)
    want = lookup_module.lookup_users(users, table)
    got = lookup_module.lookup_users(users, redis_store(redis_prefix))
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert want[2].sum() == len(features.user_ids) + 3
    assert np.array_equal(store_item_ids(spec.client(), redis_prefix), features.item_ids)


def test_redis_histories_equal_the_file_store(histories, redis_prefix):
    csr = {"history": (histories.history_indptr, histories.history_items),
           "seen": (histories.seen_indptr, histories.seen_items)}
    write_redis_store(parse_store_url(REDIS_URL, redis_prefix), histories.user_ids, csr, histories.item_ids)
    table = history_module.HistoryTable(histories.user_ids, *csr["history"], *csr["seen"], max_len=20)
    store = redis_store(redis_prefix)
    store.max_len = 20
    users = np.r_[histories.user_ids[::7], 10 ** 9]
    for a, b in zip(history_module.lookup_histories(users, store), history_module.lookup_histories(users, table)):
        assert np.array_equal(a, b)


def test_a_written_interaction_is_seen_by_the_very_next_fetch(histories, redis_prefix):
    csr = {"history": (histories.history_indptr, histories.history_items),
           "seen": (histories.seen_indptr, histories.seen_items)}
    spec = parse_store_url(REDIS_URL, redis_prefix)
    write_redis_store(spec, histories.user_ids, csr, histories.item_ids)
    store = redis_store(redis_prefix)
    store.max_len = 5
    user = int(histories.user_ids[4])
    before, seen_before, _ = history_module.lookup_histories(np.array([user]), store)
    append_items(spec.client(), redis_prefix, user, [999, 1000], ("history", "seen"))
    after, seen_after, known = history_module.lookup_histories(np.array([user]), store)
    assert after[0].tolist() == before[0, 2:].tolist() + [1000, 1001]   # tokens = item + 1
    assert seen_after[0, -2:].tolist() == [999, 1000] and known[0, 0]
    assert seen_after.shape[1] == seen_before.shape[1] + 2


def test_redis_down_answers_cold_starts_within_the_timeout_and_then_stops_asking():
    store = redis_store("nobody", url="redis://127.0.0.1:1/0", timeout_ms=100, retry_after_ms=60_000)
    users = np.array([[1], [2]])
    start = time.perf_counter()
    index, seen, known = lookup_module.lookup_users(users, store)
    first = time.perf_counter() - start
    assert not known.any() and seen.shape == (2, 0) and index.ravel().tolist() == [0, 0]
    start = time.perf_counter()
    lookup_module.lookup_users(users, store)
    assert time.perf_counter() - start < 0.01      # inside retry_after: Redis is not asked
    assert first < 1.0 and store.fallbacks == 2 and store.outage


def test_a_store_without_its_meta_key_is_a_cold_start_not_half_an_answer(features, redis_prefix):
    spec = parse_store_url(REDIS_URL, redis_prefix)
    write_redis_store(spec, features.user_ids, {"seen": (features.seen_indptr, features.seen_items)},
                      features.item_ids)
    spec.client().delete(store_module.meta_key(redis_prefix))
    _, _, known = lookup_module.lookup_users(features.user_ids[:3], redis_store(redis_prefix))
    assert not known.any()


def test_open_store_picks_redis_from_store_json_and_the_arrays_otherwise(tmp_path, features, redis_prefix):
    from recdeploy.export.feature_store import store_files

    for name, content in store_files(parse_store_url(REDIS_URL, redis_prefix, timeout_ms=30)).items():
        (tmp_path / name).write_bytes(content)
    store = lookup_module.open_user_store(str(tmp_path))
    assert isinstance(store, store_module.RedisStore) and store.prefix == redis_prefix
    (tmp_path / "store.json").unlink()
    for name in ("user_ids", "seen_indptr", "seen_items"):
        np.save(tmp_path / f"{name}.npy", getattr(features, name))
    assert isinstance(lookup_module.open_user_store(str(tmp_path)), lookup_module.UserTable)


@pytest.mark.parametrize("url, message", [
    ("http://x:1", "the only online store is Redis"),
    ("redis:///0", "names no host"),
    ("redis://h:1/zero", "database must be a number"),
])
def test_a_bad_store_url_is_refused(url, message):
    with pytest.raises(FeatureStoreError, match=message):
        parse_store_url(url, "p")


def test_writing_to_an_unreachable_redis_says_where():
    spec = parse_store_url("redis://127.0.0.1:1/0", "p")
    with pytest.raises(FeatureStoreError, match="cannot write the feature store to redis://127.0.0.1:1/0"):
        write_redis_store(spec, np.array([1]), {"seen": (np.array([0, 0]), np.zeros(0))}, np.array([5]))


def test_export_cli_refuses_a_bad_store_before_touching_anything(tmp_path, capsys):
    from recdeploy.export.cli import main

    code = main(["--run", str(tmp_path / "no-run"), "--repository", str(tmp_path / "repo"),
                 "--feature-store", "memcached://127.0.0.1:11211"])
    assert code == 2 and "the only online store is Redis" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()
