"""Approximate nearest-neighbour (FAISS) retrieval steps, built at export beside the exact ones.

    recdeploy export --run runs/demo --ann hnsw,ivfpq     # + recommend_ann_hnsw, recommend_ann_ivfpq

Exact retrieval scores every item for every request; its cost grows with the catalogue. An
ANN index (HNSW: a navigable graph; IVF-PQ: inverted lists of product-quantized codes) looks
at a small part of it. The index is built over the served scorer's item matrix, whose last
column already holds the item bias against a constant 1 in every user vector, so the
index's inner product is the model's exact score. ``ann_search.py`` (the python model) holds
the serving code; this module builds its folder: the index, the vectors (the re-rank
catalogue FP32, or row-wise INT8 with ``rerank=int8``), and the settings, among them the
over-fetch factor measured here (``choose_overfetch``, in ann_index.py with the index
building itself).
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from recdeploy.compress.rowwise import int8_rows
from recdeploy.export.ann_index import (
    OVERFETCH_CANDIDATES,
    AnnConfig,
    ann_module,
    build_index,
    choose_overfetch,
    exact_top,
    index_bytes,
    seen_rows,
)
from recdeploy.export.repository import npy_bytes, write_model
from recdeploy.export.retrieval_specs import ann_ensemble_spec, ann_spec
from recdeploy.export.triton_config import EnsembleSpec, ModelSpec, build_ensemble_config, build_model_config
from recdeploy.export.triton_python import load_python_model, python_model_files


@dataclass(frozen=True)
class AnnExport:
    model: ModelSpec
    ensemble: EnsembleSpec
    info: dict           # what ann.json holds: settings, measurements, memory


def write_ann_model(repo: Path, config: AnnConfig, users: np.ndarray, items: np.ndarray, features,
                    k: int = 10, check_users: int = 256, threads: int = 1, seed: int = 0,
                    built: tuple[faiss.Index, float] | None = None) -> AnnExport:
    """Build ``config``'s index over ``items`` and write ann_<kind> + recommend_ann_<kind>.

    users [U, D] / items [I, D]: the served scorer's tables (bias folded in); features: the
    retrieval FeatureArrays (item ids, popularity, the users' seen items). The over-fetch
    (unless the config sets one) and the recall@k against exact search are measured on up to
    ``check_users`` real users and written to ann.json with the index's memory. ``built``: an
    index already built over ``items`` with ``config.build_key()``'s settings, and its build
    seconds (``write_ann_models`` shares one build between settings).
    """
    index, build_s = built or timed_build(items, config, seed)
    model, ensemble = ann_spec(config.key, threads=threads), ann_ensemble_spec(config.key)
    info = {**config.settings(), "config": asdict(config), "build_seconds": round(build_s, 2),
            "index_bytes": index_bytes(index), "flat_bytes": int(items.nbytes), "n_items": len(items)}
    files: Mapping[str, Path | bytes] = {
        **python_model_files("ann_search"), "index.faiss": faiss.serialize_index(index).tobytes(),
        "user_vectors.npy": npy_bytes(users.astype(np.float32)), **rerank_files(items, config.rerank),
        "item_ids.npy": npy_bytes(features.item_ids), "popularity.npy": npy_bytes(features.popularity),
        "ann.json": json.dumps({**info, "overfetch": max(config.overfetch, 0.0)}).encode()}
    folder = write_model(repo, build_model_config(model), files) / "1"
    searcher = ann_module.AnnSearcher.load(str(folder), threads)
    rows = np.sort(np.random.default_rng(seed).choice(len(users), size=min(check_users, len(users)),
                                                      replace=False))
    seen = seen_rows(features, rows)
    exact = exact_top(users[rows], items, seen, min(k, len(items)), features.item_ids)
    # a set over-fetch is measured too (one trial): recall and fallback rate go to ann.json either way
    candidates = OVERFETCH_CANDIDATES if config.overfetch < 0 else (config.overfetch,)
    chosen, trials = choose_overfetch(searcher, rows, seen, exact, min(k, len(items)), candidates)
    trial = next(t for t in trials if t.overfetch == chosen)
    # rerank_bytes: the re-rank catalogue as the searcher holds it (index_bytes + this = resident)
    info.update(rerank_bytes=searcher.catalogue.nbytes, overfetch=chosen, recall_at_k=trial.recall,
                fallback_rate=trial.fallback_rate, k=k, overfetch_trials=[asdict(t) for t in trials])
    (folder / "ann.json").write_text(json.dumps(info, indent=2))
    write_model(repo, build_ensemble_config(ensemble), {})
    return AnnExport(model, ensemble, info)


def timed_build(items: np.ndarray, config: AnnConfig, seed: int = 0) -> tuple[faiss.Index, float]:
    started = time.perf_counter()
    index = build_index(items, config, seed)
    return index, time.perf_counter() - started


def write_ann_models(repo: Path, configs: Sequence[AnnConfig], users: np.ndarray, items: np.ndarray, features,
                     **options) -> list[AnnExport]:
    """``write_ann_model`` for each config, building each distinct index (``build_key``) once:
    ``hnsw:ef_search=32:label=ef32,hnsw:ef_search=128:label=ef128`` is one graph, two models."""
    builds: dict[tuple, tuple[faiss.Index, float]] = {}
    written = []
    for config in configs:
        key = config.build_key()
        if key not in builds:
            builds[key] = timed_build(items, config, options.get("seed", 0))
        written.append(write_ann_model(repo, config, users, items, features, built=builds[key], **options))
    return written


def rerank_files(items: np.ndarray, rerank: str) -> dict[str, bytes]:
    """The re-rank catalogue's files for ``ann_search.load_catalogue``: FP32 rows, or the
    row-wise INT8 codes and FP16 scales of compress/rowwise.py (quantized here, once)."""
    if rerank == "int8":
        codes, scale = int8_rows(items)
        return {"catalogue_codes.npy": npy_bytes(codes), "catalogue_scale.npy": npy_bytes(scale)}
    return {"catalogue.npy": npy_bytes(items.astype(np.float32))}


class InProcessAnn:
    """recommend_ann_<kind> in-process: the repository's feature_lookup and the same index,
    through the same ``AnnSearcher`` the python model runs."""

    def __init__(self, lookup_folder: Path, ann_folder: Path, threads: int = 1):
        lookup = load_python_model("feature_lookup")
        self.lookup = lookup.lookup_users
        self.table = lookup.UserTable.load(str(lookup_folder))
        self.searcher = ann_module.AnnSearcher.load(str(ann_folder), threads)

    def recommend(self, user_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index, seen, known = self.lookup(np.asarray(user_ids, dtype=np.int64), self.table)
        k = ann_module.parse_k(np.array([k], dtype=np.int32), len(self.searcher.item_ids))
        return self.searcher.top_k(index, seen, known, k)
