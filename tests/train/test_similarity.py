"""Similarity primitives, against hand-computed values and numpy's own formulas."""
import numpy as np
import pytest

from recdeploy.train.similarity import (
    SimilarityError,
    content_vectors,
    cosine_similarity,
    densify,
    interaction_matrix,
    pearson_similarity,
    tfidf,
    title_tokens,
    top_neighbours,
)


def test_cosine_with_shrink_matches_the_formula_and_has_a_zero_diagonal():
    # 3 users x 3 items: item 0 chosen by users 0,1; item 1 by 0,1,2; item 2 by 2
    matrix = interaction_matrix(np.array([0, 1, 0, 1, 2, 2]), np.array([0, 0, 1, 1, 1, 2]), 3, 3)
    similarity = cosine_similarity(matrix, shrink=1.0)
    assert similarity[0, 1] == pytest.approx(2 / (np.sqrt(2 * 3) + 1 + 1e-6))
    assert similarity[1, 2] == pytest.approx(1 / (np.sqrt(3 * 1) + 1 + 1e-6))
    assert similarity[0, 2] == 0.0
    assert np.allclose(similarity, similarity.T) and np.all(np.diag(similarity) == 0)


def test_pearson_equals_numpy_corrcoef_where_every_column_is_shared():
    rng = np.random.default_rng(0)
    ratings = rng.integers(1, 6, size=(4, 7)).astype(np.float32)
    ratings[0] = ratings[1] * 2 - 1         # perfectly correlated with row 1
    got = pearson_similarity(ratings, shrink=0.0)
    want = np.corrcoef(ratings)
    np.fill_diagonal(want, 0.0)
    assert got == pytest.approx(want, abs=1e-5)
    assert got[0, 1] == pytest.approx(1.0, abs=1e-5)


def test_pearson_uses_co_rated_columns_only_and_shrinks_by_their_count():
    # row means over all rated entries: a = 3, b = 3; co-rated columns 0, 1, 2
    a = [1.0, 5.0, 3.0, 3.0]
    b = [2.0, 4.0, 3.0, 0.0]        # 0: not rated
    got = pearson_similarity(np.array([a, b], np.float32), shrink=3.0)
    rho = ((-2) * (-1) + 2 * 1 + 0) / np.sqrt((4 + 4 + 0) * (1 + 1 + 0))
    assert got[0, 1] == pytest.approx(rho * 3 / (3 + 3.0), abs=1e-6)


def test_pearson_is_zero_with_fewer_than_two_shared_columns():
    ratings = np.array([[5, 0, 1], [4, 2, 0]], np.float32)   # share only column 0
    assert pearson_similarity(ratings, shrink=0.0)[0, 1] == 0.0


def test_top_neighbours_excludes_the_item_sorts_breaks_ties_by_index_and_pads():
    similarity = np.array([[0.0, 0.5, 0.5, 0.0],
                           [0.5, 0.0, 0.9, -0.2],
                           [0.5, 0.9, 0.0, 0.1],
                           [0.0, -0.2, 0.1, 0.0]], np.float32)
    index, scores = top_neighbours(similarity, 3)
    assert index.tolist() == [[1, 2, -1], [2, 0, -1], [1, 0, 3], [2, -1, -1]]
    assert scores[0, :2].tolist() == [0.5, 0.5] and np.isneginf(scores[0, 2])
    index, _ = top_neighbours(similarity, 3, min_score=None)     # any score counts
    assert index[3].tolist() == [2, 0, 1]
    assert densify(*top_neighbours(similarity, 2), 4)[1].tolist() == pytest.approx([0.5, 0, 0.9, 0])


def test_content_cosine_is_the_weighted_mean_of_the_block_cosines():
    titles = ["Star Wars", "Star Trek", "Heat"]
    genres = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    year = np.array([1977, 1979, 1995])
    vectors = content_vectors(titles, {"genres": genres, "year": year},
                              {"genres": 1.0, "title": 1.0, "decade": 0.5})
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1, 1, 1])
    g = tfidf([["g0", "g1"], ["g0"], ["g2"]])
    t = tfidf([title_tokens(x) for x in titles])
    want = (1.0 * g[0] @ g[1] + 1.0 * t[0] @ t[1] + 0.5 * 1.0) / 2.5
    assert vectors[0] @ vectors[1] == pytest.approx(want, abs=1e-6)
    assert vectors[0] @ vectors[2] == pytest.approx(0.0, abs=1e-6)


def test_title_tokens_drop_stop_words_and_punctuation():
    assert title_tokens("The Lord of the Rings: The Two Towers") == ["lord", "rings", "two", "towers"]


@pytest.mark.parametrize("call, message", [
    (lambda: cosine_similarity(np.ones((2, 2)), shrink=-1), "shrink must be >= 0, got -1"),
    (lambda: top_neighbours(np.zeros((3, 3)), 0), "n must be between 1 and 3, got 0"),
    (lambda: content_vectors(["a"], {"genres": np.zeros((2, 1))}), "1 titles but genres for 2"),
    (lambda: content_vectors(["a"], {}, {"plot": 1.0}), r"unknown feature blocks \['plot'\]"),
])
def test_bad_inputs_are_clear_errors(call, message):
    with pytest.raises(SimilarityError, match=message):
        call()
