"""recdeploy_triton_core, the numpy core of every python-backend model, tested directly: K
parsing, id validation, top-K, artifact loading, and the execute adapter's error codes
(through a fake ``triton_python_backend_utils``; the real server is in tests/reliability)."""
import ast
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from recdeploy.export.triton_python import (
    CACHE,
    CORE,
    SOURCES,
    STORE,
    load_core,
    load_python_model,
    python_model_files,
)

core = load_core()
INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"


# ---------------------------------------------------------------- a fake pb_utils

class FakeTritonError:
    INVALID_ARG, INTERNAL = INVALID_ARG, INTERNAL

    def __init__(self, message, code=INTERNAL):
        self._message, self._code = message, code

    def message(self):
        return self._message

    def code(self):
        return self._code


class FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


@pytest.fixture
def pb(monkeypatch):
    fake = types.SimpleNamespace(
        Tensor=FakeTensor, InferenceResponse=FakeResponse, TritonError=FakeTritonError,
        get_input_tensor_by_name=lambda request, name: (
            FakeTensor(name, request[name]) if name in request else None))
    monkeypatch.setattr(core, "pb_utils", fake)
    return fake


# ---------------------------------------------------------------- packaging

def test_every_model_ships_with_the_core_and_the_core_is_no_model():
    assert {CORE.stem, STORE.stem, CACHE.stem}.isdisjoint(SOURCES) and set(SOURCES) >= {
        "topk", "retrieve_topn", "rank_topk", "feature_lookup", "history_lookup", "ranking_features"}
    for name in SOURCES:
        extra = {CACHE.name: CACHE} if name == "criteo_features" else {}   # cached tables
        assert python_model_files(name) == {"model.py": SOURCES[name], CORE.name: CORE, STORE.name: STORE,
                                            **extra}
    with pytest.raises(KeyError, match=r"no python model 'recdeploy_triton_core'; known: "):
        python_model_files(CORE.stem)


def _imports(nodes):
    imported = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    return imported


def test_the_models_import_only_numpy_the_core_and_the_backend():
    """What the stock NGC container's python backend offers: nothing of recdeploy, no torch,
    no redis-py (the store speaks RESP over a socket: the 2.51 stub cannot import ssl)."""
    allowed = {"json", "os", "socket", "sys", "time", "urllib", "numpy", CORE.stem, STORE.stem,
               CACHE.stem, "triton_python_backend_utils"}
    # the one documented exception: the ANN step searches a FAISS index (the stock container
    # needs `pip install faiss-cpu` for the recommend_ann_* entries, docs/ann.md)
    extra = {"ann_search": {"faiss"}}
    for path in [*SOURCES.values(), CORE, STORE, CACHE]:
        imported = _imports(ast.walk(ast.parse(path.read_text())))
        permitted = allowed | extra.get(path.stem, set())
        assert imported <= permitted, f"{path.name} imports {sorted(imported - permitted)}"


def test_loaded_models_share_the_core_and_keep_their_names():
    modules = {name: load_python_model(name) for name in SOURCES}
    assert modules["topk"].BadRequest is modules["rank_topk"].BadRequest is core.BadRequest
    assert modules["topk"].top_k is core.top_k and modules["rank_topk"].parse_k is core.parse_k
    assert modules["feature_lookup"].load_npy is modules["topk"].load_npy is core.load_npy
    for name, attributes in {"feature_lookup": ("UserTable", "lookup_users"),
                             "history_lookup": ("HistoryTable", "lookup_histories"),
                             "rank_topk": ("rank_top_k",),
                             "ranking_features": ("FeatureStore", "candidate_features",
                                                  "first_occurrence", "TABLES"),
                             "retrieve_topn": ("top_n_candidates", "n_candidates")}.items():
        assert all(hasattr(modules[name], a) for a in attributes), name


def test_a_version_folder_imports_like_the_stub_does(tmp_path):
    """The stub appends <model>/<version> and <model> to sys.path and imports '<version>.model'."""
    version = tmp_path / "topk" / "1"
    version.mkdir(parents=True)
    for filename, source in python_model_files("topk").items():
        shutil.copyfile(source, version / filename)
    code = (f"import importlib, sys; sys.path += [{str(version)!r}, {str(version.parent)!r}]; "
            "m = importlib.import_module('1.model'); import recdeploy_triton_core as c; "
            "print(m.top_k is c.top_k, c.__file__)")
    # -I: no PYTHONPATH, no current folder, so recdeploy itself cannot be imported
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", str(version / CORE.name)]


# ---------------------------------------------------------------- parse_k, ids, arrays

