"""The ANN retrieval step: index settings, the seen filter with over-fetch, the exact fallback,
recall against exact search (synthetic and the real ML-100k model) and the ensemble wiring."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from recdeploy.export.ann import write_ann_model, write_ann_models
from recdeploy.export.ann_index import (
    AnnConfig,
    AnnConfigError,
    build_index,
    exact_top,
    fold_bias,
    index_bytes,
    parse_ann,
    recall_at_k,
    seen_rows,
)
from recdeploy.export.retrieval_specs import ann_ensemble_spec
from recdeploy.export.scenarios import entries_of, scenario_named
from recdeploy.export.scenarios.base import add_entries
from recdeploy.export.scenarios.retrieval import build_feature_arrays, write_ann_entries
from recdeploy.export.triton_python import load_python_model
from recdeploy.train.checkpoint import load_checkpoint

ann = load_python_model("ann_search")


def test_parse_ann_reads_presets_and_settings():
    hnsw, ivfpq = parse_ann("hnsw:ef_search=128,ivfpq:nprobe=8:pq_m=32:overfetch=0.5:rerank=int8")
    assert (hnsw.kind, hnsw.ef_search, ivfpq.nprobe, ivfpq.pq_m, ivfpq.overfetch) == ("hnsw", 128, 8, 32, 0.5)
    assert (hnsw.rerank, ivfpq.rerank, ivfpq.settings()["rerank"]) == ("fp32", "int8", "int8")


@pytest.mark.parametrize("text, message", [
    ("flat", "unknown ANN index 'flat'; valid: hnsw, ivfpq"),
    ("hnsw:efsearch=3", "not KEY=VALUE"),
    ("hnsw,hnsw:m=8", "twice"),
    ("ivfpq:pq_bits=5", "pq_bits must be 4, 6 or 8"),
    ("hnsw:k_factor=0.5", "k_factor >= 1"),
    ("hnsw:rerank=int4", "hnsw: rerank must be one of fp32, int8, got 'int4'"),
    ("ivfpq:rerank=", "not KEY=VALUE"),
    ("ivfpq:nprobe=many", "nprobe must be an integer, got 'many'"),
    ("ivfpq:k_factor=x", "k_factor must be a number, got 'x'"),
    ("ivfpq:label=np8,ivfpq:nprobe=4:label=np8", "twice"),
    ("hnsw:label=Ef-32", "label must be lower-case letters"),
])
def test_bad_ann_settings_say_what_is_valid(text, message):
    with pytest.raises(AnnConfigError, match=message):
        parse_ann(text)


def test_labels_name_two_settings_of_one_kind_and_share_its_build():
    plain, low, high, coarse = parse_ann("ivfpq,ivfpq:nprobe=4:label=np4,ivfpq:nprobe=64:rerank=int8:label=np64,"
                                         "ivfpq:pq_m=8:label=pq8")
    assert [c.key for c in (plain, low, high, coarse)] == ["ivfpq", "ivfpq_np4", "ivfpq_np64", "ivfpq_pq8"]
    assert plain.build_key() == low.build_key() == high.build_key() != coarse.build_key()


def test_settings_of_one_index_are_served_as_separate_models_over_one_build(tmp_path, monkeypatch):
    from recdeploy.export import ann as ann_export

    users, items, features = synthetic(n_items=2_000, n_users=64)
    builds = []
    real = ann_export.build_index
    monkeypatch.setattr(ann_export, "build_index", lambda *a, **kw: builds.append(a[1].key) or real(*a, **kw))
    written = write_ann_models(tmp_path, parse_ann("hnsw:ef_search=16:overfetch=1:label=ef16,"
                                                   "hnsw:ef_search=128:overfetch=1:label=ef128"),
                               users, items, features, check_users=64)
    assert builds == ["hnsw_ef16"]
    assert [w.ensemble.name for w in written] == ["recommend_ann_hnsw_ef16", "recommend_ann_hnsw_ef128"]
    low, high = (json.loads((tmp_path / f"ann_hnsw_{label}" / "1" / "ann.json").read_text())
                 for label in ("ef16", "ef128"))
    assert (low["ef_search"], high["ef_search"]) == (16, 128) and low["build_seconds"] == high["build_seconds"]
    assert high["recall_at_k"] >= low["recall_at_k"] and high["recall_at_k"] >= 0.95
    assert (tmp_path / "ann_hnsw_ef16" / "1" / "index.faiss").read_bytes() == \
        (tmp_path / "ann_hnsw_ef128" / "1" / "index.faiss").read_bytes()


def test_export_cli_refuses_a_bad_ann_flag_before_reading_the_run(tmp_path, capsys):
    from recdeploy.export.cli import main

    assert main(["--run", str(tmp_path / "nowhere"), "--ann", "hnsw,lsh"]) == 2
    assert "unknown ANN index 'lsh'; valid: hnsw, ivfpq" in capsys.readouterr().err


def test_fold_bias_makes_the_inner_product_the_biased_score():
    rng = np.random.default_rng(0)
    u, v, b = rng.normal(size=(3, 4)), rng.normal(size=(5, 4)), rng.normal(size=5)
    users, items = fold_bias(u, v, b)
    assert users.shape == (3, 5) and np.allclose(users @ items.T, u @ v.T + b, atol=1e-5)


def test_fetch_sizes_grow_with_the_seen_count_in_powers_of_two():
    assert ann.fetch_sizes(10, [0, 5, 100], 0.5, 1000).tolist() == [16, 16, 64]
    assert ann.fetch_sizes(10, [4000], 1.0, 1000).tolist() == [1000]


def test_rank_candidates_drops_seen_missing_and_repeated_candidates():
    catalogue = np.eye(6, dtype=np.float32) * np.arange(1, 7, dtype=np.float32)[:, None]
    users = np.ones((1, 6), np.float32)
    candidates = np.array([[5, 4, 4, -1, 3, 2]])     # item 4 twice, one missing
    best, scores, left = ann.rank_candidates(candidates, users, catalogue, np.array([[5, -1]]), 3)
    assert best.tolist() == [[4, 3, 2]] and scores.tolist() == [[5.0, 4.0, 3.0]] and left.tolist() == [3]


def test_seen_mask_is_each_rows_own_membership():
    rng = np.random.default_rng(5)
    candidates = rng.integers(0, 50, size=(16, 40))
    seen = np.where(rng.random((16, 12)) < 0.3, -1, rng.integers(0, 50, size=(16, 12)))
    want = np.array([[c in set(row[row >= 0]) for c in cands] for cands, row in zip(candidates, seen)])
    assert np.array_equal(ann.seen_mask(candidates, seen), want) and want.any() and not want.all()
    assert not ann.seen_mask(candidates, np.full((16, 3), -1)).any()


def synthetic(n_items=4000, n_users=64, dim=16, seen=30, seed=0):
    """A catalogue with structure (a decaying spectrum, as trained towers have) and users
    whose seen items are their own best-scored ones: the over-fetch's hard case."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.arange(1, dim + 1) ** 0.7
    users, items = fold_bias(rng.normal(size=(n_users, dim)) * scale, rng.normal(size=(n_items, dim)) * scale,
                             rng.normal(size=n_items) * 0.1)
    best = np.argsort(-(users @ items.T), axis=1)[:, :seen]
    return users, items, SimpleNamespace(
        item_ids=np.arange(n_items, dtype=np.int64) + 1000, popularity=rng.random(n_items).astype(np.float32),
        seen_indptr=np.arange(0, n_users * seen + 1, seen, dtype=np.int64),
        seen_items=np.sort(best, axis=1).reshape(-1).astype(np.int64))


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_written_index_finds_the_exact_unseen_top_10(tmp_path, kind):
    users, items, features = synthetic()
    config = parse_ann({"hnsw": "hnsw:ef_search=128", "ivfpq": "ivfpq:nprobe=64"}[kind])[0]
    written = write_ann_model(tmp_path, config, users, items, features, check_users=64)
    info = json.loads((tmp_path / f"ann_{kind}" / "1" / "ann.json").read_text())
    assert info == written.info
    # the seen items are each user's own top-30: the fewer fetched, the more rows fall back
    fallbacks = [t["fallback_rate"] for t in info["overfetch_trials"]]
    assert fallbacks == sorted(fallbacks, reverse=True) and info["fallback_rate"] <= 0.02
    if kind == "hnsw":   # IVF-PQ asks k_factor (4) times the fetch size of its index anyway
        assert fallbacks[0] > 0.5
    assert info["recall_at_k"] >= 0.95
    searcher = ann.AnnSearcher.load(str(tmp_path / f"ann_{kind}" / "1"))
    rows = np.arange(len(users))
    seen = seen_rows(features, rows)
    ids, scores = searcher.top_k(rows, seen, np.ones((len(rows), 1), bool), 10)
    assert recall_at_k(ids, exact_top(users, items, seen, 10, features.item_ids)) >= 0.95
    assert not any(np.isin(ids[row] - 1000, seen[row]).any() for row in rows)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_too_few_survivors_fall_back_to_the_exact_answer(tmp_path):
    users, items, features = synthetic(n_items=500, n_users=8)
    write_ann_model(tmp_path, AnnConfig("hnsw", overfetch=0.0), users, items, features, check_users=8)
    searcher = ann.AnnSearcher.load(str(tmp_path / "ann_hnsw" / "1"))
    rows = np.arange(8)
    seen, known = seen_rows(features, rows), np.array([[True]] * 7 + [[False]])
    ids, scores = searcher.top_k(rows, seen, known, 10)
    topk = load_python_model("topk")
    want_ids, want_scores = topk.top_k(users[rows] @ items.T, seen, known, 10, features.popularity,
                                       features.item_ids)
    assert searcher.fallbacks == 7 and np.array_equal(ids, want_ids)   # the 8th row: cold start
    assert np.allclose(scores, want_scores, atol=1e-5)


