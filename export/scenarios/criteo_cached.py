"""Cached tables for the criteo scenario: the entry ``criteo_rank_cached`` beside ``criteo_rank``.

    recdeploy export --run runs/dlrm-criteo --repository repo --cached-tables 200000

The serving shape for tables past one replica's memory (docs/large-models.md): the feature
step ``criteo_features_cached`` (the criteo_features model file under a config with
``cache_rows``) keeps the FP32 table on disk as ``table.npy``, memory-mapped, looks each
impression's 26 rows up through a CLOCK cache of ``cache_rows`` hot rows and sends them as
EMBEDDINGS [B, N, 26, D] to ``criteo_ranker_dense``, the ONNX ranker without its tables (bottom
MLP, interaction, top MLP: ``model.score_fields``). The ensemble takes the same request and
answers the same scores as ``criteo_rank``; the canary holds it to the full ranker in-process.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recdeploy.export.repository import npy_bytes, write_model
from recdeploy.export.scenarios.base import Entry, ExportError, add_entries, latest_version_dir
from recdeploy.export.scenarios.criteo import (
    MAX_BATCH,
    export_ranker,
    features_module,
    load_impressions,
    probe_inputs,
    request_inputs,
)
from recdeploy.export.scenarios.ranking import RESULT_OUTPUTS, rank_topk_spec
from recdeploy.export.triton_config import (
    EnsembleSpec,
    EnsembleStep,
    ModelSpec,
    TensorSpec,
    build_ensemble_config,
    build_model_config,
    check_ensemble,
)
from recdeploy.export.triton_python import python_model_files
from recdeploy.train.models.dlrm import N_DENSE, N_SPARSE, EmbeddingTables
from recdeploy.train.onnx_io import ParityReport, check_parity, onnx_files

ENTRY = "criteo_rank_cached"
FEATURES = "criteo_features_cached"
RANKER = "criteo_ranker_dense"
TABLE_FILE = "table.npy"


# ---------------------------------------------------------------------------- specs (pure)

def embeddings_spec(dim: int) -> TensorSpec:
    return TensorSpec("EMBEDDINGS", "FP32", (-1, N_SPARSE, dim))


def cached_features_spec(capacity: int, dim: int, max_batch: int = MAX_BATCH) -> ModelSpec:
    if capacity < 1:
        raise ExportError(f"--cached-tables: the cache holds at least one row, got {capacity}")
    return ModelSpec(name=FEATURES, backend="python", max_batch_size=max_batch, inputs=request_inputs(),
                     outputs=(TensorSpec("DENSE_X", "FP32", (-1, N_DENSE)), embeddings_spec(dim),
                              TensorSpec("VALID", "BOOL", (-1,))),
                     parameters=(("cache_rows", str(capacity)),))


def dense_ranker_spec(dim: int, max_batch: int = MAX_BATCH, threads: int = 2) -> ModelSpec:
    return ModelSpec(name=RANKER, platform="onnxruntime_onnx", max_batch_size=max_batch,
                     inputs=(TensorSpec("DENSE_X", "FP32", (-1, N_DENSE)), embeddings_spec(dim)),
                     outputs=(TensorSpec("SCORES", "FP32", (-1,)),),
                     parameters=(("intra_op_thread_count", str(threads)),))


def cached_ensemble_spec(max_batch: int = MAX_BATCH) -> EnsembleSpec:
    steps = (
        EnsembleStep(FEATURES, {"DENSE": "DENSE", "CATEGORICAL": "CATEGORICAL", "CANDIDATES": "CANDIDATES"},
                     {"DENSE_X": "dense_x", "EMBEDDINGS": "embeddings", "VALID": "valid"}),
        EnsembleStep(RANKER, {"DENSE_X": "dense_x", "EMBEDDINGS": "embeddings"}, {"SCORES": "candidate_scores"}),
        EnsembleStep("rank_topk", {"SCORES": "candidate_scores", "CANDIDATES": "CANDIDATES",
                                   "VALID": "valid", "K": "K"},
                     {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}))
    return EnsembleSpec(name=ENTRY, max_batch_size=max_batch,
                        inputs=(*request_inputs(), TensorSpec("K", "INT32", (1,))),
                        outputs=RESULT_OUTPUTS, steps=steps)


def cached_pipeline_specs(capacity: int, dim: int, threads: int = 2) -> tuple[tuple[ModelSpec, ...], EnsembleSpec]:
    models = (cached_features_spec(capacity, dim), dense_ranker_spec(dim, threads=threads),
              rank_topk_spec(MAX_BATCH))
    ensemble = cached_ensemble_spec()
    check_ensemble(ensemble, {m.name: m for m in models})
    return models, ensemble


def cached_entry() -> Entry:
    """Answers like ``criteo_rank``: the reference is the full ranker, tables and all."""
    return Entry(ENTRY, "criteo", {"kind": "steps", "ranker": "criteo_ranker", "cached_tables": True},
                 variant_of="criteo_rank")


# ---------------------------------------------------------------------------- export

class DenseRanker(nn.Module):
    """A criteo model without its tables: DENSE_X [B, N, 13], EMBEDDINGS [B, N, 26, D] ->
    SCORES [B, N], through the model's ``score_fields``."""
    model: Any                          # DLRM or CriteoDCN: both have score_fields

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, dense_x: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        lead = dense_x.shape[:-1]
        fields = embeddings.reshape(-1, N_SPARSE, embeddings.shape[-1])
        return self.model.score_fields(dense_x.reshape(-1, N_DENSE), fields).reshape(lead)


