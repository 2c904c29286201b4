"""``recdeploy recommend``: ask the served ensemble for users' top-K and print movie titles.

    recdeploy recommend --user 42 -k 10                    # gRPC on 127.0.0.1:8001
    recdeploy recommend --user 42 --user 7 --protocol http --url 127.0.0.1:8000

Titles come from the dataset named in the repository's recdeploy.json (read locally);
without it, raw item ids are printed. Start a server first with ``recdeploy serve``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.train.data import DatasetError, load_dataset


def item_titles(repository: Path) -> dict[int, str]:
    """raw item id -> title, from the dataset the repository was exported from ({} if unknown)."""
    meta = Path(repository) / "recdeploy.json"
    if not meta.is_file():
        return {}
    name = json.loads(meta.read_text()).get("dataset")
    try:
        ds = load_dataset(name)
    except (DatasetError, TypeError):
        return {}
    return dict(zip(ds.item_ids.tolist(), ds.item_titles))


def format_recommendations(user: int, ids, scores, titles: dict[int, str]) -> str:
    lines = [f"user {user}:"]
    for rank, (item, score) in enumerate(zip(ids, scores), start=1):
        if item < 0:
            continue
        lines.append(f"  {rank:>3}. {titles.get(int(item), f'item {item}')}  "
                     f"(id {item}, score {score:.4f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy recommend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", type=int, action="append", required=True,
                        help="raw user id (repeat for a batch); unknown users get popular items")
    parser.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--url", default=None, help="host:port (default 127.0.0.1:8001 grpc, :8000 http)")
    parser.add_argument("--model", default="recommend", help="ensemble to query (e.g. recommend_int8)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="local repository, used only to find titles (default model_repository)")
    args = parser.parse_args(argv)
    try:
        with RecommendClient(args.url, args.protocol, args.model) as client:
            ids, scores = client.recommend(args.user, args.k)
    except Exception as err:  # tritonclient raises its own exception types
        print(f"recdeploy recommend: {err}", file=sys.stderr)
        return 1
    titles = item_titles(args.repository)
    for user, row_ids, row_scores in zip(args.user, ids, scores):
        print(format_recommendations(user, row_ids, row_scores, titles))
    return 0
