"""Cached tables for the criteo scenario without a server: the wiring of criteo_rank_cached, the
feature step's cached lookups equal the table's rows, the dense-only ranker behind them scores
as the full ranker does, and mistakes (a bad capacity, compressed tables, no criteo export)
are refused with a message that says what is valid."""
import json

import numpy as np
import pytest
import torch
from google.protobuf import json_format

from recdeploy.compress.criteo_tables import with_tables
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.export.cli import run_export
from recdeploy.export.repository import verify_manifest
from recdeploy.export.scenarios import scenario_named
from recdeploy.export.scenarios.base import ExportError, ScenarioError, entries_of, latest_version_dir
from recdeploy.export.scenarios.criteo import InProcessCriteo, export_criteo, features_module
from recdeploy.export.scenarios.criteo_cached import (
    DenseRanker,
    add_cached_tables,
    cached_features_spec,
    cached_pipeline_specs,
    fp32_table,
)
from recdeploy.export.triton_config import parse_config_text
from recdeploy.train.config import TrainConfig
from recdeploy.train.criteo.prepare import SyntheticSource, prepare
from recdeploy.train.criteo.synthetic import SyntheticCriteo
from recdeploy.train.onnx_io import cpu_session
from recdeploy.train.tasks import run_task

CAPACITY = 60


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    source = SyntheticSource(SyntheticCriteo(rows=20_000, scale=0.002, chunk_rows=10_000))
    data = prepare(source, tmp_path_factory.mktemp("criteo") / "data", max_vocab=300, hash_rows=64,
                   progress=False)
    return data, run_task(TrainConfig.for_model("dlrm", dataset="criteo", dim=4), data, progress=False).model


@pytest.fixture(scope="module")
def repo(tmp_path_factory, trained):
    data, model = trained
    repo = tmp_path_factory.mktemp("repo")
    export_criteo(model, data, repo)
    add_cached_tables(model, repo, CAPACITY)
    return repo


