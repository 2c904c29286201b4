"""Baskets: a dataset whose interactions come in orders (Instacart), seen per user as a
sequence of baskets.

    index = basket_index(ds)                 # each row's basket ordinal within its user
    split = basket_split(ds, index)          # last basket test, the one before validation
    past = user_histories(ds, index, drop_last=1)   # what a user had bought before the test basket
    past.frequency(users, decay=0.8)         # B x I recency-weighted purchase counts

A basket is one user's rows with one timestamp (the order number for Instacart); a row's
*age* in a history is how many baskets came after its own (0: the most recent basket of
the history). The served feature store holds the same histories with nothing dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recdeploy.train.data import Dataset, Split


@dataclass(frozen=True)
class BasketIndex:
    """Rows in time order and each row's basket ordinal (0: the user's first basket)."""
    order: np.ndarray       # int64 [N] rows sorted by user, time, file order
    ordinal: np.ndarray     # int64 [N] basket ordinal of row r (indexed by row, not by order)
    n_baskets: np.ndarray   # int64 [U]


def basket_index(ds: Dataset) -> BasketIndex:
    order = np.lexsort((np.arange(ds.n_interactions), ds.timestamps, ds.users))
    users, times = ds.users[order], ds.timestamps[order]
    first_row = np.r_[True, users[1:] != users[:-1]]
    new_basket = first_row | np.r_[True, times[1:] != times[:-1]]
    count = np.cumsum(new_basket)                 # baskets so far, over all users
    user_start = np.maximum.accumulate(np.where(first_row, count, 0))
    ordinal = np.empty(ds.n_interactions, dtype=np.int64)
    ordinal[order] = count - user_start
    n_baskets = np.zeros(ds.n_users, dtype=np.int64)
    np.maximum.at(n_baskets, ds.users, ordinal + 1)
    return BasketIndex(order=order, ordinal=ordinal, n_baskets=n_baskets)


def basket_split(ds: Dataset, index: BasketIndex | None = None) -> Split:
    """Per user: the last basket is test, the one before validation, the rest train. Users
    with fewer than 3 baskets keep all of theirs in train (they are never evaluated)."""
    index = index or basket_index(ds)
    n = index.n_baskets[ds.users]
    eligible = n >= 3
    test = eligible & (index.ordinal == n - 1)
    valid = eligible & (index.ordinal == n - 2)
    return Split(train=np.flatnonzero(~(test | valid)), valid=np.flatnonzero(valid),
                 test=np.flatnonzero(test))


@dataclass(frozen=True)
class UserHistories:
    """Every user's purchases before a cut, in time (and cart) order, as CSR rows.

    Row u is internal user u: ``items[indptr[u]:indptr[u+1]]`` with their basket ``ages``.
    """
    indptr: np.ndarray      # int64 [U+1]
    items: np.ndarray       # int64 [M] internal items
    ages: np.ndarray        # int64 [M] baskets after the row's own within the history (0: latest)
    n_items: int

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def of(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        return (self.items[self.indptr[user]:self.indptr[user + 1]],
                self.ages[self.indptr[user]:self.indptr[user + 1]])

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def padded(self, users: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """-> (items, ages), both int64 [B, width], the most recent ``width`` rows of each
        user left-aligned, -1 padded; width None: the longest history among ``users``."""
        users = np.asarray(users, dtype=np.int64)
        lengths = self.lengths()[users]
        width = int(lengths.max(initial=0)) if width is None else width
        keep = np.minimum(lengths, width)
        starts = self.indptr[users + 1] - keep
        offsets = np.arange(width)
        mask = offsets[None, :] < keep[:, None]
        gather = np.where(mask, starts[:, None] + offsets[None, :], 0)
        if not len(self.items):
            return np.full(mask.shape, -1, np.int64), np.full(mask.shape, -1, np.int64)
        return (np.where(mask, self.items[gather], -1).astype(np.int64),
                np.where(mask, self.ages[gather], -1).astype(np.int64))

    def frequency(self, users: np.ndarray, decay: float = 1.0) -> np.ndarray:
        """float64 [B, I]: sum over a user's purchases of decay ** age (decay 1: plain counts)."""
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros((len(users), self.n_items))
        for row, u in enumerate(users):
            items, ages = self.of(int(u))
            np.add.at(out[row], items, float(decay) ** ages)
        return out

    def bought(self, users: np.ndarray) -> list[np.ndarray]:
        """Per user of ``users``: the distinct items of the history."""
        return [np.unique(self.of(int(u))[0]) for u in users]

    def sequences(self) -> list[np.ndarray]:
        """Per user: the items in time and cart order (what a sequential model reads)."""
        return [self.items[self.indptr[u]:self.indptr[u + 1]] for u in range(self.n_users)]


def user_histories(ds: Dataset, index: BasketIndex | None = None, drop_last: int = 0) -> UserHistories:
    """Each user's rows except their last ``drop_last`` baskets (1: before the test basket,
    2: before the validation basket, 0: everything, what serving sees)."""
    index = index or basket_index(ds)
    rows = index.order
    cut = index.n_baskets[ds.users[rows]] - drop_last      # baskets kept per row's user
    rows = rows[index.ordinal[rows] < cut]
    users = ds.users[rows]
    ages = (index.n_baskets[users] - drop_last - 1) - index.ordinal[rows]
    indptr = np.searchsorted(users, np.arange(ds.n_users + 1)).astype(np.int64)
    return UserHistories(indptr=indptr, items=ds.items[rows].astype(np.int64),
                         ages=ages.astype(np.int64), n_items=ds.n_items)


def basket_rows(ds: Dataset, rows: np.ndarray, index: BasketIndex | None = None) -> list[np.ndarray]:
    """The baskets among ``rows``: a list of internal item arrays, one per (user, basket)."""
    index = index or basket_index(ds)
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return []
    keys = ds.users[rows] * (int(index.n_baskets.max(initial=0)) + 1) + index.ordinal[rows]
    order = np.argsort(keys, kind="stable")
    keys, items = keys[order], ds.items[rows[order]]
    bounds = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1], True])
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
