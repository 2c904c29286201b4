"""Export a trained retrieval checkpoint into a Triton repository with the recommend ensemble.

    recdeploy export --run runs/demo --repository model_repository

Writes: scorer (ONNX, parity-checked against PyTorch on real users), feature_lookup and topk
(numpy-only python models with their arrays), the ``recommend`` ensemble, and the manifest.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recdeploy.train.onnx_io import ParityReport, check_parity, export_onnx
from recdeploy.export.repository import npy_bytes, record_variant, write_manifest, write_model
from recdeploy.export.retrieval_specs import RetrievalPipeline, retrieval_pipeline
from recdeploy.export.triton_config import build_ensemble_config, build_model_config
from recdeploy.export.triton_python import python_model_files
from recdeploy.train.data import Dataset, item_popularity


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class FeatureArrays:
    """What the python models serve from: the user feature store and the item catalogue."""
    user_ids: np.ndarray      # int64 [U] sorted raw ids; row r is internal user r
    seen_indptr: np.ndarray   # int64 [U+1]
    seen_items: np.ndarray    # int64 [nnz] internal item indices
    item_ids: np.ndarray      # int64 [I]
    popularity: np.ndarray    # float32 [I] interaction counts: the cold-start ranking


def build_feature_arrays(ds: Dataset) -> FeatureArrays:
    """All of a user's known interactions are 'seen' when serving (not only the training rows)."""
    if np.any(np.diff(ds.user_ids) <= 0):
        raise ExportError("dataset user ids must be sorted and unique")
    order = np.lexsort((ds.items, ds.users))
    users, items = ds.users[order], ds.items[order]
    keep = np.r_[True, (users[1:] != users[:-1]) | (items[1:] != items[:-1])]
    users, items = users[keep], items[keep]
    indptr = np.searchsorted(users, np.arange(ds.n_users + 1)).astype(np.int64)
    return FeatureArrays(user_ids=ds.user_ids.astype(np.int64), seen_indptr=indptr,
                         seen_items=items.astype(np.int64), item_ids=ds.item_ids.astype(np.int64),
                         popularity=item_popularity(ds, np.arange(ds.n_interactions)))


def clear_repository(repo: Path) -> None:
    """Remove earlier models (stale variants would otherwise be served); keep loose files."""
    repo.mkdir(parents=True, exist_ok=True)
    for child in repo.iterdir():
        if child.is_dir():
            shutil.rmtree(child)


def write_python_models(repo: Path, pipeline: RetrievalPipeline, features: FeatureArrays) -> None:
    write_model(repo, build_model_config(pipeline.lookup), {
        **python_model_files("feature_lookup"),
        "user_ids.npy": npy_bytes(features.user_ids),
        "seen_indptr.npy": npy_bytes(features.seen_indptr),
        "seen_items.npy": npy_bytes(features.seen_items)})
    write_model(repo, build_model_config(pipeline.topk), {
        **python_model_files("topk"),
        "item_ids.npy": npy_bytes(features.item_ids),
        "popularity.npy": npy_bytes(features.popularity)})


def write_scorer_variant(repo: Path, onnx_path: Path, n_items: int, variant: str = "") -> RetrievalPipeline:
    """Add scorer[_variant] + recommend[_variant] for an ONNX file taking USER_INDEX."""
    pipeline = retrieval_pipeline(n_items, variant)
    write_model(repo, build_model_config(pipeline.scorer), {"model.onnx": onnx_path})
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    return pipeline


def add_scorer_variant(repo: Path, onnx_path: Path, n_items: int, variant: str,
                       info: dict | None = None) -> RetrievalPipeline:
    """write_scorer_variant into an exported repository; record it in recdeploy.json
    ("ensembles", "variants") and refresh the manifest (used by ``recdeploy compress``)."""
    repo = Path(repo)
    meta_path = repo / "recdeploy.json"
    if not meta_path.is_file():
        raise ExportError(f"{repo} is not an exported repository (no recdeploy.json); "
                          "run `recdeploy export` first")
    meta = json.loads(meta_path.read_text())
    if meta.get("n_items") != n_items:
        raise ExportError(f"variant {variant!r} scores {n_items} items but {repo} serves "
                          f"{meta.get('n_items')}: export the same run first")
    pipeline = write_scorer_variant(repo, onnx_path, n_items, variant)
    record_variant(repo, pipeline.ensemble.name, variant, info)
    return pipeline


def sample_user_indices(n_users: int, n: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_users, size=min(n, n_users), replace=False)).astype(np.int64)


def export_retrieval(model, ds: Dataset, repo: Path, card: dict | None = None) -> ParityReport:
    """model: any model with ``retrieval_scorer()`` (USER_INDEX -> SCORES). Writes the whole
    repository; returns the ONNX parity report."""
    if card is not None and card.get("dataset_fingerprint") not in (None, ds.fingerprint()):
        raise ExportError(f"checkpoint was trained on dataset fingerprint "
                          f"{card['dataset_fingerprint']}, but {ds.name} now has {ds.fingerprint()}")
    repo = Path(repo)
    clear_repository(repo)
    scorer = model.retrieval_scorer().eval()
    users = sample_user_indices(ds.n_users).reshape(-1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(scorer, {"USER_INDEX": users}, ["SCORES"], Path(tmp) / "model.onnx")
        parity = check_parity(scorer, onnx_path, {"USER_INDEX": users}, ["SCORES"])
        pipeline = write_scorer_variant(repo, onnx_path, ds.n_items)
    features = build_feature_arrays(ds)
    write_python_models(repo, pipeline, features)
    ensembles = [pipeline.ensemble.name]
    from recdeploy.export.fused import dot_product_parts, write_fused_variant
    if dot_product_parts(scorer) is not None:  # a dot-product scorer folds into one graph
        with torch.no_grad():
            all_scores = scorer(torch.arange(ds.n_users)[:, None]).numpy()
        ensembles += write_fused_variant(repo, scorer, features, ds.user_ids[users[:, 0]], all_scores)
    (repo / "recdeploy.json").write_text(json.dumps({
        "scenario": "retrieval", "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(),
        "n_users": ds.n_users, "n_items": ds.n_items, "ensembles": ensembles,
        "onnx_parity_max_abs_diff": parity.max_abs_diff, "card": card or {}}, indent=2))
    write_manifest(repo)
    return parity
