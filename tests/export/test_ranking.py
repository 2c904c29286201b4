"""Ranking + multi-stage export: numpy cores, pure specs, ONNX parity, in-process references."""
import json

import numpy as np
import pytest
import torch

from recdeploy.export.scenarios.base import ExportError
from recdeploy.export.scenarios.multistage import (
    InProcessMultiStage,
    export_multistage,
    multistage_pipeline,
    retrieve_topn_spec,
    topn_module,
)
from recdeploy.export.scenarios.ranking import (
    InProcessRanker,
    export_ranking,
    features_module,
    rank_topk_module,
    ranking_pipeline,
)
from recdeploy.export.triton_config import (
    EnsembleStep,
    EnsembleWiringError,
    build_model_config,
    check_ensemble,
    config_text,
    parse_config_text,
)

# ---------------------------------------------------------------------------- numpy cores

@pytest.fixture()
def store():
    # users 10, 20 (rows 1, 2); items 7, 5, 9 in internal order (rows 1, 2, 3)
    return features_module.FeatureStore(
        user_ids=[10, 20], item_ids=[7, 5, 9],
        user_sparse=[[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [2, 2, 2, 2, 2]],
        user_dense=[[0.0], [0.5], [-0.5]], item_sparse=[[0], [1], [2], [3]],
        item_genres=[[0, 0], [1, 0], [0, 1], [1, 1]],
        item_dense=[[0, 0], [1, 1], [2, 2], [3, 3]])


def test_features_for_known_unknown_and_repeated_ids(store):
    sparse, genres, dense, valid = features_module.candidate_features(
        np.array([[20], [99]]), np.array([[5, 9, 5, 4], [7, -1, 7, 9]]), store)
    assert sparse.shape == (2, 4, 6) and genres.shape == (2, 4, 2) and dense.shape == (2, 4, 3)
    assert sparse[0, :, :5].tolist() == [[2] * 5] * 4          # user 20 is table row 2
    assert sparse[1, :, :5].tolist() == [[0] * 5] * 4          # unknown user: reserved row 0
    assert sparse[:, :, 5].tolist() == [[2, 3, 2, 0], [1, 0, 1, 3]]
    assert dense[0, 0].tolist() == [-0.5, 2.0, 2.0]
    assert valid.tolist() == [[True, True, False, False], [True, False, False, True]]


def test_features_reject_float_ids(store):
    with pytest.raises(ValueError, match="must be integer tensors, got float32"):
        features_module.candidate_features(np.array([[1.0]], np.float32), np.array([[5]]), store)


def test_rank_top_k_puts_invalid_last_and_breaks_ties_by_position():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 3.0]], np.float32)
    valid = np.array([[True, True, True, True, False]])
    ids, best = rank_topk_module.rank_top_k(scores, np.array([[11, 12, 13, 14, 15]]), valid, 5)
    assert ids.tolist() == [[12, 14, 13, 11, -1]]
    assert best[0, :4].tolist() == pytest.approx([0.9, 0.9, 0.5, 0.1]) and best[0, 4] == -np.inf


@pytest.mark.parametrize("k, message", [
    ([[0]], "K must be between 1 and the number of candidates 4, got 0"),
    ([[5]], "got 5"), ([[2], [3]], "K must be the same for every row"),
    (np.array([[1.0]]), "K must be one integer per row")])
def test_rank_parse_k_errors(k, message):
    with pytest.raises(rank_topk_module.BadRequest, match=message):
        rank_topk_module.parse_k(np.asarray(k), 4, "the number of candidates")


def test_top_n_candidates_removes_seen_and_uses_popularity_for_unknown():
    item_ids = np.array([100, 101, 102, 103])
    scores = np.array([[0.4, 0.9, 0.1, 0.8], [9, 9, 9, 9]], np.float32)
    seen = np.array([[1, -1], [-1, -1]])
    got = topn_module.top_n_candidates(scores, seen, np.array([[True], [False]]), 2,
                                       np.array([1, 5, 3, 2], np.float32), item_ids)
    assert got.tolist() == [[103, 100], [101, 102]]
    short = topn_module.top_n_candidates(scores[:1], np.array([[0, 1, 3]]), np.array([[True]]), 2,
                                         np.ones(4, np.float32), item_ids)
    assert short.tolist() == [[102, -1]]


def test_n_candidates_parameter_is_checked():
    assert topn_module.n_candidates({"parameters": {"n_candidates": {"string_value": "50"}}}) == 50
    with pytest.raises(ValueError, match="needs parameter n_candidates >= 1, got ''"):
        topn_module.n_candidates({})


# ---------------------------------------------------------------------------- specs

def test_rank_ensemble_wiring_and_config_round_trip():
    pipeline = ranking_pipeline(n_genres=19)
    assert [s.model_name for s in pipeline.ensemble.steps] == ["ranking_features", "ranker", "rank_topk"]
    parsed = parse_config_text(config_text(build_model_config(pipeline.ranker)))
    assert parsed.platform == "onnxruntime_onnx"
    assert [list(t.dims) for t in parsed.input] == [[-1, 6], [-1, 19], [-1, 3]]