def served_features(repo):
    """criteo_features_cached as the python backend starts it: its written config as JSON."""
    folder = repo / "criteo_features_cached"
    config = parse_config_text((folder / "config.pbtxt").read_text())
    model = features_module.TritonPythonModel()
    model.initialize({"model_repository": str(folder), "model_version": "1", "model_name": config.name,
                      "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True)})
    return model


def test_wiring():
    models, ensemble = cached_pipeline_specs(100, dim=8)
    assert [m.name for m in models] == ["criteo_features_cached", "criteo_ranker_dense", "rank_topk"]
    assert ensemble.name == "criteo_rank_cached"
    assert [t.name for t in ensemble.inputs] == ["DENSE", "CATEGORICAL", "CANDIDATES", "K"]
    embeddings = next(t for t in models[0].outputs if t.name == "EMBEDDINGS")
    assert embeddings.dims == (-1, 26, 8) and models[0].parameters == (("cache_rows", "100"),)
    assert [t.name for t in models[1].inputs] == ["DENSE_X", "EMBEDDINGS"]


def test_capacity_must_be_positive():
    with pytest.raises(ExportError, match="the cache holds at least one row, got 0"):
        cached_features_spec(0, dim=4)


def test_repository_holds_the_table_and_the_entry(repo, trained):
    _, model = trained
    entry = entries_of(repo)["criteo_rank_cached"]
    assert entry.variant_of == "criteo_rank" and entry.reference["ranker"] == "criteo_ranker"
    table = np.load(latest_version_dir(repo, "criteo_features_cached") / "table.npy", mmap_mode="r")
    assert np.array_equal(table, model.sparse_arch.tables.weight.detach().numpy())
    verify_manifest(repo)                      # the table is an artifact like any other
    meta = json.loads((repo / "recdeploy.json").read_text())
    assert meta["cached_tables"] == {"cache_rows": CAPACITY, "table_rows": len(table), "dim": 4}
    with pytest.raises(ScenarioError, match="export it again instead of swapping one model"):
        scenario_named("criteo").swappable_model(entry)


def test_cached_lookups_score_as_the_full_ranker(repo, trained):
    """Feature step through the cache -> dense-only ONNX == the uncached ensemble in-process."""
    data, model = trained
    scenario = scenario_named("criteo")
    entry = entries_of(repo)["criteo_rank_cached"]
    features = served_features(repo)
    assert features.table.capacity == CAPACITY
    ranker = cpu_session(latest_version_dir(repo, "criteo_ranker_dense") / "model.onnx")
    full = InProcessCriteo(repo)
    for seed in range(3):                      # a cold cache, then warm: hits and evictions
        requests = scenario.perf_rows(repo, entry, k=5, n=32, seed=seed)
        got = features.answer(requests.get)
        x, sparse, valid = features_module.transform(requests["DENSE"], requests["CATEGORICAL"],
                                                     requests["CANDIDATES"], full.vocab)
        offsets = model.sparse_arch.offsets.numpy()
        assert np.array_equal(got["EMBEDDINGS"], features.table.table[sparse + offsets])
        assert np.array_equal(got["DENSE_X"], x) and np.array_equal(got["VALID"], valid)
        scores = ranker.run(["SCORES"], {"DENSE_X": got["DENSE_X"], "EMBEDDINGS": got["EMBEDDINGS"]})[0]
        want = full.session.run(["SCORES"], {"DENSE_X": x, "SPARSE": sparse})[0]
        np.testing.assert_allclose(scores, want, atol=1e-5)
    assert 0 < features.table.hit_rate < 1 and features.table.resident <= CAPACITY


def test_bad_ids_are_a_bad_request_through_the_cache(repo):
    features = served_features(repo)
    request = {"DENSE": np.zeros((1, 2, 13), np.float32), "CATEGORICAL": np.full((1, 2, 26), -7, np.int64),
               "CANDIDATES": np.array([[1, 2]])}
    with pytest.raises(features_module.BadRequest, match="32-bit"):
        features.answer(request.get)
    request["CATEGORICAL"] = np.zeros((1, 2, 25), np.int64)
    with pytest.raises(features_module.BadRequest, match=r"CATEGORICAL must be \[B, N, 26\]"):
        features.answer(request.get)


def test_dense_ranker_is_the_model_given_its_rows(trained):
    _, model = trained
    table, offsets = fp32_table(model)
    dense, sparse = torch.rand(2, 3, 13), torch.randint(0, 3, (2, 3, 26))
    rows = torch.from_numpy(table[sparse.numpy() + offsets])
    with torch.no_grad():
        assert torch.equal(DenseRanker(model)(dense, rows), model(dense, sparse))


def test_cache_rows_parameter_must_be_a_number():
    config = json.dumps({"parameters": {"cache_rows": {"string_value": "lots"}}})
    with pytest.raises(ValueError, match="cache_rows must be a whole number of rows, got 'lots'"):
        features_module.cache_rows(config)
    assert features_module.cache_rows(json.dumps({"name": "criteo_features"})) == 0


def test_compressed_tables_are_refused(trained):
    _, model = trained
    int8 = with_tables(model, RowwiseTable.quantize(model.sparse_arch.tables.weight, 8))
    with pytest.raises(ExportError, match="cached tables serve the FP32 table; this model's tables are RowwiseTable"):
        fp32_table(int8)


def test_a_repository_without_criteo_is_refused(tmp_path, trained):
    with pytest.raises(ExportError, match="has no exported criteo scenario: export the full run first"):
        add_cached_tables(trained[1], tmp_path, 10)


def test_other_scenarios_serve_no_cached_tables(tmp_path):
    with pytest.raises(ScenarioError, match="scenario 'ranking' serves no cached tables"):
        scenario_named("ranking").add_cached_tables(tmp_path, None, 10)
    with pytest.raises(ScenarioError, match=r"--cached-tables: rows the cache holds \(0 = no cached entry\), got -1"):
        run_export(tmp_path / "run", tmp_path / "repo", cached_tables=-1)
