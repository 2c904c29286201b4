"""Feedback events: impressions and clicks into a Redis stream, applied to the online store.

    log = FeedbackLog(spec)                      # spec: the repository's StoreSpec (store.json)
    log.log([Event(user=42, item=1193, kind="click")])   # -> stream ids: acknowledged
    stats = apply_pending(spec, consumer="c1")   # XREADGROUP -> store APPENDs + XACK, atomically

Stream ``P:events`` (P: the store's prefix), one entry per event: ``user``, ``item`` (raw ids),
``kind`` (impression | click), ``ts`` (event time, seconds). Consumer group ``apply``.

What is guaranteed:
- An event is *acknowledged* when XADD returned its id. Whether it survives a Redis restart is
  Redis's persistence setting, not ours: with ``appendonly yes`` + ``appendfsync always`` every
  acknowledged event is on disk before the reply (a crash loses none, tested by SIGKILL); with
  ``everysec`` up to ~1 s of them can go; without AOF (the project machines' Redis keeps
  nothing on disk) a restart loses the stream *and* the store.
- Application is exactly-once per consumer group: a click's APPENDs to the store and its XACK
  run in one MULTI/EXEC, so a consumer that dies before EXEC leaves the event pending (it is
  read again, from id 0, when the consumer restarts) and one that dies after leaves it applied
  and acknowledged. Pending entries of a consumer that never comes back are claimed with
  XAUTOCLAIM after ``claim_idle_ms``.
- Impressions are logged and acknowledged, not applied (the lists hold what a user took).
  Clicks on items outside the served catalogue are acknowledged and counted as ``skipped``.
  A user the store does not know is added when the store's meta says ``new_users`` (the
  sequential scenario: SASRec scores any history, so the next request is personal); where
  the scorer needs a trained user row (retrieval) the click is ``skipped``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import redis

from recdeploy.export.feature_store import FeatureStoreError, StoreSpec, append_items, store_item_ids
from recdeploy.export.triton_python import load_store

KINDS = ("impression", "click")
GROUP = "apply"
store_module = load_store()


class FeedbackError(ValueError):
    """A feedback event or setting that cannot be logged (the message says what is valid)."""


@dataclass(frozen=True)
class Event:
    user: int
    item: int
    kind: str = "click"
    ts: float = 0.0          # event time in seconds; 0 -> now

    def __post_init__(self):
        if self.kind not in KINDS:
            raise FeedbackError(f"event kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def fields(self) -> dict[str, str]:
        return {"user": str(int(self.user)), "item": str(int(self.item)), "kind": self.kind,
                "ts": repr(float(self.ts or time.time()))}

    @classmethod
    def parse(cls, data: dict) -> Event:
        text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in data.items()}
        return cls(int(text["user"]), int(text["item"]), text["kind"], float(text["ts"]))


def stream_key(prefix: str) -> str:
    return f"{prefix}:events"


class FeedbackLog:
    """The client API: ``log(events)`` -> the stream ids Redis acknowledged."""

    def __init__(self, spec: StoreSpec, timeout_s: float = 5.0):
        self.spec = spec
        self.client = spec.client(timeout_s)

    def log(self, events: Iterable[Event]) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(stream_key(self.spec.prefix), event.fields())
        try:
            return [i.decode() for i in pipe.execute()]
        except redis.RedisError as error:
            raise FeedbackError(f"feedback not logged (Redis at {self.spec.url}: {error}); "
                                f"nothing was acknowledged, send again") from error

    def close(self) -> None:
        self.client.close()


@dataclass
class ApplyStats:
    read: int = 0
    applied: int = 0            # clicks appended to a known user's lists
    impressions: int = 0
    skipped: int = 0            # unknown user or item outside the catalogue
    users: set[int] = field(default_factory=set)

    def add(self, other: ApplyStats) -> None:
        self.read += other.read
        self.applied += other.applied
        self.impressions += other.impressions
        self.skipped += other.skipped
        self.users |= other.users

    def summary(self) -> str:
        return (f"{self.read} events read: {self.applied} clicks applied to {len(self.users)} users, "
                f"{self.impressions} impressions logged, {self.skipped} skipped (unknown user or item)")


class Consumer:
    """One member of the ``apply`` group; ``step()`` applies one batch of events."""

    def __init__(self, spec: StoreSpec, name: str = "c1", claim_idle_ms: int = 60_000):
        self.spec, self.name, self.claim_idle_ms = spec, name, claim_idle_ms
        self.client = spec.client()
        self.stream = stream_key(spec.prefix)
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self.meta = json.loads(self.client.get(store_module.meta_key(spec.prefix)) or "{}")
        if not self.meta:
            raise FeatureStoreError(f"no store under {spec.prefix!r} at {spec.url}: export with "
                                    f"--feature-store first (or Redis restarted without persistence)")
        self.fields = tuple(self.meta.get("fields", ("seen",)))
        # the store's scenario says whether a user unknown at export can get lists of its own
        self.new_users = bool(self.meta.get("new_users", False))
        item_ids = store_item_ids(self.client, spec.prefix)
        self.order = np.argsort(item_ids)
        self.sorted_items = item_ids[self.order]
        self.pending_first = True

    def internal_item(self, raw: int) -> int:
        pos = int(np.searchsorted(self.sorted_items, raw))
        return int(self.order[pos]) if pos < len(self.sorted_items) and self.sorted_items[pos] == raw else -1

    def step(self, count: int = 500, block_ms: int | None = None) -> ApplyStats:
        """Read up to ``count`` events and apply them: first this consumer's own pending ones
        (read but never acknowledged: it died mid-batch), then stale ones of dead consumers,
        then new ones."""
        entries = []
        if self.pending_first:
            entries = self._read("0", count)
            if not entries:
                self.pending_first = False
                reply = self.client.xautoclaim(self.stream, GROUP, self.name, self.claim_idle_ms, "0-0",
                                               count=count)
                entries = [(i, data) for i, data in reply[1] if data]
        if not entries and not self.pending_first:
            entries = self._read(">", count, block_ms)
        return self._apply(entries)

    def _read(self, start: str, count: int, block_ms: int | None = None) -> list:
        replies = self.client.xreadgroup(GROUP, self.name, {self.stream: start}, count=count, block=block_ms)
        return [(i, data) for i, data in (replies[0][1] if replies else []) if data]

    def _apply(self, entries) -> ApplyStats:
        stats = ApplyStats(read=len(entries))
        if not entries:
            return stats
        events = [Event.parse(data) for _, data in entries]
        users = sorted({e.user for e in events if e.kind == "click"})
        known = dict(zip(users, self.client.mget([store_module.user_key(self.spec.prefix, u) for u in users])))
        pipe = self.client.pipeline(transaction=True)   # the APPENDs and the XACK: all or nothing
        for event in events:
            if event.kind == "impression":
                stats.impressions += 1
                continue
            item = self.internal_item(event.item)
            if item < 0 or (known.get(event.user) is None and not self.new_users):
                stats.skipped += 1
                continue
            if known.get(event.user) is None:   # a history-based scorer needs no trained row
                pipe.set(store_module.user_key(self.spec.prefix, event.user), -1)
                known[event.user] = b"-1"
            append_items(self.client, self.spec.prefix, event.user, [item], self.fields, pipe=pipe)
            stats.applied += 1
            stats.users.add(event.user)
        pipe.xack(self.stream, GROUP, *[entry_id for entry_id, _ in entries])
        pipe.execute()
        return stats

    def drain(self, count: int = 500) -> ApplyStats:
        """Apply everything waiting now (pending first); returns the totals."""
        total = ApplyStats()
        while True:
            stats = self.step(count)
            total.add(stats)
            if stats.read == 0 and not self.pending_first:
                return total

    def close(self) -> None:
        self.client.close()


def apply_pending(spec: StoreSpec, consumer: str = "c1") -> ApplyStats:
    worker = Consumer(spec, consumer)
    try:
        return worker.drain()
    finally:
        worker.close()


def read_events(spec: StoreSpec, since_ts: float = 0.0, until_ts: float = float("inf")) -> list[Event]:
    """Every event in the stream with since_ts <= ts < until_ts (the update reads them)."""
    client = spec.client()
    try:
        events, start = [], "-"
        while True:
            chunk = client.xrange(stream_key(spec.prefix), min=start, count=5000)
            events += [Event.parse(data) for _, data in chunk]
            if len(chunk) < 5000:
                break
            start = "(" + chunk[-1][0].decode()
        return [e for e in events if since_ts <= e.ts < until_ts]
    finally:
        client.close()
