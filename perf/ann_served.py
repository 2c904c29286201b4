"""A retrieval repository at any catalogue size, exact and ANN side by side, for served numbers.

    python -m recdeploy.perf.ann_served --items 1000000 --repository reports/ann/repo1m
    recdeploy perf --lab reports/ann/repo1m --batch-size 1,64 --concurrency 1,4 --out reports/ann/served1m

Writes feature_lookup, the exact fused model (``recommend_fused``: lookup, scores, seen mask
and top-K in one ONNX graph, the fastest exact entry served here) and ``recommend_ann_ivfpq``
over a synthetic catalogue, plus the ``recdeploy.json`` the lab reads. With ``--tables``
(a trained model's ``users`` / ``items``, bias folded in, as perf/ann_device.py takes them)
the vectors are drawn shaped like that model's towers, so the served ANN entry's recall is
the realistic one; without, isotropic random vectors (the same work, a much lower recall).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from recdeploy.export.ann import write_ann_models
from recdeploy.export.ann_index import fold_bias, parse_ann
from recdeploy.export.fused import FusedRetrieval, export_fused_onnx, fused_ensemble_spec, fused_model_spec
from recdeploy.export.repository import clear_repository, npy_bytes, write_manifest, write_model
from recdeploy.export.retrieval_specs import lookup_spec
from recdeploy.export.scenarios.base import METADATA, Entry
from recdeploy.export.triton_config import build_ensemble_config, build_model_config
from recdeploy.export.triton_python import python_model_files
from recdeploy.perf.ann_bench import gaussian_like
from recdeploy.perf.synthetic_catalogue import synthetic_features
from recdeploy.train.onnx_io import onnx_files


def write_synthetic_repository(repo: Path, n_items: int, ann: str = "ivfpq:nlist=1024:nprobe=16:overfetch=0.25",
                               n_users: int = 10_000,
                               reference: tuple[np.ndarray, np.ndarray] | None = None) -> list[Entry]:
    """reference: a trained model's (users, items) tables, bias folded in (``fold_bias``): the
    catalogue and users are drawn with their mean and covariance."""
    repo = Path(repo)
    clear_repository(repo)
    features = synthetic_features(n_items, n_users)
    if reference is not None:
        rng = np.random.default_rng(1)
        items = gaussian_like(reference[1], n_items, rng)
        features = replace(features, item_vectors=np.ascontiguousarray(items[:, :-1]), item_bias=items[:, -1].copy(),
                           user_vectors=gaussian_like(reference[0][:, :-1], n_users, rng))
        del items
    write_model(repo, build_model_config(lookup_spec()), {
        **python_model_files("feature_lookup"), "user_ids.npy": npy_bytes(features.user_ids),
        "seen_indptr.npy": npy_bytes(features.seen_indptr), "seen_items.npy": npy_bytes(features.seen_items)})
    fused = FusedRetrieval(features.user_vectors, features.item_vectors, features.item_bias, features.popularity,
                           features.user_ids, features.seen_indptr, features.seen_items, features.item_ids)
    # each instance holds its own copy of the weights: past 1 GiB, one instance with two threads
    # (fused_model_spec caps the batch by the score matrix)
    large = features.item_vectors.nbytes > 1 << 30
    spec = fused_model_spec(n_items=n_items, instances=1 if large else 2, threads=2 if large else 1)
    with tempfile.TemporaryDirectory() as tmp:   # past 2 GiB (10^7 x 64) the weights go to model.onnx.data
        write_model(repo, build_model_config(spec),
                    onnx_files(export_fused_onnx(fused, Path(tmp) / "model.onnx", features.user_ids[:8])))
    del fused
    ensemble = fused_ensemble_spec(spec)
    write_model(repo, build_ensemble_config(ensemble), {})
    entries = [Entry(ensemble.name, "retrieval", {"kind": "onnx", "model": spec.name})]
    users, items = fold_bias(features.user_vectors, features.item_vectors, features.item_bias)
    for written in write_ann_models(repo, parse_ann(ann), users, items, features):
        entries.append(Entry(written.ensemble.name, "retrieval", {"kind": "ann", "model": written.model.name},
                             variant_of=ensemble.name))
        print(f"{written.ensemble.name}: recall@10 {written.info['recall_at_k']:.3f} on synthetic users, "
              f"index {written.info['index_bytes'] / 2 ** 20:.0f} MiB")
    (repo / METADATA).write_text(json.dumps({
        "scenario": "retrieval", "dataset": f"synthetic-{n_items}", "ensembles": [e.name for e in entries],
        "entries": {e.name: e.to_dict() for e in entries}, "n_items": n_items, "n_users": n_users}, indent=2))
    write_manifest(repo)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.perf.ann_served", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repository", type=Path, default=Path("reports/ann/repo1m"))
    parser.add_argument("--ann", default="ivfpq:nlist=1024:nprobe=16:overfetch=0.25")
    parser.add_argument("--tables", type=Path, default=None, help="npz of a trained model's users / items")
    args = parser.parse_args(argv)
    tables = np.load(args.tables) if args.tables is not None else None
    reference = (tables["users"], tables["items"]) if tables is not None else None
    entries = write_synthetic_repository(args.repository, args.items, args.ann, reference=reference)
    print(f"{args.repository}: {', '.join(e.name for e in entries)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
