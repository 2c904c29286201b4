"""``recdeploy data``: fetch a dataset into the cache and print what it holds.

    recdeploy data --dataset ml-100k
    recdeploy data --dataset synthetic --users 10000 --items 1000000
    recdeploy data --dataset criteo --data-path /data/criteo/train.txt   # Criteo TSV files
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recdeploy.train.data import Dataset, DatasetError, cache_dir, dataset_names, leave_one_out, load_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=dataset_names(), default="ml-100k")
    parser.add_argument("--data-path", type=Path, default=None,
                        help="folder holding <name>.inter/.item/.user (skips the download); "
                        "criteo: a Criteo TSV file or a folder of them")
    parser.add_argument("--users", type=int, default=1000, help="synthetic: number of users")
    parser.add_argument("--items", type=int, default=10_000, help="synthetic: number of items")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: seed")
    args = parser.parse_args(argv)
    try:
        extra = ({"n_users": args.users, "n_items": args.items, "seed": args.seed}
                 if args.dataset == "synthetic" else {})
        ds = load_dataset(args.dataset, path=args.data_path, **extra)
    except DatasetError as err:
        print(f"recdeploy data: {err}", file=sys.stderr)
        return 2
    print(ds.summary())
    if not isinstance(ds, Dataset):       # e.g. criteo: rows of features, no users or items
        print(f"fingerprint {ds.fingerprint()}; cache {cache_dir()}")
        return 0
    split = leave_one_out(ds)
    print(f"leave-one-out: {len(split.train):,} train / {len(split.valid):,} valid / "
          f"{len(split.test):,} test rows; fingerprint {ds.fingerprint()}; cache {cache_dir()}")
    return 0
