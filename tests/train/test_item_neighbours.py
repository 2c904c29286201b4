"""Similar-item lists by each method on ML-100k, and their next-item quality."""
import numpy as np
import pytest

from recdeploy.train.item_neighbours import (
    NeighbourError,
    NeighbourSettings,
    neighbour_lists,
    next_item_quality,
    training_part,
)


@pytest.mark.parametrize("method", ["cosine", "pearson", "content", "embedding"])
def test_lists_never_hold_the_item_itself_and_are_sorted(ml100k, method):
    vectors = np.random.default_rng(0).normal(size=(ml100k.n_items, 8)).astype(np.float32)
    lists = neighbour_lists(method, ml100k, vectors, NeighbourSettings(length=20))
    assert lists.index.shape == lists.scores.shape == (ml100k.n_items, 20)
    assert not np.any(lists.index == np.arange(ml100k.n_items)[:, None])
    finite = np.where(np.isfinite(lists.scores), lists.scores, -9.0)
    assert np.all(np.diff(finite, axis=1) <= 0)
    assert np.array_equal(lists.index < 0, np.isneginf(lists.scores))


@pytest.mark.parametrize("method, query, first", [
    ("content", "Godfather, The", {"Godfather: Part II, The"}),          # title words and genres
    ("pearson", "Star Wars", {"Empire Strikes Back, The", "Return of the Jedi"}),   # rated alike
])
def test_sequels_come_first(ml100k, method, query, first):
    titles = np.array(ml100k.item_titles)
    item = int(np.flatnonzero(titles == query)[0])
    lists = neighbour_lists(method, ml100k, settings=NeighbourSettings(length=len(first)))
    assert set(titles[lists.index[item]]) == first


def test_item_knn_predicts_the_next_item_better_than_popularity(ml100k):
    quality = next_item_quality(ml100k)
    assert set(quality) == {"cosine", "pearson", "content", "most_popular"}
    assert quality["cosine"]["hr@10"] > 1.5 * quality["most_popular"]["hr@10"]
    assert quality["cosine"]["queries"] == ml100k.n_users


def test_training_part_holds_neither_query_nor_target_rows(ml100k):
    train, queries, targets = training_part(ml100k)
    assert len(queries) == len(targets) == ml100k.n_users
    assert train.n_interactions == ml100k.n_interactions - 2 * ml100k.n_users


@pytest.mark.parametrize("method, vectors, message", [
    ("jaccard", None, "unknown similarity method 'jaccard'; valid: cosine, pearson, content, embedding"),
    ("embedding", None, "the embedding method needs a trained model's item vectors"),
    ("embedding", np.zeros((3, 2)), "3 item vectors for 1682 items"),
])
def test_bad_requests_are_clear_errors(ml100k, method, vectors, message):
    with pytest.raises(NeighbourError, match=message):
        neighbour_lists(method, ml100k, vectors)