def test_exact_top_in_chunks_of_users_equals_one_pass():
    users, items, features = synthetic(n_items=3_000, n_users=50)
    seen = seen_rows(features, np.arange(50))
    whole = exact_top(users, items, seen, 10, features.item_ids)
    assert np.array_equal(exact_top(users, items, seen, 10, features.item_ids, chunk_bytes=4 * 3_000 * 7), whole)


def test_pq_index_is_smaller_than_the_flat_catalogue():
    _, items, _ = synthetic(n_items=20_000)
    pq = build_index(items, AnnConfig("ivfpq", pq_m=4))
    assert index_bytes(pq) < items.nbytes / 2


def test_ann_ensemble_is_lookup_then_ann():
    spec = ann_ensemble_spec("hnsw")
    assert spec.name == "recommend_ann_hnsw" and [s.model_name for s in spec.steps] == ["feature_lookup", "ann_hnsw"]


@pytest.fixture(scope="module")
def ann_repository(tmp_path_factory, repository, trained_run, ml100k):
    """The session's exported ML-100k repository plus both ANN entries."""
    from recdeploy.export.fused import dot_product_parts

    repo = tmp_path_factory.mktemp("ann_repo") / "repo"
    shutil.copytree(repository, repo)
    scorer = load_checkpoint(trained_run[0]).model.retrieval_scorer().eval()
    entries, notes = write_ann_entries(repo, dot_product_parts(scorer), build_feature_arrays(ml100k),
                                       parse_ann("hnsw,ivfpq"))
    add_entries(repo, entries)
    return repo


