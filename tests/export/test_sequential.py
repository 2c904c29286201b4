"""The sequential export: specs, ONNX parity (short/long/empty), history_lookup, in-process."""
import json

import numpy as np
import pytest
import torch

from recdeploy.export.repository import verify_manifest
from recdeploy.export.scenarios.sequential import (
    SequentialExportError,
    SequentialInProcess,
    check_scorer,
    export_sequential,
    parity_cases,
    recommend_next_spec,
    sequential_pipeline,
)
from recdeploy.export.triton_config import EnsembleWiringError, check_ensemble, parse_config_text
from recdeploy.train.models import build_model
from recdeploy.train.onnx_io import OnnxParityError
from recdeploy.train.tasks.sequential import history_tokens, sequential_dataset, user_sequences

MAX_LEN = 20


@pytest.fixture(scope="module")
def filtered(ml100k):
    return sequential_dataset(ml100k)


@pytest.fixture(scope="module")
def model(filtered):
    torch.manual_seed(0)
    # an output table of its own (--output-embedding separate); the shared one is checked below
    return build_model("sasrec", n_items=filtered.n_items, dim=16, max_len=MAX_LEN, layers=1,
                       output_embedding="separate").eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model, ml100k):
    repo = tmp_path_factory.mktemp("sequential_repository")
    return repo, export_sequential(model, ml100k, repo, {"dataset_fingerprint": ml100k.fingerprint()})


def test_pipeline_wiring_and_a_miswired_ensemble_is_refused():
    pipeline = sequential_pipeline(n_items=1016, max_len=MAX_LEN)
    assert [s.model_name for s in pipeline.ensemble.steps] == ["history_lookup", "sasrec_scorer", "topk"]
    models = {m.name: m for m in pipeline.models if m.name != "history_lookup"}
    with pytest.raises(EnsembleWiringError, match="history_lookup\\): no such model"):
        check_ensemble(recommend_next_spec(), models)


def test_repository_layout_configs_and_manifest(exported, filtered):
    repo, _ = exported
    names = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert names == ["history_lookup", "recommend_next", "sasrec_scorer", "topk"]
    for name in names:
        assert parse_config_text((repo / name / "config.pbtxt").read_text()).name == name
    scorer = parse_config_text((repo / "sasrec_scorer" / "config.pbtxt").read_text())
    assert list(scorer.input[0].dims) == [-1] and list(scorer.output[0].dims) == [1016]
    meta = json.loads((repo / "recdeploy.json").read_text())
    assert meta["scenario"] == "sequential" and meta["n_items"] == filtered.n_items == 1016
    verify_manifest(repo)


def test_onnx_parity_on_short_long_and_empty_histories(exported):
    _, report = exported
    diffs = report.max_abs_diff()
    assert set(diffs) == {"typical", "short", "long", "empty", "empty_width1"}
    assert max(diffs.values()) < 1e-5
    assert report.width_invariance < 1e-6
    assert report.parity["long"].n_rows == 32


def test_shared_output_embedding_exports_with_parity(ml100k, filtered, tmp_path):
    torch.manual_seed(1)
    shared = build_model("sasrec", n_items=filtered.n_items, dim=8, max_len=MAX_LEN, layers=1).eval()
    assert shared.output_items is None
    report = export_sequential(shared, ml100k, tmp_path / "repo", {"dataset_fingerprint": ml100k.fingerprint()})
    assert max(report.max_abs_diff().values()) < 1e-5


def test_parity_cases_really_are_short_long_and_empty(filtered):
    cases = parity_cases(filtered, MAX_LEN)
    assert cases["short"].shape[1] == 5 and (cases["short"] > 0).sum(axis=1).max() <= 5
    assert cases["long"].shape[1] > MAX_LEN and (cases["long"] > 0).sum(axis=1).min() > MAX_LEN
    assert not cases["empty"].any() and cases["empty_width1"].shape == (4, 1)


def test_parity_error_carries_the_measured_difference(exported, model, filtered, tmp_path):
    repo, _ = exported
    other = build_model("sasrec", n_items=filtered.n_items, dim=16, max_len=MAX_LEN, layers=1).eval()
    with pytest.raises(OnnxParityError, match="differs from PyTorch by"):
        check_scorer(other, repo / "sasrec_scorer" / "1" / "model.onnx", parity_cases(filtered, MAX_LEN))


def test_export_refuses_a_model_for_another_catalogue(ml100k, tmp_path):
    wrong = build_model("sasrec", n_items=1682, dim=8, max_len=4, layers=1)
    with pytest.raises(SequentialExportError,
                       match="model scores 1682 items but the filtered ml-100k catalogue has 1016"):
        export_sequential(wrong, ml100k, tmp_path)


def test_history_lookup_returns_the_last_max_len_items_in_time_order(exported, filtered):
    repo, _ = exported
    rec = SequentialInProcess(repo)
    sequences = user_sequences(filtered)
    users = filtered.user_ids[[0, 5]]
    history, seen, known = rec.lookup.lookup_histories(np.r_[users, 10 ** 9], rec.table)
    expected = history_tokens([sequences[0], sequences[5]], MAX_LEN)
    assert history[:2].tolist() == expected.tolist()
    assert history[2].tolist() == [0] * MAX_LEN and known.ravel().tolist() == [True, True, False]
    assert set(sequences[0].tolist()) <= set(seen[0].tolist()) and (seen[2] == -1).all()


def test_history_lookup_rejects_float_ids(exported):
    rec = SequentialInProcess(exported[0])
    with pytest.raises(ValueError, match="USER_ID must be an integer tensor, got float64"):
        rec.lookup.lookup_histories(np.array([1.5]), rec.table)


def test_inprocess_equals_pytorch_ranking_with_seen_items_removed(exported, model, filtered, ml100k):
    rec = SequentialInProcess(exported[0])
    rows = np.arange(10)
    ids, _ = rec.recommend(filtered.user_ids[rows], k=10)
    tokens = history_tokens([user_sequences(filtered)[r] for r in rows], MAX_LEN)
    with torch.no_grad():
        scores = model(torch.from_numpy(tokens)).numpy()
    for row in rows:
        raw_user = int(np.searchsorted(ml100k.user_ids, filtered.user_ids[row]))
        rated = ml100k.item_ids[ml100k.items[ml100k.users == raw_user]]
        scores[row, np.isin(filtered.item_ids, rated)] = -np.inf
        expected = filtered.item_ids[np.argsort(-scores[row], kind="stable")[:10]]
        assert ids[row].tolist() == expected.tolist()


def test_unknown_user_gets_the_most_popular_items(exported, filtered):
    ids, scores = SequentialInProcess(exported[0]).recommend(np.array([10 ** 9]), k=5)
    counts = np.bincount(filtered.items, minlength=filtered.n_items)
    assert ids[0].tolist() == filtered.item_ids[np.argsort(-counts, kind="stable")[:5]].tolist()
    assert scores[0, 0] == counts.max()
