"""Cached tables (prototype): an embedding table memory-mapped from disk behind an LRU cache
of hot rows, the numpy core a feature step would use when the table outgrows the replica.

    table = CachedTable(folder / "table.npy", capacity=500_000)   # rows kept in RAM
    vectors = table.rows(index)          # int64 [N] -> float32 [N, D]; misses read the memmap
    table.hit_rate                       # hits / lookups since the last reset_stats()

Not a served model yet: ``recdeploy bench-criteo --cache-only`` replays Zipf-skewed lookups
through it (hit rate, lookups/s against a gather from a table in RAM). The cache is row
granular and least-recently-used: each batch's distinct rows are looked up once, misses are
read from the memmap in one sorted gather, and the least recent rows are evicted in batch
order. The process keeps ``capacity`` rows resident however large the table is (the memmap's
pages are the OS page cache's, shared and reclaimable). Imports only numpy.
"""
from collections import OrderedDict

import numpy as np

__all__ = ["CachedTable"]


class CachedTable:
    def __init__(self, path, capacity):
        if capacity < 1:
            raise ValueError(f"capacity must be at least one row, got {capacity}")
        self.table = np.load(path, mmap_mode="r")
        self.capacity = int(min(capacity, len(self.table)))
        self.store = np.empty((self.capacity, self.table.shape[1]), dtype=self.table.dtype)
        self.slots = OrderedDict()          # row -> slot, least recent first
        self.free = list(range(self.capacity - 1, -1, -1))
        self.reset_stats()

    def reset_stats(self):
        self.hits = self.lookups = 0

    @property
    def hit_rate(self):
        return self.hits / self.lookups if self.lookups else 0.0

    def rows(self, index):
        """int [N] -> [N, D]: one cache slot per distinct row of the batch."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        unique, inverse = np.unique(index, return_inverse=True)
        slot_of = np.empty(len(unique), dtype=np.int64)
        missing = []
        for k, row in enumerate(unique.tolist()):
            slot = self.slots.get(row)
            if slot is None:
                missing.append(k)
            else:
                self.slots.move_to_end(row)
                slot_of[k] = slot
        counts = np.bincount(inverse, minlength=len(unique))
        self.lookups += len(index)
        self.hits += len(index) - int(counts[missing].sum()) if missing else len(index)
        if missing:
            rows = unique[missing]
            values = self.table[rows]                  # one sorted gather from the memmap
            for k, row, value in zip(missing, rows.tolist(), values):
                if self.free:
                    slot = self.free.pop()
                else:
                    _, slot = self.slots.popitem(last=False)
                self.store[slot] = value
                self.slots[row] = slot
                slot_of[k] = slot
        if len(unique) > self.capacity:                # a batch larger than the cache: read through
            return np.asarray(self.table[index])
        return self.store[slot_of[inverse]]
