"""The cached-table prototype: answers equal a gather from the table, hits and evictions are
counted as an LRU of rows does, and a batch larger than the cache reads through."""
import numpy as np
import pytest

from recdeploy.export.criteo_cache import CachedTable


@pytest.fixture()
def table(tmp_path):
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.save(tmp_path / "t.npy", values)
    return tmp_path / "t.npy", values


def test_answers_equal_the_table(table):
    path, values = table
    cached = CachedTable(path, capacity=4)
    for index in ([1, 2, 1], [3, 9, 9, 2], [0, 19], [2, 3]):
        assert np.array_equal(cached.rows(np.array(index)), values[index])


def test_lru_hits_and_evictions(table):
    path, _ = table
    cached = CachedTable(path, capacity=2)
    cached.rows(np.array([1, 1, 2]))          # 3 lookups, all misses (2 distinct rows)
    assert (cached.hits, cached.lookups) == (0, 3)
    cached.rows(np.array([1]))                # hit; 2 is now least recent
    cached.rows(np.array([5]))                # evicts 2
    cached.rows(np.array([1, 2]))             # 1 hits, 2 misses
    assert (cached.hits, cached.lookups) == (2, 7)
    assert list(cached.slots) == [1, 2]


def test_batch_larger_than_cache_reads_through(table):
    path, values = table
    cached = CachedTable(path, capacity=3)
    index = np.array([0, 4, 8, 12, 16, 4])
    assert np.array_equal(cached.rows(index), values[index])


def test_capacity_must_be_positive(table):
    with pytest.raises(ValueError, match="capacity must be at least one row"):
        CachedTable(table[0], capacity=0)
