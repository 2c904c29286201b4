"""The ranking scenario: user id + candidate ids -> ranking_features -> ranker (DCN-v2) -> top-K.

    parity = export_ranking(model, ds, Path("model_repository"), card)    # ensemble "rank"
    ids, scores = InProcessRanker(Path("model_repository")).rank([42], [[1, 50, 181]], k=2)

Models: ``ranking_features`` (python, numpy only: ids -> feature tensors, see its docstring
for unknown and repeated ids), ``ranker`` (ONNX, parity-checked against PyTorch on real
users and items, batch and candidate axes both dynamic), ``rank_topk`` (python, numpy only).
Ensemble ``rank``: USER_ID INT64 [B,1], CANDIDATES INT64 [B,N], K INT32 [B,1] ->
ITEM_IDS INT64 [B,K], SCORES FP32 [B,K] (the ranker's logits; sigmoid gives pCTR).
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.train.onnx_io import ParityReport, check_parity, cpu_session, export_onnx
from recdeploy.export.repository import npy_bytes, record_variant, write_manifest, write_model
from recdeploy.export.retrieval import ExportError, clear_repository
from recdeploy.export.retrieval_specs import MAX_BATCH
from recdeploy.export.triton_config import (EnsembleSpec, EnsembleStep, ModelSpec, TensorSpec,
                                            build_ensemble_config, build_model_config, check_ensemble)
from recdeploy.export.triton_python import load_python_model, python_model_files
from recdeploy.train.data import Dataset

N_SPARSE, N_DENSE = 6, 3
FEATURE_TENSORS = ("SPARSE", "GENRES", "DENSE")


features_module = load_python_model("ranking_features")
rank_topk_module = load_python_model("rank_topk")


# ---------------------------------------------------------------------------- specs (pure)

@dataclass(frozen=True)
class RankingPipeline:
    features: ModelSpec
    ranker: ModelSpec
    topk: ModelSpec
    ensemble: EnsembleSpec

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return (self.features, self.ranker, self.topk)


def feature_outputs(n_genres: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("SPARSE", "INT64", (-1, N_SPARSE)), TensorSpec("GENRES", "FP32", (-1, n_genres)),
            TensorSpec("DENSE", "FP32", (-1, N_DENSE)))


def ranking_features_spec(n_genres: int, max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(
        name="ranking_features", backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("CANDIDATES", "INT64", (-1,))),
        outputs=(*feature_outputs(n_genres), TensorSpec("VALID", "BOOL", (-1,))))


def ranker_name(variant: str = "") -> str:
    """``ranker``, or ``ranker_<variant>`` for a compressed variant with the same tensors."""
    return f"ranker_{variant}" if variant else "ranker"


def ranker_spec(n_genres: int, max_batch: int = MAX_BATCH, threads: int = 2, variant: str = "") -> ModelSpec:
    return ModelSpec(
        name=ranker_name(variant), platform="onnxruntime_onnx", max_batch_size=max_batch,
        inputs=feature_outputs(n_genres), outputs=(TensorSpec("SCORES", "FP32", (-1,)),),
        parameters=(("intra_op_thread_count", str(threads)),))


def rank_topk_spec(max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(
        name="rank_topk", backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("SCORES", "FP32", (-1,)), TensorSpec("CANDIDATES", "INT64", (-1,)),
                TensorSpec("VALID", "BOOL", (-1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("TOP_SCORES", "FP32", (-1,))))


def ranking_steps(candidates: str, user_id: str = "USER_ID", ranker: str = "ranker") -> tuple[EnsembleStep, ...]:
    """ranking_features -> ranker -> rank_topk, reading the given candidate tensor."""
    return (
        EnsembleStep("ranking_features", {"USER_ID": user_id, "CANDIDATES": candidates},
                     {"SPARSE": "sparse", "GENRES": "genres", "DENSE": "dense", "VALID": "valid"}),
        EnsembleStep(ranker, {"SPARSE": "sparse", "GENRES": "genres", "DENSE": "dense"},
                     {"SCORES": "candidate_scores"}),
        EnsembleStep("rank_topk", {"SCORES": "candidate_scores", "CANDIDATES": candidates,
                                   "VALID": "valid", "K": "K"},
                     {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}),
    )


RESULT_OUTPUTS = (TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,)))


def rank_ensemble_spec(max_batch: int = MAX_BATCH, variant: str = "") -> EnsembleSpec:
    """``rank``, or ``rank_<variant>`` through ``ranker_<variant>``."""
    return EnsembleSpec(
        name=f"rank_{variant}" if variant else "rank", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("CANDIDATES", "INT64", (-1,)),
                TensorSpec("K", "INT32", (1,))),
        outputs=RESULT_OUTPUTS, steps=ranking_steps("CANDIDATES", ranker=ranker_name(variant)))


def ranking_pipeline(n_genres: int, max_batch: int = MAX_BATCH, variant: str = "") -> RankingPipeline:
    pipeline = RankingPipeline(features=ranking_features_spec(n_genres, max_batch),
                               ranker=ranker_spec(n_genres, max_batch, variant=variant),
                               topk=rank_topk_spec(max_batch),
                               ensemble=rank_ensemble_spec(max_batch, variant))
    check_ensemble(pipeline.ensemble, {m.name: m for m in pipeline.models})
    return pipeline


# ---------------------------------------------------------------------------- export

def feature_store(model, ds: Dataset):
    """The numpy FeatureStore the served model reads: the ranker's own tables + the raw ids."""
    tables = {name: getattr(model.features, name).numpy() for name in features_module.TABLES}
    return features_module.FeatureStore(ds.user_ids, ds.item_ids, **tables)


