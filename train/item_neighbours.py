"""Similar items: each item's N most similar items by one of four methods, and their quality.

    lists = neighbour_lists("pearson", ds)                       # NeighbourLists, I x 100
    lists = neighbour_lists("embedding", ds, model.item_vectors().numpy())
    quality = next_item_quality(ds, vectors=None)                # {"cosine": {"hr@10": ...}, ...}

Methods:
- ``content``: cosine of the items' side features (genres, title words, release decade;
  ``similarity.content_vectors``): needs no interaction, so new items have neighbours too;
- ``cosine``: item-kNN on the binary interaction matrix, s_ij = |U_i & U_j| /
  (sqrt(|U_i| |U_j|) + shrink) (Sarwar et al. 2001, with RecBole's shrinkage);
- ``pearson``: item-kNN on the ratings, item-mean-centred Pearson over co-raters shrunk by
  n / (n + shrink) (Koren, KDD 2008);
- ``embedding``: cosine of a trained model's item vectors (the two-tower's item tower).

Only positive similarities make a neighbour (the embedding's cosine: any), so an item with
few co-raters can have fewer than N; lists pad with -1 / -inf.

Quality (``next_item_quality``): leave-one-out by time; the lists are built from the training
part only, each user's second-to-last item is the query and the last item the target: HR@10
and NDCG@10 of the query's 10 neighbours ("who watched this next watched ..."), beside the
10 most popular training items (the query left out).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from recdeploy.train.data import Dataset, item_popularity, leave_one_out
from recdeploy.train.similarity import (
    content_vectors,
    cosine_similarity,
    interaction_matrix,
    pearson_similarity,
    top_neighbours,
)

METHODS = ("cosine", "pearson", "content", "embedding")
# brute force holds I x I floats: beyond this a similar-items index needs ANN search instead
MAX_ITEMS = 20_000


class NeighbourError(ValueError):
    """A neighbour list that cannot be built as asked (unknown method, no vectors, too big)."""


@dataclass(frozen=True)
class NeighbourSettings:
    length: int = 100             # N, the neighbours kept per item (the served K's maximum)
    cosine_shrink: float = 10.0   # damps pairs of items with few users
    pearson_shrink: float = 100.0  # Koren's lambda; unshrunk, pairs with 2 co-raters reach 1.0

    def __post_init__(self):
        if self.length < 1 or self.cosine_shrink < 0 or self.pearson_shrink < 0:
            raise NeighbourError(f"length must be >= 1 and the shrinkages >= 0, got {self}")


DEFAULT_SETTINGS = NeighbourSettings()


@dataclass(frozen=True)
class NeighbourLists:
    index: np.ndarray    # int64 [I, N] internal item indices, most similar first, -1 padded
    scores: np.ndarray   # float32 [I, N] similarities, -inf padded


def item_similarity(method: str, ds: Dataset, vectors: np.ndarray | None = None,
                    settings: NeighbourSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """The [I, I] similarity of ``method`` over ds's items (zero diagonal)."""
    if method not in METHODS:
        raise NeighbourError(f"unknown similarity method {method!r}; valid: {', '.join(METHODS)}")
    if ds.n_items > MAX_ITEMS:
        raise NeighbourError(f"{ds.n_items:,} items: brute-force neighbour lists hold I^2 floats; "
                             f"above {MAX_ITEMS:,} items use an ANN index")
    if method == "cosine":
        return cosine_similarity(interaction_matrix(ds.users, ds.items, ds.n_users, ds.n_items),
                                 settings.cosine_shrink)
    if method == "pearson":
        ratings = interaction_matrix(ds.items, ds.users, ds.n_items, ds.n_users, ds.ratings)
        rated = interaction_matrix(ds.items, ds.users, ds.n_items, ds.n_users) > 0
        return pearson_similarity(ratings, settings.pearson_shrink, rated)
    if method == "content":
        features = content_vectors(ds.item_titles, ds.item_features)
    else:
        if vectors is None:
            raise NeighbourError("the embedding method needs a trained model's item vectors")
        features = np.asarray(vectors, dtype=np.float32)
        if features.shape[0] != ds.n_items:
            raise NeighbourError(f"{features.shape[0]} item vectors for {ds.n_items} items")
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        features = np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)
    similarity = features @ features.T
    np.fill_diagonal(similarity, 0.0)
    return similarity


def neighbour_lists(method: str, ds: Dataset, vectors: np.ndarray | None = None,
                    settings: NeighbourSettings = DEFAULT_SETTINGS) -> NeighbourLists:
    similarity = item_similarity(method, ds, vectors, settings)
    index, scores = top_neighbours(similarity, min(settings.length, ds.n_items - 1),
                                   min_score=None if method == "embedding" else 0.0)
    return NeighbourLists(index, scores)


def training_part(ds: Dataset) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """ds restricted to its leave-one-out training rows, with each evaluated user's query
    (second-to-last item) and target (last item), aligned by user."""
    split = leave_one_out(ds)
    rows = split.train
    train = replace(ds, users=ds.users[rows], items=ds.items[rows], ratings=ds.ratings[rows],
                    timestamps=ds.timestamps[rows])
    valid = split.valid[np.argsort(ds.users[split.valid], kind="stable")]
    test = split.test[np.argsort(ds.users[split.test], kind="stable")]
    if not np.array_equal(ds.users[valid], ds.users[test]):
        raise NeighbourError("leave-one-out gave validation and test rows for different users")
    return train, ds.items[valid], ds.items[test]


def list_hits(index: np.ndarray, queries: np.ndarray, targets: np.ndarray, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of the targets in the queries' first k neighbours (one target each)."""
    top = index[queries, :k]
    hits = top == targets[:, None]
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    return {f"hr@{k}": round(float(hits.any(1).mean()), 4),
            f"ndcg@{k}": round(float((hits * discount).sum(1).mean()), 4), "queries": int(len(queries))}


def next_item_quality(ds: Dataset, vectors: np.ndarray | None = None,
                      settings: NeighbourSettings = DEFAULT_SETTINGS, k: int = 10) -> dict[str, dict]:
    """Each method's lists built on the training part, scored on the next item (see the module
    docstring); ``vectors``: item vectors of a model trained on that same training part (the
    ``retrieval_loo`` protocol's), else the embedding method is left out."""
    train, queries, targets = training_part(ds)
    results = {}
    for method in METHODS:
        if method == "embedding" and vectors is None:
            continue
        lists = neighbour_lists(method, train, vectors, replace(settings, length=max(k, 1)))
        results[method] = list_hits(lists.index, queries, targets, k)
    popular = np.argsort(-item_popularity(train, np.arange(train.n_interactions)), kind="stable")[:k + 1]
    without_query = np.array([[i for i in popular if i != q][:k] for q in queries], dtype=np.int64)
    results["most_popular"] = list_hits(np.asarray(without_query), np.arange(len(queries)), targets, k)
    return results