def fp32_table(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(every field's rows [R, D] FP32, each field's first row [26]) of a trained criteo model."""
    sparse_arch = getattr(model, "sparse_arch", None)
    if not hasattr(model, "score_fields") or sparse_arch is None:
        raise ExportError(f"cached tables serve criteo models (dlrm, dcn_v2_criteo), not {type(model).__name__}")
    if not isinstance(sparse_arch.tables, EmbeddingTables):
        raise ExportError(f"cached tables serve the FP32 table; this model's tables are "
                          f"{type(sparse_arch.tables).__name__} (export the uncompressed run)")
    return (sparse_arch.tables.weight.detach().numpy().astype(np.float32, copy=False),
            sparse_arch.offsets.numpy().astype(np.int64))


def add_cached_tables(model: nn.Module, repo: Path, capacity: int, threads: int = 2) -> ParityReport:
    """criteo_features_cached + criteo_ranker_dense + criteo_rank_cached beside an exported
    criteo scenario (``export_criteo`` first); returns the dense ranker's ONNX parity."""
    repo = Path(repo)
    if not (repo / "criteo_features").is_dir():
        raise ExportError(f"{repo} has no exported criteo scenario: export the full run first")
    table, offsets = fp32_table(model.eval())
    models, ensemble = cached_pipeline_specs(capacity, table.shape[1], threads)
    plain = latest_version_dir(repo, "criteo_features")
    probe = probe_inputs(load_impressions(repo), features_module.Vocab.load(plain))
    inputs = {"DENSE_X": probe["DENSE_X"], "EMBEDDINGS": table[probe["SPARSE"] + offsets]}
    ranker = DenseRanker(model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_ranker(ranker, inputs, Path(tmp) / "model.onnx")
        parity = check_parity(ranker, onnx_path, inputs, ["SCORES"], atol=1e-4, rtol=1e-4)
        write_model(repo, build_model_config(models[1]), onnx_files(onnx_path))
    features = write_model(repo, build_model_config(models[0]), {
        **python_model_files("criteo_features"),
        **{f"{name}.npy": plain / f"{name}.npy" for name in features_module.VOCAB_FILES},
        "table_offsets.npy": npy_bytes(offsets)})
    np.save(features / "1" / TABLE_FILE, table)
    write_model(repo, build_ensemble_config(ensemble), {})
    add_entries(repo, [cached_entry()], cached_tables={"cache_rows": min(capacity, len(table)),
                                                       "table_rows": len(table), "dim": table.shape[1]})
    return parity