def test_multistage_wiring_and_a_broken_step_is_caught():
    pipeline = multistage_pipeline(n_items=1682, n_genres=19, n_candidates=100)
    assert [s.model_name for s in pipeline.ensemble.steps] == [
        "feature_lookup", "scorer", "retrieve_topn", "ranking_features", "ranker", "rank_topk"]
    topn = next(m for m in pipeline.models if m.name == "retrieve_topn")
    assert topn.outputs[0].dims == (100,) and dict(topn.parameters) == {"n_candidates": "100"}
    steps = list(pipeline.ensemble.steps)
    steps[3] = EnsembleStep("ranking_features", {"USER_ID": "USER_ID", "CANDIDATES": "candidatez"},
                            steps[3].output_map)
    from dataclasses import replace
    with pytest.raises(EnsembleWiringError, match="reads 'candidatez'"):
        check_ensemble(replace(pipeline.ensemble, steps=tuple(steps)),
                       {m.name: m for m in pipeline.models})


def test_n_candidates_beyond_catalogue_is_an_error():
    with pytest.raises(ExportError, match="n_candidates must be between 1 and the catalogue size 50, got 51"):
        retrieve_topn_spec(n_items=50, n_candidates=51)


# ---------------------------------------------------------------------------- export

@pytest.fixture(scope="module")
def tiny_dcn(ml100k):
    from recdeploy.train.config import TrainConfig
    from recdeploy.train.tasks import ctr

    rows, _ = ctr.ctr_rows(ml100k)
    config = TrainConfig(model="dcn_v2", dataset="ml-100k", dim=8, epochs=1, batch_size=4096,
                         lr=0.01, weight_decay=1e-5, patience=1)
    result = ctr.train(config, ml100k, ctr.random_split(rows, 0), progress=False,
                       cross_layers=1, hidden=(16,))
    return result.model, result.card(config, ml100k)


@pytest.fixture(scope="module")
def ranking_repo(tmp_path_factory, tiny_dcn, ml100k):
    repo = tmp_path_factory.mktemp("ranking_repo")
    model, card = tiny_dcn
    return repo, export_ranking(model, ml100k, repo, card)


def test_ranker_onnx_parity_on_real_rows(ranking_repo):
    _, parity = ranking_repo
    assert parity.n_rows == 32 and parity.max_abs_diff["SCORES"] < 1e-5


def test_served_features_equal_the_training_tables(tiny_dcn, ml100k):
    model, _ = tiny_dcn
    from recdeploy.export.scenarios.ranking import feature_store
    users, items = np.array([0, 5, 942]), np.array([3, 0, 1681])
    sparse, genres, dense, valid = features_module.candidate_features(
        ml100k.user_ids[users].reshape(-1, 1), ml100k.item_ids[items].reshape(-1, 1),
        feature_store(model, ml100k))
    want = model.features.gather(torch.from_numpy(users + 1), torch.from_numpy(items + 1))
    for got, expected in zip((sparse, genres, dense), want):
        np.testing.assert_array_equal(got[:, 0], expected.numpy())
    assert valid.all()


def test_inprocess_ranker_orders_by_the_pytorch_model(ranking_repo, tiny_dcn, ml100k):
    repo, _ = ranking_repo
    model, _ = tiny_dcn
    candidates = ml100k.item_ids[[0, 49, 99, 180, 300, 1000]]
    ids, scores = InProcessRanker(repo).rank([1], [candidates], k=6)
    with torch.no_grad():
        logits = model.score_rows(torch.zeros(6, dtype=torch.long) + 1,
                                  torch.from_numpy(np.array([0, 49, 99, 180, 300, 1000]) + 1)).numpy()
    order = np.argsort(-logits, kind="stable")
    assert ids[0].tolist() == candidates[order].tolist()
    np.testing.assert_allclose(scores[0], logits[order], atol=1e-5)


def test_export_refuses_another_dataset(tiny_dcn, tmp_path):
    from recdeploy.train.data import synthetic
    model, card = tiny_dcn
    with pytest.raises(ExportError, match="checkpoint was trained on dataset fingerprint"):
        export_ranking(model, synthetic(n_users=5, n_items=10, interactions_per_user=2), tmp_path, card)


def test_multistage_export_and_inprocess(tmp_path, trained_run, tiny_dcn, ml100k):
    (_, retrieval), (ranker, card) = trained_run, tiny_dcn
    parity = export_multistage(retrieval.model, ranker, ml100k, tmp_path, n_candidates=30,
                               ranker_card=card)
    assert max(p.max_abs_diff[next(iter(p.max_abs_diff))] for p in parity.values()) < 1e-4
    meta = json.loads((tmp_path / "recdeploy.json").read_text())
    retrieval = ["recommend", "recommend_fused", "recommend_fused_libtorch", "fused_retrieval_libtorch",
                 "recommend_fused_aoti", "fused_retrieval_aoti"]
    assert meta["ensembles"] == [*retrieval, "rank", "recommend_multistage"]
    assert {name: entry["scenario"] for name, entry in meta["entries"].items()} == {
        **dict.fromkeys(retrieval, "retrieval"), "rank": "ranking", "recommend_multistage": "multistage"}
    assert (tmp_path / "recommend_multistage" / "config.pbtxt").is_file()
    reference = InProcessMultiStage(tmp_path)
    users = ml100k.user_ids[:4]
    candidates = reference.candidates(users)
    assert candidates.shape == (4, 30)
    # the candidates are the retrieval model's own top-30 unseen items
    from recdeploy.export.scenarios.retrieval import InProcessRecommender
    want, _ = InProcessRecommender(tmp_path).recommend(users, k=30)
    assert np.array_equal(candidates, want)
    ids, scores = reference.recommend(users, k=10)
    assert ids.shape == (4, 10) and np.all(np.diff(scores, axis=1) <= 0)
    assert all(set(row) <= set(cands) for row, cands in zip(ids.tolist(), candidates.tolist()))
