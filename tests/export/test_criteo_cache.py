"""The CLOCK row cache over a memory-mapped table: answers equal a gather from the table for
random and repeated rows, hits are counted per lookup, at most ``capacity`` rows are resident,
CLOCK gives referenced rows a second chance, a batch larger than the cache keeps its lowest
rows and reads the rest through, and bad input is a ValueError that says what is valid."""
import numpy as np
import pytest

from recdeploy.export.criteo_cache import CachedTable


@pytest.fixture()
def table(tmp_path):
    values = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.save(tmp_path / "t.npy", values)
    return tmp_path / "t.npy", values


def resident_rows(cached):
    rows = cached.row_of[cached.row_of >= 0]
    assert np.array_equal(cached.slot_of[rows], np.flatnonzero(cached.row_of >= 0))
    assert np.count_nonzero(cached.slot_of >= 0) == len(rows)
    return set(rows.tolist())


def test_answers_equal_the_table(table):
    path, values = table
    cached = CachedTable(path, capacity=4)
    for index in ([1, 2, 1], [3, 9, 9, 2], [0, 19], [2, 3], [[5, 5], [5, 6]]):
        assert np.array_equal(cached.rows(np.array(index)), values[np.array(index).reshape(-1)])


def test_random_and_repeated_rows_equal_the_table_and_capacity_holds(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((5000, 8)).astype(np.float32)
    np.save(tmp_path / "big.npy", values)
    for capacity in (1, 7, 300, 5000):
        cached = CachedTable(tmp_path / "big.npy", capacity=capacity)
        for _ in range(60):
            index = np.minimum(rng.zipf(1.2, size=rng.integers(1, 400)) - 1, 4999)
            if rng.random() < 0.3:
                index = np.concatenate([index, index[::-1]])       # repeats within a batch
            assert np.array_equal(cached.rows(index), values[index])
            assert len(resident_rows(cached)) <= capacity
        assert 0 <= cached.hit_rate < 1 and (capacity < 300 or cached.hit_rate > 0.5)


def test_hits_are_counted_per_lookup(table):
    path, _ = table
    cached = CachedTable(path, capacity=3)
    cached.rows(np.array([1, 1, 2]))          # 3 lookups, all misses (2 distinct rows)
    assert (cached.hits, cached.lookups) == (0, 3)
    cached.rows(np.array([1, 2, 2, 7]))       # three hits, one miss
    assert (cached.hits, cached.lookups) == (3, 7)
    assert cached.hit_rate == pytest.approx(3 / 7)
    cached.reset_stats()
    assert (cached.hits, cached.lookups, cached.hit_rate) == (0, 0, 0.0)


def test_clock_evicts_unreferenced_rows_first(table):
    path, _ = table
    cached = CachedTable(path, capacity=3)
    cached.rows(np.array([1, 2, 3]))          # fills the cache, reference bits clear
    cached.rows(np.array([1]))                # 1 is referenced: a second chance
    cached.rows(np.array([4]))                # the hand passes 1 and evicts 2
    assert resident_rows(cached) == {1, 3, 4}
    cached.rows(np.array([5, 6]))             # 1's chance is spent: 3 and then 1 go
    assert resident_rows(cached) == {4, 5, 6}


def test_rows_of_the_batch_are_never_evicted_for_it(table):
    path, values = table
    cached = CachedTable(path, capacity=3)
    cached.rows(np.array([1, 2, 3]))
    index = np.array([1, 2, 9])               # hits on 1 and 2, so only 3 may make room
    assert np.array_equal(cached.rows(index), values[index])
    assert resident_rows(cached) == {1, 2, 9}


def test_batch_larger_than_cache_keeps_its_lowest_rows_and_reads_through(table):
    path, values = table
    cached = CachedTable(path, capacity=3)
    index = np.array([16, 4, 8, 12, 0, 4])
    assert np.array_equal(cached.rows(index), values[index])
    assert (cached.hits, cached.lookups) == (0, 6) and resident_rows(cached) == {0, 4, 8}
    index = np.array([9, 4, 7, 4, 5])         # 4 hits and stays; 5 and 7 take the other slots
    assert np.array_equal(cached.rows(index), values[index])
    assert (cached.hits, cached.lookups) == (2, 11) and resident_rows(cached) == {4, 5, 7}


def test_capacity_is_capped_at_the_table(table):
    path, values = table
    cached = CachedTable(path, capacity=10**6)
    assert cached.capacity == 20 and cached.store.shape == (20, 2)
    assert np.array_equal(cached.rows(np.arange(20)[::-1]), values[::-1])


def test_capacity_must_be_positive(table):
    with pytest.raises(ValueError, match="capacity must be at least one row, got 0"):
        CachedTable(table[0], capacity=0)


@pytest.mark.parametrize("index", [[0, 20], [-1, 3]])
def test_rows_out_of_range_are_refused(table, index):
    cached = CachedTable(table[0], capacity=4)
    with pytest.raises(ValueError, match=r"row index -?\d+ out of range: the table has rows 0\.\.19"):
        cached.rows(np.array(index))


def test_non_integer_rows_are_refused(table):
    with pytest.raises(ValueError, match="row indices must be integers, got float64"):
        CachedTable(table[0], capacity=4).rows(np.array([1.0, 2.0]))


def test_a_table_must_be_two_dimensional(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"a table must be \[rows, dim\], got shape \[5\]"):
        CachedTable(tmp_path / "flat.npy", capacity=2)
