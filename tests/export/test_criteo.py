"""The criteo scenario without a server: its ensemble wiring, the served feature step equal to
training's transforms, the exported ranker (ONNX parity, external data past the protobuf
limit), the in-process pipeline, compressed variants and client mistakes."""
import numpy as np
import pytest
import torch

from recdeploy.compress.criteo_tables import MixedTable, with_tables
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.export.scenarios.base import entries_of
from recdeploy.export.scenarios.criteo import (
    InProcessCriteo,
    add_criteo_variant,
    export_criteo,
    export_ranker,
    features_module,
    pipeline_specs,
)
from recdeploy.train.config import TrainConfig
from recdeploy.train.criteo.prepare import SyntheticSource, prepare
from recdeploy.train.criteo.schema import dense_transform
from recdeploy.train.criteo.synthetic import SyntheticCriteo
from recdeploy.train.onnx_io import check_parity, onnx_files
from recdeploy.train.tasks import run_task

BadRequest = features_module.BadRequest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    source = SyntheticSource(SyntheticCriteo(rows=20_000, scale=0.002, chunk_rows=10_000))
    data = prepare(source, tmp_path_factory.mktemp("criteo") / "data", max_vocab=300, hash_rows=64,
                   progress=False)
    result = run_task(TrainConfig.for_model("dlrm", dataset="criteo", dim=4), data, progress=False)
    return data, result.model


@pytest.fixture(scope="module")
def repo(tmp_path_factory, trained):
    data, model = trained
    repo = tmp_path_factory.mktemp("repo")
    export_criteo(model, data, repo)
    return repo


def served_vocab(data):
    v = data.vocab
    return features_module.Vocab(v.keys, v.rows, v.offsets, v.sizes, v.hash_rows)


def test_ensemble_wiring():
    models, ensemble = pipeline_specs("int8")
    assert [m.name for m in models] == ["criteo_features", "criteo_ranker_int8", "rank_topk"]
    assert [t.name for t in ensemble.inputs] == ["DENSE", "CATEGORICAL", "CANDIDATES", "K"]


def test_served_features_equal_training_transforms(trained):
    data, _ = trained
    raw = SyntheticCriteo(rows=500, scale=0.002, seed=5, chunk_rows=500).chunk(0)   # unseen ids too
    x, sparse, valid = features_module.transform(raw.dense[None], raw.ids[None],
                                                 np.arange(500)[None], served_vocab(data))
    assert np.array_equal(sparse[0], data.vocab.lookup(raw.ids))
    assert np.array_equal(x[0], dense_transform(raw.dense))
    assert valid.all()
    assert (sparse[0] >= 2 + data.vocab.sizes).any()          # capped fields hash their rare ids


def test_candidate_validity():
    valid = features_module.candidate_valid(np.array([[5, -1, 5, 7]]))
    assert valid.tolist() == [[True, False, False, True]]


@pytest.mark.parametrize("change, match", [
    (lambda r: r.__setitem__("CATEGORICAL", r["CATEGORICAL"] - 5), "32-bit"),
    (lambda r: r["DENSE"].__setitem__((0, 0, 0), np.inf), "infinite"),
    (lambda r: r.__setitem__("DENSE", r["DENSE"][:, :, :12]), r"DENSE must be \[B, N, 13\]"),
    (lambda r: r.__setitem__("CANDIDATES", r["CANDIDATES"][:, :2]), "must match"),
])
def test_client_mistakes_are_bad_requests(trained, change, match):
    data, _ = trained
    request = {"DENSE": np.zeros((1, 3, 13), np.float32), "CATEGORICAL": np.full((1, 3, 26), -1),
               "CANDIDATES": np.arange(3)[None]}
    change(request)
    with pytest.raises(BadRequest, match=match):
        features_module.transform(request["DENSE"], request["CATEGORICAL"], request["CANDIDATES"],
                                  served_vocab(data))


def test_reference_ranks_by_the_models_scores(repo, trained):
    data, model = trained
    from recdeploy.export.scenarios import scenario_named
    scenario = scenario_named("criteo")
    entry = entries_of(repo)["criteo_rank"]
    (request,) = scenario.canary_requests(repo, entry, k=5)
    answer = InProcessCriteo(repo).rank(request)
    assert answer["ITEM_IDS"].shape == (6, 5)
    x, sparse, valid = features_module.transform(request["DENSE"], request["CATEGORICAL"],
                                                 request["CANDIDATES"], served_vocab(data))
    with torch.no_grad():
        scores = model(torch.from_numpy(x), torch.from_numpy(sparse)).numpy()
    scores[~valid] = -np.inf
    best = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    assert np.array_equal(answer["ITEM_IDS"], np.take_along_axis(request["CANDIDATES"], best, axis=1))
    np.testing.assert_allclose(answer["SCORES"], np.take_along_axis(scores, best, axis=1), atol=1e-4)


def test_external_data_export(tmp_path, trained):
    data, model = trained
    inputs = {"DENSE_X": np.random.rand(2, 3, 13).astype(np.float32),
              "SPARSE": np.zeros((2, 3, 26), np.int64)}
    path = export_ranker(model, inputs, tmp_path / "model.onnx", external_data=True)
    assert set(onnx_files(path)) == {"model.onnx", "model.onnx.data"}
    assert path.stat().st_size < 100_000 < path.with_name("model.onnx.data").stat().st_size
    check_parity(model, path, inputs, ["SCORES"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["int8", "mixed"])
def test_compressed_variant_served_beside_the_full_one(tmp_path, repo, trained, variant):
    data, model = trained
    weight = model.sparse_arch.tables.weight
    tables = (RowwiseTable.quantize(weight, 8) if variant == "int8"
              else MixedTable.build(weight, data.row_counts(), hot=0.1, prune_below=2))
    compressed = with_tables(model, tables)
    inputs = {"DENSE_X": np.random.rand(2, 3, 13).astype(np.float32),
              "SPARSE": np.random.randint(0, 3, (2, 3, 26)).astype(np.int64)}
    path = export_ranker(compressed, inputs, tmp_path / "model.onnx", constant_folding=False)
    added = add_criteo_variant(repo, path, variant)
    assert added == [f"criteo_ranker_{variant}", f"criteo_rank_{variant}"]
    entry = entries_of(repo)[f"criteo_rank_{variant}"]
    assert entry.variant_of == "criteo_rank"
    from recdeploy.export.scenarios import scenario_named
    scenario = scenario_named("criteo")
    requests = scenario.perf_rows(repo, entry, k=5, n=64)
    full = scenario.reference(repo, entries_of(repo)["criteo_rank"])(requests)
    ours = scenario.reference(repo, entry)(requests)
    top1 = np.mean(full["ITEM_IDS"][:, 0] == ours["ITEM_IDS"][:, 0])
    assert top1 > 0.8
