"""recdeploy_store: where the lookup models read users' seen items and histories from.

    store = open_store(version_folder, UserTable.load)   # store.json -> Redis, else the .npy files
    rows = store.fetch(user_ids, ("seen", "history"))
    rows.known, rows.index, rows.fields["seen"].padded(fill=-1)

Not a model: copied beside ``model.py`` like recdeploy_triton_core.py. Two stores, one
interface (``fetch`` -> ``Rows``), so the lookups never branch on where data lives:

- ``FileStore`` (the embedded default): sorted ``user_ids.npy`` and one CSR per field
  (``<field>_indptr.npy`` + ``<field>_items.npy``) baked into the model version. Needs numpy only,
  so the repository still loads in the stock NGC container.
- ``RedisStore``: the same data in Redis, written at export and updated live by the feedback
  consumer; the next request sees a write, no reload. Keys under one prefix P:
  ``P:meta`` (present while the store is loaded), ``P:idx:<user>`` (internal user index),
  ``P:<field>:<user>`` (little-endian int64 internal items, appended to with APPEND).
  One MGET per request batch, over a standard-library socket (RespClient: the stub cannot
  import redis-py), so the repository still needs nothing beyond numpy.

Failure semantics (RedisStore): every call has a socket timeout (``timeout_ms``) and no retry;
Redis down, slow, restarted empty (no ``P:meta``) or answering garbage -> the batch answers
the documented fallback: every user a cold start (popular items, empty history, nothing
seen). After a failure Redis is not asked again for ``retry_after_ms`` (so an outage costs one
timeout, not one per request); then the client reconnects by itself.
"""
import json
import os
import socket
import sys
import time
import urllib.parse

import numpy as np

STORE_FILE = "store.json"


def meta_key(prefix):
    return f"{prefix}:meta"


def user_key(prefix, user):
    return f"{prefix}:idx:{int(user)}"


def field_key(prefix, field, user):
    return f"{prefix}:{field}:{int(user)}"


