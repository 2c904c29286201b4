"""Cached tables: the CLOCK row cache over a memory-mapped table that the cached criteo
feature step serves with, importable from the package (perf, tests).

    from recdeploy.export.criteo_cache import CachedTable
    table = CachedTable(folder / "table.npy", capacity=500_000)
    vectors = table.rows(index)          # int [N] -> [N, D]

The code lives in ``triton_python/recdeploy_cache.py`` (numpy only) because the python
backend imports it from the model's folder; this module loads that same file.
"""
from recdeploy.export.triton_python import CACHE, load_core

CachedTable = load_core(CACHE).CachedTable

__all__ = ["CachedTable"]
