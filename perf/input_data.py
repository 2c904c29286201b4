"""perf_analyzer ``--input-data`` JSON built from real user ids, or any entry's request rows.

    ids = [int(u) for u in test_users]              # from the dataset, never invented
    path = write_input_data(Path("reports/perf/input_data.json"), ids, k=10, batch_size=8)
    path = write_rows_input_data(path, scenario.perf_rows(repo, entry), batch_size=8)
    perf_analyzer ... -b 8 --input-data reports/perf/input_data.json

Format: ``{"data": [step, ...]}``, one step per request row, e.g. for the user top-K contract
``{"USER_ID": {"content": [id], "shape": [1]}, "K": {"content": [k], "shape": [1]}}``.
Shapes leave out the batch dimension. With ``-b B`` perf_analyzer fills a request from B
consecutive steps and cycles through the list (seen on the 2.51 server: ids 11..77 at
-b 4 arrived as [11 22 33 44], [55 66 77 11], ...), so any number of users >= B works and
every request carries B distinct users.
"""
from __future__ import annotations

import json
import operator
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


class InputDataError(ValueError):
    """User ids / k / batch size that cannot make valid perf_analyzer input data."""


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InputDataError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # accepts numpy integers, rejects floats and strings
    except TypeError:
        raise InputDataError(f"{what} must be an integer, got {value!r}") from None


def make_input_data(user_ids: Iterable[int], k: int, batch_size: int = 1,
                    user_input: str = "USER_ID", k_input: str = "K") -> dict[str, Any]:
    """One step per user id (in the given order), all asking for the top-`k`."""
    ids = [_as_int(user, "every user id") for user in user_ids]
    k = _as_int(k, "k")
    batch_size = _as_int(batch_size, "batch_size")
    if not ids:
        raise InputDataError("user_ids is empty; pass ids of real users from the dataset")
    if k < 1:
        raise InputDataError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise InputDataError(f"batch_size must be >= 1, got {batch_size}")
    if len(ids) < batch_size:
        raise InputDataError(
            f"{len(ids)} user id(s) cannot fill a batch of {batch_size} distinct users; "
            f"pass at least {batch_size} ids or lower batch_size")
    return {"data": [{user_input: {"content": [user], "shape": [1]},
                      k_input: {"content": [k], "shape": [1]}} for user in ids]}


def make_rows_input_data(rows: Mapping[str, np.ndarray], batch_size: int = 1) -> dict[str, Any]:
    """One step per row of ``rows`` (input name -> [n, ...], the rows of one entry's requests)."""
    batch_size = _as_int(batch_size, "batch_size")
    sizes = {name: len(value) for name, value in rows.items()}
    if not rows or len(set(sizes.values())) != 1:
        raise InputDataError(f"request rows must be named arrays with the same number of rows, got {sizes}")
    n = next(iter(sizes.values()))
    if batch_size < 1 or n < batch_size:
        raise InputDataError(f"{n} request row(s) cannot fill a batch of {batch_size}; "
                             f"pass at least {batch_size} rows or lower batch_size")
    arrays = {name: np.asarray(value) for name, value in rows.items()}
    return {"data": [{name: {"content": value[i].reshape(-1).tolist(), "shape": list(value[i].shape)}
                      for name, value in arrays.items()} for i in range(n)]}


def write_rows_input_data(path: Path, rows: Mapping[str, np.ndarray], batch_size: int = 1) -> Path:
    """make_rows_input_data(...) written as JSON to `path` (parents created); returns `path`."""
    return _write(path, make_rows_input_data(rows, batch_size))


def _write(path: Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def write_input_data(path: Path, user_ids: Iterable[int], k: int, batch_size: int = 1, **names: str) -> Path:
    """make_input_data(...) written as JSON to `path` (parents created); returns `path`."""
    return _write(path, make_input_data(user_ids, k, batch_size, **names))


def read_user_ids(spec: str) -> list[int]:
    """User ids from a comma list ("1,2,3") or a file (ids separated by newlines, commas or
    spaces; '#' starts a comment)."""
    path = Path(spec)
    if path.is_file():
        text = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        source = str(path)
    elif "/" in spec or spec.endswith((".txt", ".csv")):
        raise InputDataError(f"user id file {spec} does not exist")
    else:
        text, source = spec, "the comma list"
    tokens = text.replace(",", " ").split()
    bad = [token for token in tokens if not token.lstrip("-").isdigit()]
    if bad:
        raise InputDataError(
            f"{source}: user ids must be integers (the served USER_ID is INT64), got {bad[:5]}")
    if not tokens:
        raise InputDataError(f"{source} holds no user ids")
    return [int(token) for token in tokens]