class Ragged:
    """One variable-length int64 list per user: ``values`` concatenated, ``lengths`` [B]."""

    def __init__(self, values, lengths):
        self.values = np.asarray(values, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.starts = np.r_[0, np.cumsum(self.lengths)[:-1]].astype(np.int64)

    def padded(self, fill=-1):
        """[B, max length] left-aligned, ``fill`` after each list."""
        width = int(self.lengths.max()) if len(self.lengths) else 0
        return self.last(width, fill, right_aligned=False)

    def last(self, width, fill=0, right_aligned=True):
        """[B, width]: each list's last ``width`` values (right-aligned: padding on the left)."""
        n = np.minimum(self.lengths, width)
        offsets = np.arange(width)
        pad = (width - n) if right_aligned else np.zeros_like(n)
        position = offsets[None, :] - pad[:, None]          # index into the kept tail
        mask = (position >= 0) & (position < n[:, None])
        gather = np.where(mask, self.starts[:, None] + self.lengths[:, None] - n[:, None] + position, 0)
        picked = self.values[gather] if len(self.values) else np.zeros(gather.shape, np.int64)
        return np.where(mask, picked, fill).astype(np.int64)


class Rows:
    """What a store answers for a batch of raw user ids."""

    def __init__(self, known, index, fields):
        self.known = np.asarray(known, dtype=bool)         # [B]
        self.index = np.asarray(index, dtype=np.int64)     # [B] internal index, 0 when unknown
        self.fields = fields                               # field -> Ragged

    @classmethod
    def cold(cls, n, fields):
        """The fallback: every user unknown, every list empty."""
        empty = Ragged(np.zeros(0, np.int64), np.zeros(n, np.int64))
        return cls(np.zeros(n, bool), np.zeros(n, np.int64), {f: empty for f in fields})


class FileStore:
    """CSR arrays baked into the model version; row r is the user ``user_ids[r]``."""

    def __init__(self, user_ids, csr):
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(self.user_ids) and np.any(np.diff(self.user_ids) <= 0):
            raise ValueError("user_ids must be sorted and unique")
        self.csr = {}
        for field, (indptr, items) in csr.items():
            indptr, items = np.asarray(indptr, np.int64), np.asarray(items, np.int64)
            if len(indptr) != len(self.user_ids) + 1:
                raise ValueError(f"{field}_indptr must have one entry more than user_ids")
            if indptr[0] != 0 or indptr[-1] != len(items) or np.any(np.diff(indptr) < 0):
                raise ValueError(f"{field}_indptr must rise from 0 to len({field}_items)")
            self.csr[field] = (indptr, items)

    def fetch(self, user_ids, fields):
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(self.user_ids) == 0:
            return Rows.cold(len(user_ids), fields)
        position = np.minimum(np.searchsorted(self.user_ids, user_ids), len(self.user_ids) - 1)
        known = self.user_ids[position] == user_ids
        index = np.where(known, position, 0)
        out = {}
        for field in fields:
            indptr, items = self.csr[field]
            starts = indptr[index]
            lengths = np.where(known, indptr[index + 1] - starts, 0)
            gather = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
            out[field] = Ragged(items[gather], lengths)
        return Rows(known, index, out)


class RespError(RuntimeError):
    """Redis answered an error, or something that is not RESP."""


class RespClient:
    """The few Redis commands a lookup needs, over a plain socket (RESP2).

    Why not redis-py: the python backend stub embeds its own libpython, and the 3.11 stub
    shipped with tritonserver 2.51 cannot import ``ssl``, which redis-py imports on start. A
    socket needs nothing beyond the standard library, so a Redis-backed repository also loads
    in the stock NGC container. Any error closes the connection; the next call reconnects.
    """

    def __init__(self, url, timeout_s):
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "redis":
            raise ValueError(f"the lookups reach Redis over redis://host:port/db, got {url!r}")
        self.address = (parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self.db = int(parsed.path.lstrip("/") or 0)
        self.password, self.username = parsed.password, parsed.username
        self.timeout_s, self.sock, self.reader = timeout_s, None, None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = self.reader = None

    def _connect(self):
        self.sock = socket.create_connection(self.address, timeout=self.timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        if self.password:
            self._roundtrip(["AUTH"] + ([self.username] if self.username else []) + [self.password])
        if self.db:
            self._roundtrip(["SELECT", str(self.db)])

    def command(self, *args):
        try:
            if self.sock is None:
                self._connect()
            return self._roundtrip(args)
        except BaseException:
            self.close()  # a timed-out reply may still arrive: never reuse the connection
            raise

    def mget(self, keys):
        return self.command("MGET", *keys)

    def _roundtrip(self, args):
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _reply(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise RespError("connection closed mid-reply")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.reader.read(n + 2)
            if len(data) != n + 2:
                raise RespError("connection closed mid-reply")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RespError(f"not a RESP reply: {line[:40]!r}")


class RedisStore:
    """The same rows from Redis (see the module docstring for keys and failure semantics)."""

    def __init__(self, url, prefix, timeout_ms=100, retry_after_ms=1000):
        self.prefix, self.retry_after = prefix, retry_after_ms / 1000.0
        self.client = RespClient(url, timeout_ms / 1000.0)
        self.down_until = 0.0
        self.outage = False
        self.fallbacks = 0          # batches answered with the fallback, for tests and logs

    @classmethod
    def from_spec(cls, spec):
        return cls(spec["url"], spec["prefix"], spec.get("timeout_ms", 100), spec.get("retry_after_ms", 1000))

    def fetch(self, user_ids, fields):
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if time.monotonic() < self.down_until:
            self.fallbacks += 1
            return Rows.cold(len(user_ids), fields)
        p, ids = self.prefix, user_ids.tolist()
        keys = [meta_key(p)] + [user_key(p, u) for u in ids] + [field_key(p, f, u) for f in fields for u in ids]
        try:
            values = self.client.mget(keys)
            if values[0] is None:
                raise LookupError(f"{p}:meta is missing (Redis restarted empty? export the store again)")
            rows = self._rows(values[1:], len(ids), fields)
        except (OSError, RespError, LookupError, ValueError) as error:
            self._went_down(error)
            return Rows.cold(len(user_ids), fields)
        if self.outage:
            self.outage = False
            print(f"recdeploy_store: Redis store {self.prefix!r} is back", file=sys.stderr, flush=True)
        return rows

    def _rows(self, values, n, fields):
        index_values = values[:n]
        known = np.array([v is not None for v in index_values], dtype=bool)
        # -1: a user the feedback consumer added (a history, no trained row): index 0, unused
        index = np.array([max(int(v), 0) if v is not None else 0 for v in index_values], dtype=np.int64)
        out = {}
        for j, field in enumerate(fields):
            blobs = [b or b"" for b in values[n * (j + 1): n * (j + 2)]]
            lengths = np.array([len(b) // 8 for b in blobs], dtype=np.int64)
            lengths = np.where(known, lengths, 0)
            joined = b"".join(b[: 8 * int(m)] for b, m in zip(blobs, lengths))
            out[field] = Ragged(np.frombuffer(joined, dtype="<i8"), lengths)
        return Rows(known, index, out)

    def _went_down(self, error):
        if not self.outage:  # once per outage, not once per request
            self.outage = True
            print(f"recdeploy_store: Redis store {self.prefix!r} unavailable "
                  f"({type(error).__name__}: {error}); answering cold starts, retrying in "
                  f"{self.retry_after:.1f}s", file=sys.stderr, flush=True)
        self.fallbacks += 1
        self.down_until = time.monotonic() + self.retry_after


def open_store(folder, load_file_store):
    """The store a model version names: ``store.json`` -> RedisStore, else
    ``load_file_store(folder)`` (the model's own FileStore over its baked arrays)."""
    path = os.path.join(folder, STORE_FILE)
    if not os.path.isfile(path):
        return load_file_store(folder)
    with open(path) as handle:
        spec = json.load(handle)
    if spec.get("kind") != "redis":
        raise ValueError(f"{path}: unknown store kind {spec.get('kind')!r} (valid: redis)")
    return RedisStore.from_spec(spec)