@pytest.mark.parametrize("entry", ["recommend_ann_hnsw", "recommend_ann_ivfpq"])
def test_ann_recall_against_exact_on_the_real_model(ann_repository, entry):
    scenario = scenario_named("retrieval")
    record = entries_of(ann_repository)[entry]
    assert record.variant_of == "recommend" and record.reference["kind"] == "ann"
    quality = scenario.quality(ann_repository, record, scenario.reference(ann_repository, record))
    assert quality["overlap@10"] >= 0.95
    info = json.loads((ann_repository / record.reference["model"] / "1" / "ann.json").read_text())
    assert info["recall_at_k"] >= 0.95 and info["fallback_rate"] <= 0.02


@pytest.mark.parametrize("setting", ["hnsw", "ivfpq"])
def test_int8_rerank_agrees_with_fp32_rerank_on_the_real_model(tmp_path, trained_run, ml100k, setting):
    from recdeploy.export.fused import dot_product_parts

    users, items, _ = dot_product_parts(load_checkpoint(trained_run[0]).model.retrieval_scorer().eval())
    searchers, answers = int8_and_fp32(tmp_path, users, items, build_feature_arrays(ml100k), setting)
    assert recall_at_k(answers["int8"][0], answers["fp32"][0]) >= 0.98
    assert searchers["fp32"].catalogue.nbytes / searchers["int8"].catalogue.nbytes >= 3.7   # 33 columns


# ------------------------------------------------------------------ the INT8 re-rank catalogue

def int8_and_fp32(tmp_path, users, items, features, setting="ivfpq:nprobe=64:overfetch=0.5"):
    """The same index settings written twice, FP32 and INT8 re-rank -> ({rerank: searcher},
    {rerank: answers of every user}). A fixed over-fetch, so both fetch alike."""
    kind = setting.split(":")[0]
    searchers = {}
    for rerank in ("fp32", "int8"):
        write_ann_model(tmp_path / rerank, parse_ann(f"{setting}:rerank={rerank}")[0], users, items, features,
                        check_users=16)
        searchers[rerank] = ann.AnnSearcher.load(str(tmp_path / rerank / f"ann_{kind}" / "1"))
    rows = np.arange(len(users))
    seen, known = seen_rows(features, rows), np.ones((len(rows), 1), bool)
    return searchers, {rerank: s.top_k(rows, seen, known, 10) for rerank, s in searchers.items()}