def check_compatible(model, ds: Dataset, card: dict | None) -> None:
    if card is not None and card.get("dataset_fingerprint") not in (None, ds.fingerprint()):
        raise ExportError(f"checkpoint was trained on dataset fingerprint "
                          f"{card['dataset_fingerprint']}, but {ds.name} now has {ds.fingerprint()}")
    if (model.n_users, model.n_items) != (ds.n_users, ds.n_items):
        raise ExportError(f"ranker has {model.n_users} users x {model.n_items} items, dataset "
                          f"{ds.name} has {ds.n_users} x {ds.n_items}: train it on this dataset")


def sample_requests(ds: Dataset, n_users: int = 32, n_candidates: int = 20, seed: int = 0):
    """Real users with candidates drawn from real items: (USER_ID [B,1], CANDIDATES [B,N])."""
    rng = np.random.default_rng(seed)
    users = rng.choice(ds.user_ids, size=min(n_users, ds.n_users), replace=False)
    candidates = rng.choice(ds.item_ids, size=(len(users), n_candidates))
    return users.reshape(-1, 1).astype(np.int64), candidates.astype(np.int64)


def export_ranker_onnx(model, inputs: dict[str, np.ndarray], path: Path) -> Path:
    """DCN-v2 scorer -> ONNX with batch (0) and candidate (1) axes dynamic."""
    axes = {name: {0: "batch", 1: "candidates"} for name in [*inputs, "SCORES"]}
    return export_onnx(model, inputs, ["SCORES"], path, dynamic_axes=axes)


