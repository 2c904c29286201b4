"""The obd scenario in-process: obd_features' checks, the exported repository, and its
reference pipeline equal to the PyTorch ranker at the served slot."""
import json

import numpy as np
import pytest
import torch

from recdeploy.export.scenarios import scenario_for, scenario_named
from recdeploy.export.scenarios.base import entries_of
from recdeploy.export.scenarios.obd import (
    ENSEMBLE,
    AdsExportError,
    InProcessAds,
    ads_pipeline,
    export_obd,
    features_module,
)
from recdeploy.export.triton_config import build_ensemble_config
from recdeploy.train.models.dcn_v2_context import SERVED_POSITION

BadRequest = features_module.BadRequest


@pytest.fixture(scope="module")
def store(obd_repository):
    return InProcessAds(obd_repository).store


def test_pipeline_wiring_and_scenario_lookup():
    pipeline = ads_pipeline()
    config = build_ensemble_config(pipeline.ensemble)
    assert [s.model_name for s in config.ensemble_scheduling.step] == ["obd_features", "obd_ranker", "rank_topk"]
    assert scenario_for({"run": "dcn_v2_context"}).name == "obd"
    assert scenario_named("obd").demo_runs()["run"].dataset == "obd"


def test_repository_holds_the_entry_and_the_lookups(obd_repository, obd):
    assert list(entries_of(obd_repository)) == [ENSEMBLE]
    meta = json.loads((obd_repository / "recdeploy.json").read_text())
    assert meta["scenario"] == "obd" and meta["served_position"] == SERVED_POSITION
    assert max(meta["onnx_parity_max_abs_diff"].values()) < 1e-5
    assert (obd_repository / "obd_features" / "1" / "contexts.npy").is_file()


def test_inprocess_ranking_equals_pytorch_at_the_served_slot(obd_repository, obd_run, store):
    model = obd_run[0].model.eval()
    contexts = store.contexts[:5]
    candidates = np.stack([np.random.default_rng(s).choice(store.item_ids, 12, replace=False) for s in range(5)])
    ids, scores = InProcessAds(obd_repository).rank(contexts, candidates, k=4)
    sparse, dense, _ = features_module.ad_features(contexts, candidates, store)
    assert np.all(sparse[..., -1] == SERVED_POSITION)
    with torch.no_grad():
        logits = model(torch.from_numpy(sparse), torch.from_numpy(dense)).numpy()
    order = np.argsort(-logits, axis=1, kind="stable")[:, :4]
    assert np.array_equal(ids, np.take_along_axis(candidates, order, axis=1))
    np.testing.assert_allclose(scores, np.take_along_axis(logits, order, axis=1), rtol=1e-5, atol=1e-5)


def test_unseen_context_values_fall_back_to_unknown(obd_repository, store):
    contexts = store.contexts[:1].copy()
    unseen = contexts.copy()
    unseen[0, 1] = 10 ** 15
    sparse, _, _ = features_module.ad_features(unseen, store.item_ids[None, :5], store)
    assert sparse[0, 0, 1] == 0 and np.all(sparse[0, :, [0, 2, 3]] > 0)
    ids, scores = InProcessAds(obd_repository).rank(unseen, store.item_ids[None, :5], k=5)
    assert sorted(ids[0].tolist()) == store.item_ids[:5].tolist() and np.all(np.isfinite(scores))


@pytest.mark.parametrize("context,candidates,match", [
    (None, [[0, 10 ** 6]], r"ids outside the ad catalogue \(160 ads\): \[1000000\]"),
    (None, [[0, 5, 0]], "row 0 repeats ad 0: each ad at most once"),
    (None, np.zeros((1, 0), np.int64), r"CANDIDATES must be \[batch, N >= 1\]"),
    (np.zeros((1, 3), np.int64), [[0]], r"CONTEXT must be \[batch, 4\]"),
    (np.zeros((1, 4)), [[0]], "must be integer tensors"),
])
def test_bad_requests_are_the_clients_mistake(store, context, candidates, match):
    context = store.contexts[:1] if context is None else context
    with pytest.raises(BadRequest, match=match):
        features_module.ad_features(context, np.asarray(candidates), store)


def test_k_outside_the_candidates_is_refused(obd_repository, store):
    with pytest.raises(ValueError, match="K must be between 1 and the number of candidates 3, got 4"):
        InProcessAds(obd_repository).rank(store.contexts[:1], store.item_ids[None, :3], k=4)


def test_perf_rows_are_one_campaign_per_row(obd_repository):
    scenario = scenario_named("obd")
    entry = entries_of(obd_repository)[ENSEMBLE]
    rows = scenario.perf_rows(obd_repository, entry, k=10, n=64)
    assert rows["CONTEXT"].shape == (64, 4) and rows["CANDIDATES"].shape == (64, 30)
    assert np.all(rows["CANDIDATES"] // 100 == rows["CANDIDATES"][:, :1] // 100)
    answer = scenario.reference(obd_repository, entry)(rows)
    assert answer["ITEM_IDS"].shape == (64, 10)


def test_export_refuses_another_model(obd, tmp_path):
    with pytest.raises(AdsExportError, match="serves dcn_v2_context runs"):
        export_obd(torch.nn.Linear(1, 1), obd, tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_variant_serves_beside_the_full_ranker(tmp_path, obd_run, obd):
    """A compressed ranker measured per impression ([R, 1, ...]) gets its candidate axis back
    and its own entry; an int8-dynamic copy ranks like the full model within int8's error."""
    import shutil

    from recdeploy.compress import compress, preset
    from recdeploy.compress.families import family_named
    from recdeploy.export.scenarios.obd import add_ads_variant
    from recdeploy.train.onnx_io import export_onnx

    repo = tmp_path / "repo"
    export_obd(obd_run[0].model, obd, repo, obd_run[1])
    family = family_named("dcn_v2_context")
    data = family.task_data(obd_run[0].model, obd)
    example = family.example_requests(obd, 64, seed=1)
    fp32 = export_onnx(family.served_module(obd_run[0].model), example, ["SCORES"], tmp_path / "fp32.onnx")
    # quality through the ONNX scorer equals the run's own test AUC
    from recdeploy.compress.measure import session_scorer
    from recdeploy.train.onnx_io import cpu_session
    quality = data.evaluate(session_scorer(cpu_session(fp32), "SCORES"))
    assert quality["auc"] == pytest.approx(obd_run[0].metrics["test"]["auc"], abs=1e-4)
    int8 = compress(fp32, preset("int8-dynamic"), out=tmp_path / "int8.onnx")
    add_ads_variant(repo, int8, "int8_dynamic")
    entries = entries_of(repo)
    assert entries["rank_ads_int8_dynamic"].variant_of == ENSEMBLE
    scenario = scenario_named("obd")
    rows = scenario.perf_rows(repo, entries[ENSEMBLE], k=5, n=32)
    full = scenario.reference(repo, entries[ENSEMBLE])(rows)
    small = scenario.reference(repo, entries["rank_ads_int8_dynamic"])(rows)
    assert np.abs(small["SCORES"] - full["SCORES"]).max() < 0.05
    with pytest.raises(AdsExportError, match="has no exported obd scenario"):
        shutil.rmtree(repo / "obd_features")
        add_ads_variant(repo, int8, "again")
