"""Similarity between items (or users) and their top-N neighbour lists, in numpy.

    R = interaction_matrix(ds.users, ds.items, ds.n_users, ds.n_items)    # U x I, 1 where rated
    S = cosine_similarity(R, shrink=10.0)                                 # I x I, zero diagonal
    S = pearson_similarity(ratings_matrix(ds).T, shrink=100.0)            # item-item, on ratings
    X = content_vectors(ds.item_titles, ds.item_features)                 # I x F, rows unit-norm
    index, scores = top_neighbours(S, 100)                                # I x 100, best first

The neighbourhood methods of item-based collaborative filtering (Sarwar et al., WWW 2001;
Deshpande & Karypis, TOIS 2004) and of Koren's neighbourhood models (KDD 2008): a
similarity between the columns of the user-item matrix, kept for each item's N most similar
items only. Shared by the ``item_knn`` / ``user_knn`` models and the similar-items scenario.
Matrices are dense float32 (I x I for items): simple and BLAS-fast for catalogues of
thousands; ``item_neighbours.MAX_ITEMS`` bounds where it is used.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

EPS = 1e-6   # RecBole's guard in the cosine denominator


class SimilarityError(ValueError):
    """Inputs a similarity cannot be computed from (wrong shapes, a negative shrinkage, ...)."""


def interaction_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int,
                       values: np.ndarray | None = None) -> np.ndarray:
    """Dense [n_rows, n_cols] float32 matrix: ``values`` (default 1) at (rows, cols); a pair
    given twice keeps the last value."""
    matrix = np.zeros((n_rows, n_cols), dtype=np.float32)
    matrix[np.asarray(rows), np.asarray(cols)] = 1.0 if values is None else np.asarray(values, np.float32)
    return matrix


def _check_shrink(shrink: float) -> None:
    if shrink < 0:
        raise SimilarityError(f"shrink must be >= 0, got {shrink}")


def cosine_similarity(matrix: np.ndarray, shrink: float = 0.0) -> np.ndarray:
    """Cosine between the columns of ``matrix`` [U, I] -> [I, I], zero diagonal.

    s_ij = x_i . x_j / (|x_i| |x_j| + shrink + 1e-6): RecBole's ItemKNN (shrink lowers the
    similarity of items with little support, most for rare items)."""
    _check_shrink(shrink)
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.sqrt(np.einsum("ui,ui->i", matrix, matrix))
    similarity = matrix.T @ matrix
    similarity /= np.outer(norms, norms) + np.float32(shrink + EPS)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def pearson_similarity(ratings: np.ndarray, shrink: float = 100.0, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean-centred Pearson correlation between the rows of ``ratings`` [N, M] -> [N, N].

    Each row is centred by its own mean over its rated entries (``mask``; default: the
    non-zero ones). Between rows a and b, over the columns both rated:
    rho_ab = sum (r_a - mean_a)(r_b - mean_b) / sqrt(sum (r_a - mean_a)^2 * sum (r_b - mean_b)^2),
    then shrunk toward 0 by the number of co-rated columns n_ab: s_ab = n_ab / (n_ab + shrink)
    * rho_ab (Koren, KDD 2008; shrink 0 is the plain coefficient). Zero diagonal; 0 where
    fewer than two columns are shared or a row is constant over them.
    """
    _check_shrink(shrink)
    ratings = np.asarray(ratings, dtype=np.float32)
    rated = (ratings != 0) if mask is None else np.asarray(mask, dtype=bool)
    rated_f = rated.astype(np.float32)
    counts = rated_f.sum(1)
    means = np.divide(np.where(rated, ratings, 0).sum(1), counts, out=np.zeros_like(counts),
                      where=counts > 0)
    centred = np.where(rated, ratings - means[:, None], 0.0).astype(np.float32)
    numerator = centred @ centred.T
    # sum of a's squared deviations over the columns b rated too: A[a, b]
    spread = (centred * centred) @ rated_f.T
    denominator = np.sqrt(spread * spread.T)
    support = rated_f @ rated_f.T
    similarity = np.divide(numerator, denominator, out=np.zeros_like(numerator),
                           where=(denominator > EPS) & (support >= 2))
    similarity *= support / (support + np.float32(shrink)) if shrink else 1.0
    np.fill_diagonal(similarity, 0.0)
    return similarity.astype(np.float32)


