"""Small basket datasets for the next-basket tests."""
import numpy as np
import pytest

from recdeploy.train.data import Dataset


def basket_dataset(orders: dict[int, list[list[int]]]) -> Dataset:
    """raw user id -> baskets of raw item ids, in time order (timestamps = 1, 2, ...)."""
    rows = [(u, t, i) for u, baskets in orders.items() for t, basket in enumerate(baskets, 1) for i in basket]
    raw_users, times, raw_items = (np.array(c, dtype=np.int64) for c in zip(*rows))
    user_ids, users = np.unique(raw_users, return_inverse=True)
    item_ids, items = np.unique(raw_items, return_inverse=True)
    return Dataset(name="baskets", user_ids=user_ids, item_ids=item_ids,
                   item_titles=tuple(str(i) for i in item_ids), users=users.astype(np.int64),
                   items=items.astype(np.int64), ratings=np.ones(len(rows), np.float32), timestamps=times)


@pytest.fixture(scope="session")
def make_baskets():
    return basket_dataset


@pytest.fixture(scope="session")
def shoppers():
    """40 seeded shoppers over 60 products: each rebuys 4 favourites (60% of orders each),
    plus two other products per order, 8 orders each. Favourites come in pairs of
    neighbouring products, so baskets co-occur."""
    rng = np.random.default_rng(0)
    orders = {}
    for user in range(1, 41):
        base = int(rng.integers(0, 58))
        favourites = [base, base + 1, (base + 30) % 60, (base + 31) % 60]
        orders[user] = [[int(i) for i in np.unique(
            [f for f in favourites if rng.random() < 0.6] + list(rng.integers(0, 60, size=2)))]
            for _ in range(8)]
    return basket_dataset(orders)