@pytest.mark.parametrize("k, limit, what, message", [
    ([0], 1682, None, "K must be between 1 and the catalogue size 1682, got 0"),
    ([[1683]], 1682, None, "K must be between 1 and the catalogue size 1682, got 1683"),
    ([[-3]], 5, None, "got -3"),
    ([[41]], 40, "the number of candidates", "K must be between 1 and the number of candidates 40, got 41"),
    ([[3], [4]], 5, None, r"K must be the same for every row of a request, got \[3, 4\]"),
    (np.array([2.0], np.float32), 5, None, "K must be one integer per row, got float32"),
    (np.array([True]), 5, None, "K must be an integer tensor"),
    (np.zeros((0, 1), np.int32), 5, None, "K is empty; send one positive integer per row"),
])
def test_bad_k_is_a_bad_request_saying_what_is_valid(k, limit, what, message):
    args = (np.asarray(k, np.int32) if isinstance(k, list) else k, limit) + ((what,) if what else ())
    with pytest.raises(core.BadRequest, match=message):
        core.parse_k(*args)


def test_parse_k_takes_one_k_per_request():
    assert core.parse_k(np.full((3, 1), 7, np.int32), 7) == 7
    assert core.parse_k(np.array([[1]], np.uint8), 1) == 1


@pytest.mark.parametrize("ids, message", [
    (np.ones((2, 2), np.int64), r"USER_ID must be \[batch, 1\], got \[2, 2\]"),
    (np.ones((1, 1, 1), np.int64), r"USER_ID must be \[batch, 1\], got \[1, 1, 1\]"),
    (np.array([[1.0]]), "USER_ID must be an integer tensor, got float64"),
])
def test_user_ids_that_are_not_one_integer_per_row_are_bad_requests(ids, message):
    with pytest.raises(core.BadRequest, match=message):
        core.user_id_column(ids)


def test_user_id_column_flattens_to_int64():
    got = core.user_id_column(np.array([[3], [-1]], np.int32))
    assert got.dtype == np.int64 and got.tolist() == [3, -1]


def test_load_npy_names_the_file(tmp_path):
    np.save(tmp_path / "good.npy", np.arange(3))
    assert core.load_npy(str(tmp_path), "good").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"cannot load \S*missing\.npy: FileNotFoundError"):
        core.load_npy(str(tmp_path), "missing")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"cannot load \S*pickled\.npy: ValueError"):
        core.load_npy(str(tmp_path), "pickled")


# ---------------------------------------------------------------- top_k

ITEM_IDS = np.array([100, 101, 102, 103, 104])


def test_top_k_masks_seen_uses_popularity_and_orders_ties_by_index():
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.7], [0, 0, 0, 0, 0]], np.float32)
    popularity = np.array([1, 3, 3, 0, 2], np.float32)
    ids, best = core.top_k(scores, np.array([[1, -1], [2, -1]]), np.array([[True], [False]]), 3,
                           popularity, ITEM_IDS)
    assert ids.tolist() == [[102, 104, 100], [101, 104, 100]]
    assert best.tolist() == [[pytest.approx(0.9), pytest.approx(0.7), 0.5], [3, 2, 1]]


def test_top_k_of_the_whole_catalogue_pads_seen_items_with_minus_one():
    ids, best = core.top_k(np.ones((1, 5), np.float32), np.array([[4, 0]]), np.array([[True]]), 5,
                           np.zeros(5, np.float32), ITEM_IDS)
    assert ids.tolist() == [[101, 102, 103, -1, -1]] and np.isneginf(best[0, 3:]).all()


@pytest.mark.parametrize("scores, seen, known, message", [
    (np.zeros((1, 4)), np.zeros((1, 0)), np.ones((1, 1), bool), r"SCORES must be \[batch, 5\], got \[1, 4\]"),
    (np.zeros((2, 5)), np.array([[5], [-1]]), np.ones((2, 1), bool),
     r"SEEN_ITEMS holds index 5, beyond the catalogue \(5 items\)"),
    (np.zeros((2, 5)), np.zeros((2, 0)), np.ones((1, 1), bool), "IS_KNOWN has 1 rows, SCORES 2"),
])
def test_top_k_inputs_from_earlier_steps_that_disagree_are_a_pipeline_fault(scores, seen, known, message):
    with pytest.raises(core.PipelineFault, match=message):
        core.top_k(scores, seen, known, 2, np.zeros(5, np.float32), ITEM_IDS)


def test_retrieve_topn_is_top_k_without_scores():
    topn = load_python_model("retrieve_topn")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(4, 5)).astype(np.float32)   # many ties
    seen = np.array([[0, 1, 2, 3], [4, -1, -1, -1], [-1, -1, -1, -1], [0, 4, -1, -1]])
    known = np.array([[True], [True], [False], [True]])
    popularity = rng.random(5).astype(np.float32)
    for n in (1, 3, 5, 9):
        want, _ = core.top_k(scores, seen, known, min(n, 5), popularity, ITEM_IDS)
        got = topn.top_n_candidates(scores, seen, known, n, popularity, ITEM_IDS)
        assert got.tolist() == want.tolist() and got.shape == (4, min(n, 5))
    assert topn.top_n_candidates(scores, seen, known, 2, popularity, ITEM_IDS)[0].tolist() == [104, -1]


# ---------------------------------------------------------------- the execute adapter

