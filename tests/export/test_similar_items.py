"""The similar-items scenario: specs, the python models' numpy cores, the export, in-process."""
import json

import numpy as np
import pytest

from recdeploy.export.repository import verify_manifest
from recdeploy.export.scenarios import ExportJob, entries_of, scenario_named
from recdeploy.export.scenarios.base import ExportError
from recdeploy.export.scenarios.similar_items import (
    SimilarItemsInProcess,
    lookup_module,
    neighbours_module,
    similar_items_spec,
)
from recdeploy.export.triton_config import build_ensemble_config, config_text, parse_config_text
from recdeploy.export.triton_python import load_core
from recdeploy.train.checkpoint import Checkpoint, load_checkpoint
from recdeploy.train.config import TrainConfig
from recdeploy.train.tasks import fit_closed_form

BadRequest = load_core().BadRequest
ENTRIES = ["similar_items", "similar_items_pearson", "similar_items_content", "similar_items_embedding"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_run, ml100k):
    run, _ = trained_run
    repo = tmp_path_factory.mktemp("similar")
    report = scenario_named("similar_items").export(ExportJob(repo, {"run": load_checkpoint(run)}, ml100k))
    return repo, report


# ---------------------------------------------------------------- specs

def test_ensemble_is_item_lookup_then_the_methods_neighbours_and_parses_back():
    config = parse_config_text(config_text(build_ensemble_config(similar_items_spec("pearson"))))
    assert config.name == "similar_items_pearson"
    assert [s.model_name for s in config.ensemble_scheduling.step] == ["item_lookup", "neighbours_pearson"]
    assert [i.name for i in config.input] == ["ITEM_ID", "K"]
    assert [o.name for o in config.output] == ["ITEM_IDS", "SCORES"]
    assert similar_items_spec("cosine").name == "similar_items"


# ---------------------------------------------------------------- numpy cores

@pytest.fixture()
def neighbours():
    # items 100, 101, 102, 103; item 3 has one neighbour only
    return neighbours_module.NeighbourTable(
        neighbour_index=[[1, 2], [0, 3], [1, 0], [2, -1]],
        neighbour_scores=np.array([[0.9, 0.5], [0.9, 0.1], [0.5, 0.5], [0.2, -np.inf]], np.float32),
        item_ids=[100, 101, 102, 103], popularity=[5.0, 1.0, 7.0, 2.0])


def test_lookup_maps_raw_ids_and_marks_unknown_negative_and_past_the_end():
    table = lookup_module.ItemTable([100, 101, 102, 103])
    index, known = lookup_module.lookup_items(np.array([[102], [99], [-1], [104], [100]]), table)
    assert index.ravel().tolist() == [2, 0, 0, 0, 0]
    assert known.ravel().tolist() == [True, False, False, False, True]


@pytest.mark.parametrize("ids, message", [
    (np.array([[1, 2]], np.int64), r"ITEM_ID must be \[batch, 1\], got \[1, 2\]"),
    (np.array([[1.0]], np.float32), "ITEM_ID must be an integer tensor, got float32"),
])
def test_lookup_refuses_a_wrong_shape_or_type(ids, message):
    with pytest.raises(BadRequest, match=message):
        lookup_module.lookup_items(ids, lookup_module.ItemTable([1, 2]))


def test_nearest_cuts_at_k_pads_with_minus_one_and_answers_unknown_items_with_popular_ones(neighbours):
    ids, scores = neighbours_module.nearest(np.array([[3], [0], [0]]), np.array([[True], [True], [False]]),
                                            2, neighbours)
    assert ids.tolist() == [[102, -1], [101, 102], [102, 100]]
    assert scores[0, 0] == pytest.approx(0.2) and np.isneginf(scores[0, 1])
    assert scores[2].tolist() == [7.0, 5.0]          # popularity counts for the unknown item


def test_nearest_refuses_an_index_past_the_lists_as_a_pipeline_fault(neighbours):
    with pytest.raises(neighbours_module.PipelineFault, match="ITEM_INDEX holds 9, beyond the catalogue"):
        neighbours_module.nearest(np.array([[9]]), np.array([[True]]), 1, neighbours)


@pytest.mark.parametrize("k, message", [
    (0, "K must be between 1 and the neighbour-list length 2, got 0"),
    (3, "K must be between 1 and the neighbour-list length 2, got 3"),
])
def test_k_beyond_the_lists_is_a_bad_request(neighbours, k, message):
    with pytest.raises(BadRequest, match=message):
        neighbours_module.parse_k(np.array([k], np.int32), neighbours.length, "the neighbour-list length")


def test_inconsistent_artifacts_are_refused_at_load():
    with pytest.raises(ValueError, match="neighbour_index must hold -1 or internal indices below 2"):
        neighbours_module.NeighbourTable([[1], [5]], np.ones((2, 1), np.float32), [1, 2], [1.0, 1.0])


# ---------------------------------------------------------------- export and in-process

def test_export_writes_four_entries_with_a_verified_manifest(exported, ml100k):
    repo, report = exported
    assert list(report.entries) == ENTRIES
    verify_manifest(repo)
    meta = json.loads((repo / "recdeploy.json").read_text())
    assert meta["scenario"] == "similar_items" and meta["neighbours"] == 100
    assert set(meta["next_item_quality"]) == {"cosine", "pearson", "content", "embedding", "most_popular"}
    assert max(report.parity.values()) < 1e-5     # embedding lists vs the PyTorch item vectors


@pytest.mark.parametrize("entry", ENTRIES)
def test_in_process_answers_never_return_the_query_and_unknown_items_get_popular_ones(exported, entry, ml100k):
    repo, _ = exported
    scenario = scenario_named("similar_items")
    record = entries_of(repo)[entry]
    pipeline = scenario.reference(repo, record)
    requests = scenario.canary_requests(repo, record)[0]
    answer = pipeline(requests)
    queries = requests["ITEM_ID"][:, 0]
    assert answer["ITEM_IDS"].shape == (len(queries), 10)
    assert not np.any(answer["ITEM_IDS"] == queries[:, None])
    unknown = queries.max()                       # the canary's last id is past the catalogue
    popular = SimilarItemsInProcess(repo, record.reference["model"]).similar(np.array([unknown]), 10)[0]
    assert answer["ITEM_IDS"][-1].tolist() == popular[0].tolist()
    rows = scenario.perf_rows(repo, record, k=10, n=64)
    assert rows["ITEM_ID"].shape == (64, 1) and set(rows["K"].ravel()) == {10}
    assert np.isin(rows["ITEM_ID"], ml100k.item_ids).all()


def test_a_run_without_item_vectors_exports_the_other_three(tmp_path, ml100k):
    config = TrainConfig(model="item_knn", neighbours=10)
    model, _ = fit_closed_form(config, ml100k, np.arange(ml100k.n_interactions))
    report = scenario_named("similar_items").export(
        ExportJob(tmp_path, {"run": Checkpoint(model, config, {"dataset_fingerprint": ml100k.fingerprint()})}, ml100k))
    assert list(report.entries) == ENTRIES[:3]
    assert "no embedding entry: ItemKNN has no item_vectors()" in report.notes


def test_a_run_of_other_data_is_refused(tmp_path, trained_run, ml100k):
    checkpoint = load_checkpoint(trained_run[0])
    checkpoint.card["dataset_fingerprint"] = "0" * 16
    with pytest.raises(ExportError, match="checkpoint was trained on dataset fingerprint 0000"):
        scenario_named("similar_items").export(ExportJob(tmp_path, {"run": checkpoint}, ml100k))
