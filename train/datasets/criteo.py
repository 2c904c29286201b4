"""Criteo display-advertising rows: a user's own TSV files, or the seeded synthetic set.

    ds = load_dataset("criteo")                                   # synthetic, demo size
    ds = load_dataset("criteo", rows=10**7, scale=1.0)            # Kaggle-size vocabularies
    ds = load_dataset("criteo", path=Path("day_0"))               # a file, or a folder of them
    recdeploy data --dataset criteo --data-path /data/criteo/train.txt

Files are Criteo's TSV layout (label, I1..I13, C1..C26 as 8 hex digits, empty = missing; see
``recdeploy.train.criteo.schema``). No Criteo sample ships in any package reachable here, so
without ``path`` the rows come from ``SyntheticCriteo`` (its docstring says how it mimics
Criteo and why its AUC is meaningful). Either way the rows are prepared once (vocabularies,
log-transformed counts, memory-mapped arrays) into ``$RECDEPLOY_CACHE/criteo/<fingerprint>``
and returned as a ``PreparedCriteo``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from recdeploy.train.criteo.prepare import PreparedCriteo, SyntheticSource, TsvSource, prepare
from recdeploy.train.criteo.synthetic import SyntheticCriteo
from recdeploy.train.data import DatasetError, cache_dir, register_dataset

# the demo's size: trains in about a minute on 2 cores, every field still skewed
DEMO_ROWS, DEMO_SCALE = 300_000, 0.02


def tsv_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if path.is_dir() else []
    if not files:
        raise DatasetError(f"--data-path {path}: no Criteo TSV file there (a file such as train.txt "
                           "or day_0, or a folder of them)")
    return files


def load_criteo(path: Path | None = None, rows: int = DEMO_ROWS, scale: float = DEMO_SCALE, seed: int = 0,
                holdout: float = 0.1, min_count: int = 1, max_vocab: int = 0, hash_rows: int = 0,
                folder: Path | None = None, progress: bool = True) -> PreparedCriteo:
    """rows / scale / seed: the synthetic set's (ignored with ``path``); min_count, max_vocab,
    hash_rows: the vocabularies' (see ``build_vocabulary``); folder: where to prepare."""
    source = (TsvSource(tsv_files(path)) if path is not None
              else SyntheticSource(SyntheticCriteo(rows=rows, scale=scale, seed=seed)))
    key = hashlib.sha256(json.dumps([source.describe(), holdout, min_count, max_vocab, hash_rows],
                                    sort_keys=True).encode()).hexdigest()[:12]
    try:
        return prepare(source, folder or cache_dir() / "criteo" / key, holdout, min_count, max_vocab,
                       hash_rows, progress)
    except ValueError as err:
        raise DatasetError(str(err)) from err


register_dataset("criteo")(load_criteo)