def test_int8_rerank_keeps_the_fp32_rerank_answers_in_a_quarter_of_the_bytes(tmp_path):
    users, items, features = synthetic(n_items=6000, n_users=64, dim=64)
    searchers, answers = int8_and_fp32(tmp_path, users, items, features)
    # a steep synthetic spectrum with each user's own top-30 seen: the hard case (0.94-0.97 over
    # seeds; the trained model's floor is the test below)
    assert recall_at_k(answers["int8"][0], answers["fp32"][0]) >= 0.93
    exact = exact_top(users, items, seen_rows(features, np.arange(len(users))), 10, features.item_ids)
    assert recall_at_k(answers["int8"][0], exact) >= recall_at_k(answers["fp32"][0], exact) - 0.05
    # the scores are the INT8 catalogue's: near the exact ones, not equal
    assert np.allclose(answers["int8"][1], answers["fp32"][1], atol=0.02 * np.abs(answers["fp32"][1]).max())
    fp32, int8 = searchers["fp32"].catalogue, searchers["int8"].catalogue
    assert isinstance(int8, ann.Int8Catalogue) and not hasattr(int8, "vectors")
    assert int8.codes.dtype == np.int8 and int8.nbytes == items.shape[0] * (items.shape[1] + 2)
    assert fp32.nbytes / int8.nbytes >= 3.8          # 65 columns: 260 bytes a row against 65 + 2
    folder = tmp_path / "int8" / "ann_ivfpq" / "1"
    info = json.loads((folder / "ann.json").read_text())
    assert info["rerank"] == "int8" and info["rerank_bytes"] == int8.nbytes and not (folder / "catalogue.npy").exists()


def test_int8_rerank_dequantizes_compress_rowwise_codes():
    from recdeploy.compress.rowwise import RowwiseTable, int8_rows

    torch = pytest.importorskip("torch")
    items = np.random.default_rng(0).normal(size=(300, 9)).astype(np.float32)
    codes, scale = int8_rows(items, block=128)     # block seams must not show
    catalogue = ann.Int8Catalogue(codes, scale)
    table = RowwiseTable.quantize(torch.from_numpy(items), bits=8)
    rows = np.array([[0, 299], [128, 5]])
    want = table.rows(torch.from_numpy(rows.reshape(-1))).numpy().reshape(2, 2, 9)
    assert np.array_equal(catalogue.rows(rows), want)
    assert np.abs(catalogue.rows(np.arange(300)) - items).max() <= np.abs(items).max() / 254 * 1.01
    users = np.random.default_rng(1).normal(size=(4, 9)).astype(np.float32)
    assert np.allclose(catalogue.scores(users), users @ table.dequantize().numpy().T, atol=1e-5)


def test_int8_fallback_scans_the_int8_catalogue(tmp_path):
    users, items, features = synthetic(n_items=500, n_users=8)
    write_ann_model(tmp_path, AnnConfig("hnsw", overfetch=0.0, rerank="int8"), users, items, features, check_users=8)
    searcher = ann.AnnSearcher.load(str(tmp_path / "ann_hnsw" / "1"))
    rows = np.arange(8)
    seen, known = seen_rows(features, rows), np.ones((8, 1), bool)
    ids, scores = searcher.top_k(rows, seen, known, 10)
    assert searcher.fallbacks == 8
    topk = load_python_model("topk")
    dequantized = searcher.catalogue.rows(np.arange(len(items)))
    want_ids, want_scores = topk.top_k(users[rows] @ dequantized.T, seen, known, 10, features.popularity,
                                       features.item_ids)
    assert np.array_equal(ids, want_ids) and np.allclose(scores, want_scores, atol=1e-5)
    assert recall_at_k(ids, exact_top(users, items, seen, 10, features.item_ids)) >= 0.9


def test_an_unknown_rerank_in_ann_json_is_a_clear_fault(tmp_path):
    with pytest.raises(ann.PipelineFault, match="unknown rerank 'int4'; valid: fp32, int8"):
        ann.load_catalogue(str(tmp_path), "int4")
    with pytest.raises(ValueError, match="are not int8"):
        ann.Int8Catalogue(np.zeros((3, 2), np.float32), np.ones(3))
