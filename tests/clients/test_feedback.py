"""Feedback events: logged into the stream, applied exactly once to the online store, and
kept across a Redis crash when AOF fsyncs every write; the store answers cold starts while
Redis is paused, down or restarting, and comes back by itself."""
import threading
import time

import numpy as np
import pytest

from recdeploy.clients.feedback import Consumer, Event, FeedbackError, FeedbackLog, apply_pending, read_events
from recdeploy.clients.feedback_cli import main as feedback_main
from recdeploy.export.feature_store import parse_store_url, write_redis_store
from recdeploy.export.triton_python import load_store

store_module = load_store()
USERS = np.array([10, 20, 30], dtype=np.int64)
ITEM_IDS = np.array([100, 200, 300, 400], dtype=np.int64)      # internal index = position


def small_store(url, prefix, timeout_ms=100, retry_after_ms=200):
    """Three users; 10 saw item 100, 20 saw 200 and 300; 30 saw nothing."""
    spec = parse_store_url(url, prefix, timeout_ms, retry_after_ms)
    write_redis_store(spec, USERS, {"seen": (np.array([0, 1, 3, 3]), np.array([0, 1, 2]))}, ITEM_IDS)
    return spec


def seen_of(spec, users):
    store = store_module.RedisStore(spec.url, spec.prefix, spec.timeout_ms, spec.retry_after_ms)
    rows = store.fetch(np.asarray(users), ("seen",))
    padded = rows.fields["seen"].padded(-1)
    return [sorted(int(i) for i in row if i >= 0) for row in padded], rows.known


def test_clicks_are_applied_once_impressions_and_strangers_are_counted(redis_prefix):
    spec = small_store("redis://127.0.0.1:6379/0", redis_prefix)
    log = FeedbackLog(spec)
    ids = log.log([Event(30, 400), Event(30, 400, "impression"), Event(10, 300), Event(99, 100),
                   Event(20, 999)])
    assert len(ids) == 5
    stats = apply_pending(spec)
    assert (stats.read, stats.applied, stats.impressions, stats.skipped) == (5, 2, 1, 2)
    assert seen_of(spec, [10, 30])[0] == [[0, 2], [3]]
    assert apply_pending(spec).read == 0                     # acknowledged: never applied twice
    assert seen_of(spec, [30])[0] == [[3]]
    assert [e.user for e in read_events(spec)] == [30, 30, 10, 99, 20]


def test_a_history_store_adds_users_it_did_not_know(redis_prefix):
    spec = parse_store_url("redis://127.0.0.1:6379/0", redis_prefix)
    write_redis_store(spec, USERS, {"history": (np.array([0, 1, 1, 1]), np.array([0])),
                                    "seen": (np.array([0, 1, 1, 1]), np.array([0]))}, ITEM_IDS,
                      {"new_users": True})
    FeedbackLog(spec).log([Event(77, 300), Event(77, 100)])
    assert apply_pending(spec).applied == 2
    store = store_module.RedisStore(spec.url, spec.prefix)
    rows = store.fetch(np.array([77, 10]), ("history", "seen"))
    assert rows.known.tolist() == [True, True] and rows.index.tolist() == [0, 0]
    assert rows.fields["history"].padded(-1).tolist() == [[2, 0], [0, -1]]


def test_a_consumer_that_died_before_acknowledging_applies_its_batch_on_restart(redis_prefix):
    spec = small_store("redis://127.0.0.1:6379/0", redis_prefix)
    FeedbackLog(spec).log([Event(30, 200), Event(30, 300)])
    dying = Consumer(spec, "c1")
    dying.client.xreadgroup("apply", "c1", {dying.stream: ">"}, count=10)   # read, then "crash"
    assert seen_of(spec, [30])[0] == [[]]
    stats = Consumer(spec, "c1").drain()
    assert stats.applied == 2 and seen_of(spec, [30])[0] == [[1, 2]]


def test_a_bad_event_kind_is_refused():
    with pytest.raises(FeedbackError, match="event kind must be one of impression, click, got 'buy'"):
        Event(1, 2, "buy")


def test_acknowledged_events_survive_a_redis_crash_with_aof_always(own_redis):
    spec = small_store(own_redis.url, "crash")
    acknowledged = FeedbackLog(spec).log([Event(30, 100 * (1 + i % 4)) for i in range(200)])
    assert len(acknowledged) == 200
    own_redis.stop(kill=True)                     # SIGKILL: no shutdown save, only the AOF
    own_redis.start()
    assert [e.user for e in read_events(spec)] == [30] * 200
    stats = apply_pending(spec)
    assert stats.applied == 200 and seen_of(spec, [30])[0][0] == sorted([0, 1, 2, 3] * 50)


def test_the_store_answers_cold_starts_while_redis_is_paused_down_or_restarting(own_redis):
    spec = small_store(own_redis.url, "faults", timeout_ms=100, retry_after_ms=200)
    store = store_module.RedisStore(spec.url, spec.prefix, spec.timeout_ms, spec.retry_after_ms)
    assert store.fetch(USERS, ("seen",)).known.all()
    admin = spec.client()

    # slow: Redis paused for 1.5 s; the lookup gives up after its 100 ms timeout
    threading.Thread(target=admin.execute_command, args=("CLIENT", "PAUSE", "1500", "ALL")).start()
    time.sleep(0.1)
    start = time.perf_counter()
    assert not store.fetch(USERS, ("seen",)).known.any()
    assert time.perf_counter() - start < 0.5
    time.sleep(1.6)
    assert store.fetch(USERS, ("seen",)).known.all() and not store.outage   # back by itself

    # down, then restarted (AOF: the store comes back with it)
    own_redis.stop(kill=True)
    time.sleep(0.25)
    start = time.perf_counter()
    assert not store.fetch(USERS, ("seen",)).known.any()
    assert time.perf_counter() - start < 0.5 and store.outage
    own_redis.start()
    time.sleep(0.25)
    rows = store.fetch(USERS, ("seen",))
    assert rows.known.all() and rows.fields["seen"].lengths.tolist() == [1, 2, 0]


def test_cli_logs_consumes_and_reports(tmp_path, redis_prefix, capsys):
    from recdeploy.export.feature_store import store_files

    spec = small_store("redis://127.0.0.1:6379/0", redis_prefix)
    (tmp_path / "feature_lookup" / "1").mkdir(parents=True)
    for name, content in store_files(spec).items():
        (tmp_path / "feature_lookup" / "1" / name).write_bytes(content)
    repo = ["--repository", str(tmp_path)]
    assert feedback_main(["log", *repo, "--user", "30", "--user", "10", "--item", "400"]) == 0
    assert feedback_main(["status", *repo]) == 0
    assert "holds 2 events" in capsys.readouterr().out
    assert feedback_main(["consume", *repo]) == 0
    assert "2 clicks applied to 2 users" in capsys.readouterr().out
    assert seen_of(spec, [10, 30])[0] == [[0, 3], [3]]
    assert feedback_main(["log", "--repository", str(tmp_path / "nothing"), "--user", "1", "--item", "2"]) == 2
    assert "reads no Redis store" in capsys.readouterr().err