def write_ranking(repo: Path, model, ds: Dataset, card: dict | None = None) -> ParityReport:
    """Add ranking_features, ranker, rank_topk and the ``rank`` ensemble to repo."""
    check_compatible(model, ds, card)
    model = model.eval()
    store = feature_store(model, ds)
    users, candidates = sample_requests(ds)
    sparse, genres, dense, _ = features_module.candidate_features(users, candidates, store)
    inputs = dict(zip(FEATURE_TENSORS, (sparse, genres, dense)))
    pipeline = ranking_pipeline(model.n_genres)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_ranker_onnx(model, inputs, Path(tmp) / "model.onnx")
        parity = check_parity(model, onnx_path, inputs, ["SCORES"], atol=1e-5, rtol=1e-5)
        write_model(repo, build_model_config(pipeline.ranker), {"model.onnx": onnx_path})
    write_model(repo, build_model_config(pipeline.features), {
        **python_model_files("ranking_features"),
        "user_ids.npy": npy_bytes(ds.user_ids.astype(np.int64)),
        "item_ids.npy": npy_bytes(ds.item_ids.astype(np.int64)),
        **{f"{name}.npy": npy_bytes(getattr(store, name)) for name in features_module.TABLES}})
    write_model(repo, build_model_config(pipeline.topk), {**python_model_files("rank_topk")})
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    return parity


def add_ranker_variant(repo: Path, onnx_path: Path, variant: str, info: dict | None = None) -> RankingPipeline:
    """ranker_<variant> + rank_<variant> beside the full ranker of an exported repository,
    sharing its ranking_features and rank_topk; recorded in recdeploy.json ("ensembles",
    "variants") and the manifest. onnx_path takes the ranker's tensors (B and N dynamic)."""
    import onnx

    repo = Path(repo)
    meta_path = repo / "recdeploy.json"
    features = repo / "ranking_features" / "1" / "item_genres.npy"
    if not meta_path.is_file() or not features.is_file():
        raise ExportError(f"{repo} has no exported ranking scenario (recdeploy.json and "
                          "ranking_features); run `recdeploy export` on the DCN-v2 run first")
    n_genres = np.load(features, mmap_mode="r").shape[1]
    genres = next(t for t in onnx.load(str(onnx_path)).graph.input if t.name == "GENRES")
    width = genres.type.tensor_type.shape.dim[-1].dim_value
    if width != n_genres:
        raise ExportError(f"variant {variant!r} reads {width} genres but {repo} serves {n_genres}: "
                          "export the same run first")
    pipeline = ranking_pipeline(n_genres, variant=variant)
    write_model(repo, build_model_config(pipeline.ranker), {"model.onnx": onnx_path})
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    record_variant(repo, pipeline.ensemble.name, variant, info)
    return pipeline


def export_ranking(model, ds: Dataset, repo: Path, card: dict | None = None) -> ParityReport:
    """A repository holding only the ranking scenario (cleared first), with its manifest."""
    repo = Path(repo)
    check_compatible(model, ds, card)
    clear_repository(repo)
    parity = write_ranking(repo, model, ds, card)
    (repo / "recdeploy.json").write_text(json.dumps({
        "scenario": "ranking", "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(),
        "ensembles": ["rank"], "onnx_parity_max_abs_diff": parity.max_abs_diff,
        "card": card or {}}, indent=2))
    write_manifest(repo)
    return parity


# ---------------------------------------------------------------------------- in-process

class InProcessRanker:
    """The ``rank`` ensemble in-process, from the repository's own artifacts and numpy cores
    (``ranker="ranker_<variant>"``: the ``rank_<variant>`` ensemble)."""

    def __init__(self, repo: Path, threads: int = 2, ranker: str = "ranker"):
        repo = Path(repo)
        self.store = features_module.FeatureStore.load(repo / "ranking_features" / "1")
        self.session = cpu_session(repo / ranker / "1" / "model.onnx", threads)

    def rank(self, user_ids, candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1, 1)
        candidates = np.asarray(candidates, dtype=np.int64).reshape(len(users), -1)
        sparse, genres, dense, valid = features_module.candidate_features(users, candidates, self.store)
        scores = self.session.run(["SCORES"], {"SPARSE": sparse, "GENRES": genres, "DENSE": dense})[0]
        k = rank_topk_module.parse_k(np.array([k], dtype=np.int32), candidates.shape[1],
                                     "the number of candidates")
        return rank_topk_module.rank_top_k(scores, candidates, valid, k)