def test_execute_answers_each_request_with_its_own_code(pb):
    def handler(get):
        k = core.parse_k(get("K"), 5)
        if k == 4:
            raise IndexError("a bug")
        return {"OUT": np.broadcast_to(np.arange(k), (2, k))}  # not contiguous: the adapter copies

    requests = [{"K": np.array([[2]], np.int32)}, {"K": np.array([[0]], np.int32)},
                {"K": np.array([[4]], np.int32)}, {}, {"K": np.array([[3]], np.int32)}]
    responses = core.execute_requests("m", requests, handler)
    assert len(responses) == 5
    assert responses[0].error is None and responses[0].outputs["OUT"].tolist() == [[0, 1], [0, 1]]
    assert responses[0].outputs["OUT"].flags.c_contiguous
    assert (responses[1].error.code(), responses[1].error.message()) == (
        INVALID_ARG, "m: K must be between 1 and the catalogue size 5, got 0")
    assert (responses[2].error.code(), responses[2].error.message()) == (INTERNAL, "m: IndexError: a bug")
    assert (responses[3].error.code(), responses[3].error.message()) == (INVALID_ARG, "m: input K is missing")
    assert responses[4].error is None and responses[4].outputs["OUT"].shape == (2, 3)
    assert all(r.outputs == {} for r in responses[1:4])


def topk_model(version, item_ids, popularity):
    version.mkdir()
    np.save(version / "item_ids.npy", np.asarray(item_ids))
    np.save(version / "popularity.npy", np.asarray(popularity, np.float32))
    model = load_python_model("topk").TritonPythonModel()
    model.initialize({"model_repository": str(version.parent), "model_version": version.name})
    return model


def test_topk_model_bad_k_is_invalid_arg_and_a_broken_pipeline_internal(pb, tmp_path):
    model = topk_model(tmp_path / "1", ITEM_IDS, np.arange(5))
    request = {"SCORES": np.zeros((1, 5), np.float32), "SEEN_ITEMS": np.array([[1]]),
               "IS_KNOWN": np.array([[True]]), "K": np.array([[2]], np.int32)}
    bad_k = {**request, "K": np.array([[6]], np.int32)}
    broken = {**request, "SEEN_ITEMS": np.array([[9]])}
    good, client, server = model.execute([request, bad_k, broken])
    assert good.error is None and good.outputs["ITEM_IDS"].tolist() == [[100, 102]]
    assert client.error.code() == INVALID_ARG
    assert client.error.message() == "topk: K must be between 1 and the catalogue size 5, got 6"
    assert server.error.code() == INTERNAL
    assert server.error.message().startswith("topk: PipelineFault: SEEN_ITEMS holds index 9")


def test_history_lookup_validates_user_ids_and_names_a_broken_array(pb, tmp_path):
    lookup = load_python_model("history_lookup")
    version = tmp_path / "1"
    version.mkdir()
    arrays = {"user_ids": [10, 20], "history_indptr": [0, 2, 3], "history_items": [4, 1, 2],
              "seen_indptr": [0, 2, 3], "seen_items": [1, 4, 2], "max_len": 3}
    for name, values in arrays.items():
        np.save(version / f"{name}.npy", np.array(values, np.int64))
    model = lookup.TritonPythonModel()
    model.initialize({"model_repository": str(tmp_path), "model_version": "1"})
    good, wrong_shape, wrong_dtype = model.execute([
        {"USER_ID": np.array([[20], [99]])}, {"USER_ID": np.ones((1, 2), np.int64)},
        {"USER_ID": np.array([[1.0]], np.float32)}])
    assert good.error is None and good.outputs["HISTORY"].tolist() == [[0, 0, 3], [0, 0, 0]]
    assert good.outputs["IS_KNOWN"].ravel().tolist() == [True, False]
    assert wrong_shape.error.code() == INVALID_ARG
    assert wrong_shape.error.message() == "history_lookup: USER_ID must be [batch, 1], got [1, 2]"
    assert wrong_dtype.error.message() == "history_lookup: USER_ID must be an integer tensor, got float32"
    (version / "max_len.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(ValueError, match=r"cannot load \S*1/max_len\.npy"):
        model.initialize({"model_repository": str(tmp_path), "model_version": "1"})


def test_ranking_features_refuses_candidates_that_do_not_match_the_users():
    features = load_python_model("ranking_features")
    store = features.FeatureStore(user_ids=[10], item_ids=[7], user_sparse=[[0] * 5, [1] * 5],
                                  user_dense=[[0.0], [1.0]], item_sparse=[[0], [1]],
                                  item_genres=[[0], [1]], item_dense=[[0, 0], [1, 1]])
    with pytest.raises(core.BadRequest, match=r"CANDIDATES must be \[batch, N >= 1\] with one row per "
                                              r"USER_ID row \(2\), got \[1, 3\]"):
        features.candidate_features(np.array([[10], [11]]), np.array([[7, 7, 7]]), store)
    with pytest.raises(core.BadRequest, match=r"got \[1, 0\]"):
        features.candidate_features(np.array([[10]]), np.zeros((1, 0), np.int64), store)
    with pytest.raises(core.BadRequest, match=r"USER_ID must be \[batch, 1\], got \[1, 2\]"):
        features.candidate_features(np.array([[10, 11]]), np.array([[7]]), store)
