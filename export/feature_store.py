"""The online feature store: users' seen items and histories in Redis instead of baked .npy files.

    spec = parse_store_url("redis://127.0.0.1:6379/0", prefix="recdeploy:next")
    write_redis_store(spec, user_ids, {"history": (indptr, items), "seen": (indptr, items)}, item_ids)
    files = store_files(spec)            # {"store.json": ...} for the lookup's version folder
    append_items(client, spec.prefix, user=42, items=[17], fields=("history", "seen"))

``recdeploy export --feature-store redis://host:port/db`` calls this. The lookups read the
store through ``recdeploy_store`` (export/triton_python/recdeploy_store.py: one ``fetch`` for
the file store and the Redis store); the key layout lives there, and this module writes it.
Item values are *internal* item indices (the scorer's columns); ``P:items`` maps them back to
raw ids, so the feedback consumer can translate raw item ids in events.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import redis

from recdeploy.export.triton_python import load_store

store_module = load_store()


class FeatureStoreError(ValueError):
    """A feature-store URL or option that cannot work (the message says what is valid)."""


@dataclass(frozen=True)
class StoreSpec:
    """Where a lookup reads from; written as the version folder's store.json.

    timeout_ms: per Redis call; past it the batch answers cold starts (the documented fallback).
    retry_after_ms: after a failure Redis is left alone this long, so an outage costs one timeout.
    """
    url: str
    prefix: str
    timeout_ms: int = 100
    retry_after_ms: int = 1000
    kind: str = "redis"

    def __post_init__(self):
        if self.timeout_ms < 1 or self.retry_after_ms < 0:
            raise FeatureStoreError(f"timeout_ms must be >= 1 and retry_after_ms >= 0, got "
                                    f"{self.timeout_ms} and {self.retry_after_ms}")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise FeatureStoreError(f"store prefix must be a non-empty word, got {self.prefix!r}")

    def client(self, timeout_s: float = 5.0):
        """A Redis client for writing (a longer timeout than the serving path's)."""
        return redis.Redis.from_url(self.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def parse_store_url(url: str, prefix: str, timeout_ms: int = 100, retry_after_ms: int = 1000) -> StoreSpec:
    """``redis://host:port/db`` -> StoreSpec; anything else is refused with what is valid."""
    parsed = urlparse(url)
    if parsed.scheme != "redis":  # the lookups' socket client speaks plain TCP (no TLS)
        raise FeatureStoreError(f"feature store {url!r}: the only online store is Redis; give "
                                f"redis://host:port/db (or leave it out for the file store)")
    if not parsed.hostname:
        raise FeatureStoreError(f"feature store {url!r} names no host; e.g. redis://127.0.0.1:6379/0")
    db = parsed.path.lstrip("/")
    if db and not db.isdigit():
        raise FeatureStoreError(f"feature store {url!r}: the database must be a number, got {db!r}")
    return StoreSpec(url, prefix, timeout_ms, retry_after_ms)


def store_files(spec: StoreSpec) -> dict[str, bytes]:
    return {store_module.STORE_FILE: json.dumps(asdict(spec), indent=2).encode()}


def clear_prefix(client, prefix: str) -> int:
    """Delete every key under ``prefix:``; returns how many."""
    removed = 0
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed


def write_redis_store(spec: StoreSpec, user_ids: np.ndarray, csr: Mapping[str, tuple[np.ndarray, np.ndarray]],
                      item_ids: np.ndarray, meta: Mapping | None = None) -> int:
    """Replace everything under ``spec.prefix`` by these users' rows; returns the keys written.

    Row r of every CSR is user ``user_ids[r]`` with internal index r. ``P:meta`` goes last:
    until it is there the lookups answer cold starts rather than half a store."""
    client = spec.client()
    try:
        clear_prefix(client, spec.prefix)
        user_ids = np.asarray(user_ids, dtype=np.int64)
        pipe = client.pipeline(transaction=False)
        written = 0
        for r, user in enumerate(user_ids.tolist()):
            pipe.set(store_module.user_key(spec.prefix, user), r)
            for field, (indptr, items) in csr.items():
                row = np.asarray(items[indptr[r]:indptr[r + 1]], dtype="<i8")
                pipe.set(store_module.field_key(spec.prefix, field, user), row.tobytes())
            written += 1 + len(csr)
            if r % 5000 == 4999:  # bounded pipelines: a big store is not one giant reply
                pipe.execute()
        pipe.set(f"{spec.prefix}:items", np.asarray(item_ids, dtype="<i8").tobytes())
        pipe.set(store_module.meta_key(spec.prefix), json.dumps({"fields": list(csr), **(meta or {})}))
        pipe.execute()
        return written + 2
    except redis.RedisError as error:
        raise FeatureStoreError(f"cannot write the feature store to {spec.url}: {type(error).__name__}: "
                                f"{error}") from error
    finally:
        client.close()


def store_item_ids(client, prefix: str) -> np.ndarray:
    """The raw item id of each internal index, as the store was written."""
    blob = client.get(f"{prefix}:items")
    if blob is None:
        raise FeatureStoreError(f"no {prefix}:items in Redis: the store was not written (or Redis "
                                f"restarted without persistence); export with --feature-store again")
    return np.frombuffer(blob, dtype="<i8").astype(np.int64)


def append_items(client, prefix: str, user: int, items: Iterable[int], fields: Iterable[str],
                 pipe=None) -> None:
    """Append internal item indices to a known user's fields (APPEND is atomic per key).

    With ``pipe`` the commands join that pipeline (e.g. a MULTI with the event's XACK)."""
    blob = np.asarray(list(items), dtype="<i8").tobytes()
    target = pipe if pipe is not None else client.pipeline(transaction=True)
    for field in fields:
        target.append(store_module.field_key(prefix, field, int(user)), blob)
    if pipe is None:
        target.execute()


def repository_store(repo) -> StoreSpec:
    """The Redis store an exported repository's lookups read (from their store.json)."""
    found = sorted(Path(repo).glob(f"*/*/{store_module.STORE_FILE}"))
    if not found:
        raise FeatureStoreError(f"{repo} reads no Redis store (no */<version>/{store_module.STORE_FILE}); "
                                f"export with --feature-store redis://HOST:PORT/DB")
    data = json.loads(found[-1].read_text())
    return StoreSpec(data["url"], data["prefix"], data.get("timeout_ms", 100), data.get("retry_after_ms", 1000))
