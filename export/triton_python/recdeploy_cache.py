"""Cached tables: an embedding table memory-mapped from disk behind a CLOCK cache of hot rows,
the numpy core of the cached criteo feature step (``criteo_features`` with a ``table.npy``).

    table = CachedTable(folder / "table.npy", capacity=500_000)   # rows kept in RAM
    vectors = table.rows(index)          # int [N] -> [N, D]; misses read the memmap
    table.hit_rate                       # hits / lookups since the last reset_stats()

``recdeploy bench-criteo --cache-only`` replays Zipf-skewed lookups through it. Every step of a
batch is a numpy call, never a Python loop over rows: a dense row -> slot index (int32, -1 =
absent; 4 bytes per table row) finds the hits, the distinct misses are read from the memmap in
one sorted gather, and CLOCK (second chance) picks their slots: the hand sweeps a window of
slots, takes those whose reference bit is clear and clears the bits it passes. A row enters
with its bit clear, so ids seen once leave before rows that were hit again. Rows the batch
itself uses are never evicted for it; of a batch with more distinct rows than the cache holds,
the lowest rows are cached (vocabularies put the most frequent ids first) and the rest read
through. The process keeps ``capacity`` rows resident however large the table is (the
memmap's pages are the OS page cache's, shared and reclaimable). Imports only numpy.
"""
import numpy as np

__all__ = ["CachedTable"]


class CachedTable:
    def __init__(self, path, capacity):
        capacity = int(capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be at least one row, got {capacity}")
        self.table = np.load(path, mmap_mode="r")
        if self.table.ndim != 2:
            raise ValueError(f"{path}: a table must be [rows, dim], got shape {list(self.table.shape)}")
        self.n_rows = len(self.table)
        self.capacity = min(capacity, self.n_rows)
        self.store = np.empty((self.capacity, self.table.shape[1]), dtype=self.table.dtype)
        self.slot_of = np.full(self.n_rows, -1, dtype=np.int32)   # row -> slot, -1 = absent
        self.row_of = np.full(self.capacity, -1, dtype=np.int64)  # slot -> row, -1 = empty
        self.referenced = np.zeros(self.capacity, dtype=bool)
        self.pinned = np.zeros(self.capacity, dtype=bool)         # slots this batch must keep
        self.filled = 0                                           # slots [0, filled) hold rows
        self.hand = 0
        self.reset_stats()

    def reset_stats(self):
        self.hits = self.lookups = 0

    @property
    def hit_rate(self):
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def resident(self):
        return int(np.count_nonzero(self.row_of >= 0))

    def rows(self, index):
        """int [N] (any shape, flattened) -> [N, D], equal to ``table[index]``."""
        index = self._check(index)
        slots = self.slot_of[index]
        hit = slots >= 0
        hit_slots = slots[hit]
        self.lookups += len(index)
        self.hits += len(hit_slots)
        self.referenced[hit_slots] = True
        if len(hit_slots) == len(index):
            return self.store[slots]
        misses = np.unique(index[~hit])                          # sorted: one sequential gather
        if len(index) > self.capacity:                           # the batch may not fit: keep the
            room = self.capacity - len(np.unique(hit_slots))     # lowest rows (the most frequent
            misses = misses[:room]                               # ids), read the rest through
        self.pinned[hit_slots] = True
        victims = self._victims(len(misses))
        self.pinned[hit_slots] = False
        evicted = self.row_of[victims]
        self.slot_of[evicted[evicted >= 0]] = -1
        self.row_of[victims] = misses
        self.slot_of[misses] = victims
        self.referenced[victims] = False
        self.store[victims] = self.table[misses]
        slots = self.slot_of[index]
        out = self.store[slots]
        absent = np.flatnonzero(slots < 0)
        if len(absent):
            out[absent] = self.table[index[absent]]
        return out

    def _check(self, index):
        index = np.asarray(index)
        if index.dtype.kind not in "iu":
            raise ValueError(f"row indices must be integers, got {index.dtype}")
        index = index.reshape(-1).astype(np.int64, copy=False)
        if index.size and (index.min() < 0 or index.max() >= self.n_rows):
            bad = index[(index < 0) | (index >= self.n_rows)][0]
            raise ValueError(f"row index {bad} out of range: the table has rows 0..{self.n_rows - 1}")
        return index

    def _victims(self, n):
        """``n`` slots for new rows: empty slots first, then CLOCK over the unpinned ones."""
        free = min(n, self.capacity - self.filled)
        taken = [np.arange(self.filled, self.filled + free, dtype=np.int64)]
        self.pinned[taken[0]] = True
        self.filled += free
        need = n - free
        window = max(4 * need, 1024)
        while need:
            span = min(window, self.capacity)
            ring = (self.hand + np.arange(span)) % self.capacity
            candidates = np.flatnonzero(~self.referenced[ring] & ~self.pinned[ring])[:need]
            end = candidates[-1] + 1 if len(candidates) == need else span
            self.referenced[ring[:end]] = False                  # the second chance is spent
            chosen = ring[candidates]
            self.pinned[chosen] = True                           # not twice in one batch
            taken.append(chosen)
            self.hand = int((self.hand + end) % self.capacity)
            need -= len(chosen)
            window *= 2
        victims = np.concatenate(taken)
        self.pinned[victims] = False
        return victims
