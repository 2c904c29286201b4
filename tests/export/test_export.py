import json

import numpy as np
import pytest
import torch

from recdeploy.export.repository import ManifestError, verify_manifest, write_manifest
from recdeploy.export.scenarios.retrieval import InProcessRecommender
from recdeploy.export.triton_config import parse_config_text
from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.onnx_io import OnnxParityError, check_parity, export_onnx


def test_repository_layout_and_configs_parse(repository):
    names = sorted(p.name for p in repository.iterdir() if p.is_dir())
    assert names == ["feature_lookup", "fused_retrieval", "fused_retrieval_aoti", "fused_retrieval_libtorch",
                     "recommend", "recommend_fused", "recommend_fused_aoti", "recommend_fused_libtorch",
                     "scorer", "topk"]
    for name in names:
        config = parse_config_text((repository / name / "config.pbtxt").read_text())
        assert config.name == name
    assert (repository / "scorer" / "1" / "model.onnx").stat().st_size > 1682 * 32 * 4
    assert (repository / "recommend" / "1").is_dir()
    meta = json.loads((repository / "recdeploy.json").read_text())
    assert meta["dataset"] == "ml-100k" and meta["n_items"] == 1682
    verify_manifest(repository)


def test_inprocess_pipeline_equals_pytorch_ranking(repository, trained_run, ml100k):
    run, _ = trained_run
    model = load_checkpoint(run).model
    rec = InProcessRecommender(repository)
    users = ml100k.user_ids[:20]
    ids, _ = rec.recommend(users, k=10)
    with torch.no_grad():
        scores = model.score_all(torch.arange(20)).numpy()
    for row in range(20):
        seen = ml100k.items[ml100k.users == row]
        scores[row, seen] = -np.inf
        expected = ml100k.item_ids[np.argsort(-scores[row], kind="stable")[:10]]
        assert ids[row].tolist() == expected.tolist()


def test_unknown_user_gets_most_popular(repository, ml100k):
    ids, scores = InProcessRecommender(repository).recommend(np.array([10 ** 9]), k=5)
    counts = np.bincount(ml100k.items, minlength=ml100k.n_items)
    assert ids[0].tolist() == ml100k.item_ids[np.argsort(-counts, kind="stable")[:5]].tolist()
    assert scores[0, 0] == counts.max() == 583  # Star Wars


def test_parity_error_reports_measured_difference(tmp_path):
    model = torch.nn.Linear(4, 3).eval()
    x = {"X": np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)}
    path = export_onnx(model, x, ["Y"], tmp_path / "m.onnx")
    assert check_parity(model, path, x, ["Y"]).max_abs_diff["Y"] < 1e-5
    with torch.no_grad():
        model.bias += 0.5  # the file no longer matches the module
    with pytest.raises(OnnxParityError, match=r"'Y' differs from PyTorch by 0.5 \(max \|diff\|\)"):
        check_parity(model, path, x, ["Y"])


def test_manifest_names_corrupted_file(tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"abc")
    write_manifest(tmp_path)
    verify_manifest(tmp_path)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"abd")
    with pytest.raises(ManifestError, match=r"m/1/model.onnx \(sha256 differs\)"):
        verify_manifest(tmp_path)