def top_neighbours(similarity: np.ndarray, n: int, min_score: float | None = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``n`` most similar columns, best first: (index int64 [R, n], score float32 [R, n]).

    The row itself never counts (its own column, for a square matrix). Only scores above
    ``min_score`` count (None: any score); a row with fewer pads with index -1 and score
    -inf. Ties: the lower index first, so the lists are deterministic.
    """
    similarity = np.asarray(similarity, dtype=np.float32)
    rows, cols = similarity.shape
    if not 1 <= n <= cols:
        raise SimilarityError(f"n must be between 1 and {cols}, got {n}")
    scores = similarity.copy()
    if rows == cols:
        np.fill_diagonal(scores, -np.inf)
    if min_score is not None:
        scores[scores <= min_score] = -np.inf
    candidates = np.argpartition(-scores, n - 1, axis=1)[:, :n] if n < cols else \
        np.broadcast_to(np.arange(cols), scores.shape)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    index = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    best = np.take_along_axis(candidate_scores, order, axis=1).astype(np.float32)
    return np.where(np.isfinite(best), index, -1), best


def densify(index: np.ndarray, scores: np.ndarray, n_cols: int) -> np.ndarray:
    """Neighbour lists [R, N] back to a dense [R, n_cols] matrix, zero where not a neighbour."""
    dense = np.zeros((len(index), n_cols), dtype=np.float32)
    rows, slots = np.nonzero(index >= 0)
    dense[rows, index[rows, slots]] = scores[rows, slots]
    return dense


# ---------------------------------------------------------------------------- content

TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset({"a", "an", "and", "de", "in", "la", "le", "of", "on", "the", "to"})
# how much each feature block weighs in the cosine of two items (each block unit-norm)
BLOCK_WEIGHTS = {"genres": 1.0, "title": 1.0, "decade": 0.5}


def title_tokens(title: str) -> list[str]:
    """Lower-case word tokens of a title, stop words dropped."""
    return [t for t in TOKEN.findall(title.lower()) if t not in STOPWORDS]


def tfidf(documents: Sequence[Sequence[str]]) -> np.ndarray:
    """Documents (token lists) -> [D, V] float32 TF-IDF rows, unit-norm (zero for an empty one).

    tf = count, idf = ln((1 + D) / (1 + df)) + 1 (scikit-learn's smooth idf)."""
    vocabulary: dict[str, int] = {}
    for tokens in documents:
        for token in tokens:
            vocabulary.setdefault(token, len(vocabulary))
    counts = np.zeros((len(documents), max(1, len(vocabulary))), dtype=np.float32)
    for row, tokens in enumerate(documents):
        for token in tokens:
            counts[row, vocabulary[token]] += 1.0
    df = (counts > 0).sum(0)
    weighted = counts * (np.log((1.0 + len(documents)) / (1.0 + df)) + 1.0).astype(np.float32)
    return _unit_rows(weighted)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0).astype(np.float32)


def content_vectors(titles: Sequence[str], item_features: Mapping[str, np.ndarray],
                    weights: Mapping[str, float] = BLOCK_WEIGHTS) -> np.ndarray:
    """Item side features -> [I, F] float32 rows whose dot product is the content cosine.

    Three blocks, each TF-IDF weighted and unit-norm, then scaled by sqrt(weight) and the
    whole row normalised: for two items with all three blocks, their cosine is the weighted
    mean of their genre, title and release-decade cosines. Genres from
    ``item_features["genres"]`` ([I, G] indicators), decades from ``item_features["year"]``
    (0: unknown)."""
    n = len(titles)
    genres = np.asarray(item_features.get("genres", np.zeros((n, 0))), dtype=np.float32)
    year = np.asarray(item_features.get("year", np.zeros(n)), dtype=np.int64)
    if len(genres) != n or len(year) != n:
        raise SimilarityError(f"{n} titles but genres for {len(genres)} and years for {len(year)} items")
    blocks = {
        "genres": tfidf([[f"g{j}" for j in np.flatnonzero(row)] for row in genres]),
        "title": tfidf([title_tokens(t) for t in titles]),
        "decade": tfidf([[f"d{y // 10}"] if y > 0 else [] for y in year]),
    }
    unknown = set(weights) - set(blocks)
    if unknown:
        raise SimilarityError(f"unknown feature blocks {sorted(unknown)}; valid: {sorted(blocks)}")
    scaled = [blocks[name] * np.float32(np.sqrt(weight)) for name, weight in weights.items() if weight > 0]
    return _unit_rows(np.concatenate(scaled, axis=1))
