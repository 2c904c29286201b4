"""Fashion ads with position bias (Open Bandit Dataset): context + candidate ads -> top-K.

    recdeploy train --model dcn_v2_context --dataset obd --out runs/obd
    recdeploy export --run runs/obd --repository repo_obd
    recdeploy demo --scenario obd

Ensemble ``rank_ads``: CONTEXT INT64 [B,4] (the four hashed user features, each the integer
of its first 15 hex digits), CANDIDATES INT64 [B,N] (raw ad ids), K INT32 [B,1] ->
ITEM_IDS INT64 [B,K], SCORES FP32 [B,K] (logits at the served slot; sigmoid: pCTR). Steps:
- ``obd_features`` (python, numpy only): context and ad lookups -> feature tensors, the slot
  position fixed to the served one; unseen context values fall back to "unknown"; unknown,
  repeated or no candidates are INVALID_ARGUMENT (see its docstring);
- ``obd_ranker`` (ONNX, parity-checked against PyTorch on real contexts and ads, batch and
  candidate axes dynamic): the ``dcn_v2_context`` model;
- ``rank_topk`` (python): the ranking scenario's own top-K step; K outside 1..N is
  INVALID_ARGUMENT.
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.export.repository import clear_repository, npy_bytes, write_model
from recdeploy.export.retrieval_specs import MAX_BATCH
from recdeploy.export.scenarios import register_scenario
from recdeploy.export.scenarios.base import (
    Answer,
    Contract,
    DemoRun,
    Entry,
    ExportError,
    ExportJob,
    ExportReport,
    Pipeline,
    Requests,
    Scenario,
    add_entries,
    check_fingerprint,
    k_column,
    latest_version_dir,
    write_metadata,
)
from recdeploy.export.scenarios.ranking import RESULT_OUTPUTS, rank_topk_module, rank_topk_spec, with_candidate_axis
from recdeploy.export.triton_config import (
    EnsembleSpec,
    EnsembleStep,
    ModelSpec,
    TensorSpec,
    build_ensemble_config,
    build_model_config,
    check_ensemble,
)
from recdeploy.export.triton_python import load_python_model, python_model_files
from recdeploy.train.data import Dataset
from recdeploy.train.models import model_entry
from recdeploy.train.models.dcn_v2_context import DENSE_FIELDS, SERVED_POSITION, SPARSE_FIELDS, ContextDCN
from recdeploy.train.obd_features import arrays_of, context_indices, ds_contexts, features
from recdeploy.train.onnx_io import ParityReport, check_parity, cpu_session, export_onnx, onnx_files

ENSEMBLE = "rank_ads"
FEATURES = "obd_features"
RANKER = "obd_ranker"
FEATURE_TENSORS = ("SPARSE", "DENSE")
# candidates per perf_analyzer request: fits every campaign (the smallest has 34 ads)
PERF_CANDIDATES = 30
features_module = load_python_model(FEATURES)


class AdsExportError(ExportError):
    pass


# ---------------------------------------------------------------------------- specs (pure)

@dataclass(frozen=True)
class AdsPipeline:
    features: ModelSpec
    ranker: ModelSpec
    topk: ModelSpec
    ensemble: EnsembleSpec

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return (self.features, self.ranker, self.topk)


def feature_outputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec("SPARSE", "INT64", (-1, len(SPARSE_FIELDS))),
            TensorSpec("DENSE", "FP32", (-1, len(DENSE_FIELDS))))


def obd_features_spec(max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(
        name=FEATURES, backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("CONTEXT", "INT64", (features_module.N_CONTEXT,)),
                TensorSpec("CANDIDATES", "INT64", (-1,))),
        outputs=(*feature_outputs(), TensorSpec("VALID", "BOOL", (-1,))))


def ranker_name(variant: str = "") -> str:
    """``obd_ranker``, or ``obd_ranker_<variant>`` for a compressed variant with the same tensors."""
    return f"{RANKER}_{variant}" if variant else RANKER


def obd_ranker_spec(max_batch: int = MAX_BATCH, threads: int = 2, variant: str = "") -> ModelSpec:
    return ModelSpec(name=ranker_name(variant), platform="onnxruntime_onnx", max_batch_size=max_batch,
                     inputs=feature_outputs(), outputs=(TensorSpec("SCORES", "FP32", (-1,)),),
                     parameters=(("intra_op_thread_count", str(threads)),))


def rank_ads_spec(max_batch: int = MAX_BATCH, variant: str = "") -> EnsembleSpec:
    """``rank_ads``, or ``rank_ads_<variant>`` through ``obd_ranker_<variant>``."""
    return EnsembleSpec(
        name=f"{ENSEMBLE}_{variant}" if variant else ENSEMBLE, max_batch_size=max_batch,
        inputs=(TensorSpec("CONTEXT", "INT64", (features_module.N_CONTEXT,)),
                TensorSpec("CANDIDATES", "INT64", (-1,)), TensorSpec("K", "INT32", (1,))),
        outputs=RESULT_OUTPUTS,
        steps=(EnsembleStep(FEATURES, {"CONTEXT": "CONTEXT", "CANDIDATES": "CANDIDATES"},
                            {"SPARSE": "sparse", "DENSE": "dense", "VALID": "valid"}),
               EnsembleStep(ranker_name(variant), {"SPARSE": "sparse", "DENSE": "dense"},
                            {"SCORES": "candidate_scores"}),
               EnsembleStep("rank_topk", {"SCORES": "candidate_scores", "CANDIDATES": "CANDIDATES",
                                          "VALID": "valid", "K": "K"},
                            {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"})))


def ads_pipeline(max_batch: int = MAX_BATCH, variant: str = "") -> AdsPipeline:
    pipeline = AdsPipeline(features=obd_features_spec(max_batch), ranker=obd_ranker_spec(max_batch, variant=variant),
                           topk=rank_topk_spec(max_batch), ensemble=rank_ads_spec(max_batch, variant))
    check_ensemble(pipeline.ensemble, {m.name: m for m in pipeline.models})
    return pipeline


# ---------------------------------------------------------------------------- export

def feature_store(model: ContextDCN, ds: Dataset):
    """The numpy store obd_features serves: the ranker's own lookups + the logged contexts."""
    arrays = arrays_of(model)
    return features_module.AdFeatureStore(arrays.context_vocab, arrays.item_ids, arrays.item_sparse, arrays.item_dense,
                                          np.array([SERVED_POSITION]), np.unique(ds_contexts(ds), axis=0))


def sample_requests(store, n_contexts: int = 32, n_candidates: int = 20, seed: int = 0):
    """Real logged contexts (one with every value unseen) with distinct real ads:
    (CONTEXT [B,4], CANDIDATES [B,N])."""
    rng = np.random.default_rng(seed)
    contexts = store.contexts[rng.choice(len(store.contexts), size=min(n_contexts, len(store.contexts)),
                                         replace=False)]
    contexts = np.concatenate([contexts, np.full((1, contexts.shape[1]), 7, np.int64)])   # never logged
    candidates = np.stack([rng.choice(store.item_ids, size=n_candidates, replace=False) for _ in contexts])
    return contexts.astype(np.int64), candidates.astype(np.int64)


def served_equals_trained_features(model: ContextDCN, store, contexts: np.ndarray, candidates: np.ndarray) -> None:
    """obd_features (what is served) must build the very rows training built for the same
    context, ads and the served slot."""
    sparse, dense, _ = features_module.ad_features(contexts, candidates, store)
    arrays = arrays_of(model)
    rows = np.searchsorted(arrays.item_ids, candidates) + 1
    want_sparse, want_dense = features(arrays, context_indices(arrays, contexts)[:, None, :], rows, SERVED_POSITION)
    if not (np.array_equal(sparse, want_sparse) and np.array_equal(dense, want_dense)):
        raise AdsExportError("obd_features builds other feature rows than training did: the served "
                             "lookups and the model's tables disagree")


def export_obd(model: ContextDCN, ds: Dataset, repo: Path, card: dict | None = None) -> ParityReport:
    """Write the ads repository (cleared first) for a trained dcn_v2_context; returns the ONNX
    parity on real contexts and ads."""
    check_fingerprint(card, ds)
    if not isinstance(model, ContextDCN):
        raise AdsExportError(f"the obd scenario serves dcn_v2_context runs, not {type(model).__name__}")
    if model.n_items != ds.n_items:
        raise AdsExportError(f"ranker knows {model.n_items} ads, dataset {ds.name} has {ds.n_items}")
    repo = Path(repo)
    clear_repository(repo)
    model = model.eval()
    store = feature_store(model, ds)
    contexts, candidates = sample_requests(store)
    served_equals_trained_features(model, store, contexts, candidates)
    sparse, dense, _ = features_module.ad_features(contexts, candidates, store)
    inputs = dict(zip(FEATURE_TENSORS, (sparse, dense)))
    pipeline = ads_pipeline()
    axes = {name: {0: "batch", 1: "candidates"} for name in [*FEATURE_TENSORS, "SCORES"]}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, inputs, ["SCORES"], Path(tmp) / "model.onnx", dynamic_axes=axes)
        parity = check_parity(model, onnx_path, inputs, ["SCORES"], atol=1e-5, rtol=1e-5)
        write_model(repo, build_model_config(pipeline.ranker), onnx_files(onnx_path))
    write_model(repo, build_model_config(pipeline.features), {
        **python_model_files(FEATURES),
        **{f"context_vocab_{k}.npy": npy_bytes(v) for k, v in enumerate(store.context_vocab)},
        "item_ids.npy": npy_bytes(store.item_ids), "item_sparse.npy": npy_bytes(store.item_sparse),
        "item_dense.npy": npy_bytes(store.item_dense), "contexts.npy": npy_bytes(store.contexts),
        "served_position.npy": npy_bytes(np.array([SERVED_POSITION], np.int64))})
    write_model(repo, build_model_config(pipeline.topk), python_model_files("rank_topk"))
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    write_metadata(repo, "obd", ds, [ads_entry()], n_items=ds.n_items,
                   served_position=SERVED_POSITION, onnx_parity_max_abs_diff=parity.max_abs_diff,
                   card=card or {})
    return parity


def ads_entry(variant: str = "") -> Entry:
    return Entry(rank_ads_spec(variant=variant).name, "obd", {"kind": "steps", "ranker": ranker_name(variant)},
                 variant_of=ENSEMBLE if variant else "")


def add_ads_variant(repo: Path, onnx_path: Path, variant: str, info: dict | None = None) -> AdsPipeline:
    """obd_ranker_<variant> + rank_ads_<variant> beside the full ranker of an exported repository,
    sharing its obd_features and rank_topk. onnx_path takes the ranker's tensors per impression
    ([R, 1, ...], as compress measures them) or per request ([B, N, ...])."""
    repo = Path(repo)
    if not (repo / FEATURES).is_dir():
        raise AdsExportError(f"{repo} has no exported obd scenario ({FEATURES}); run `recdeploy export` "
                             "on the dcn_v2_context run first")
    store = features_module.AdFeatureStore.load(latest_version_dir(repo, FEATURES))
    contexts, candidates = sample_requests(store, n_contexts=8, n_candidates=5, seed=7)
    sparse, dense, _ = features_module.ad_features(contexts, candidates, store)
    pipeline = ads_pipeline(variant=variant)
    with tempfile.TemporaryDirectory() as tmp:
        served = with_candidate_axis(Path(onnx_path), Path(tmp) / "model.onnx", {"SPARSE": sparse, "DENSE": dense})
        write_model(repo, build_model_config(pipeline.ranker), onnx_files(served))
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    add_entries(repo, [ads_entry(variant)], variant, info)
    return pipeline


# ---------------------------------------------------------------------------- in-process

class InProcessAds:
    """rank_ads in-process: the repository's own artifacts and python-model functions
    (``ranker="obd_ranker_<variant>"``: the ``rank_ads_<variant>`` ensemble)."""

    def __init__(self, repo: Path, threads: int = 2, ranker: str = RANKER):
        repo = Path(repo)
        self.store = features_module.AdFeatureStore.load(latest_version_dir(repo, FEATURES))
        self.session = cpu_session(latest_version_dir(repo, ranker) / "model.onnx", threads)

    def rank(self, contexts, candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
        contexts = np.asarray(contexts, dtype=np.int64)
        candidates = np.asarray(candidates, dtype=np.int64).reshape(len(contexts), -1)
        sparse, dense, valid = features_module.ad_features(contexts, candidates, self.store)
        scores = self.session.run(["SCORES"], {"SPARSE": sparse, "DENSE": dense})[0]
        k = rank_topk_module.parse_k(np.array([k], dtype=np.int32), candidates.shape[1], "the number of candidates")
        return rank_topk_module.rank_top_k(scores, candidates, valid, k)


def ad_requests(contexts: np.ndarray, candidates: np.ndarray, k: int) -> Requests:
    contexts = np.asarray(contexts, dtype=np.int64)
    return {"CONTEXT": contexts, "CANDIDATES": np.asarray(candidates, dtype=np.int64).reshape(len(contexts), -1),
            "K": k_column(len(contexts), k)}


def campaign_candidates(store, rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """[rows, n] distinct ads of one campaign per row (a page shows one campaign's ads)."""
    campaign = store.item_sparse[1:, -1]
    groups = [store.item_ids[campaign == c] for c in np.unique(campaign)]
    picks = rng.integers(0, len(groups), size=rows)
    return np.stack([rng.choice(groups[g], size=min(n, len(groups[g])), replace=False) for g in picks])


@register_scenario("obd")
class AdsScenario(Scenario):
    summary = "fashion ads with position bias: a context's K best of the candidate ads (DCN-v2, slot fixed)"

    def handles(self, models: Mapping[str, str]) -> bool:
        return model_entry(models["run"]).task == "obd_ctr"

    def demo_runs(self) -> dict[str, DemoRun]:
        return {"run": DemoRun("dcn_v2_context", dataset="obd")}

    def contracts(self) -> tuple[Contract, ...]:
        spec = rank_ads_spec()
        notes = ("CONTEXT: the four hashed user features as int64 (first 15 hex digits); SCORES are "
                 f"logits with every ad at slot {SERVED_POSITION}; an unseen context value reads the "
                 "'unknown' row; unknown, repeated or no candidates and K outside 1..N are INVALID_ARGUMENT")
        return (Contract.of(spec, notes, entry=ENSEMBLE),
                Contract.of(spec, "a compressed ranker; " + notes, entry=f"{ENSEMBLE}_<variant>",
                            steps=(FEATURES, f"{RANKER}_<variant>", "rank_topk")))

    def export(self, job: ExportJob) -> ExportReport:
        run = job.run()
        if not isinstance(run.model, ContextDCN):
            raise AdsExportError(f"the obd scenario serves dcn_v2_context runs, not {run.config.model}")
        parity = export_obd(run.model, job.dataset, job.repo, run.card)
        return ExportReport((ENSEMBLE,), {"ONNX obd_ranker vs PyTorch on real contexts and ads":
                                          max(parity.max_abs_diff.values())},
                            (f"served features equal the training features (slot {SERVED_POSITION})",))

    def add_variant(self, repo: Path, onnx_path: Path, slug: str, info: dict | None = None) -> list[str]:
        pipeline = add_ads_variant(repo, onnx_path, slug, info)
        return [pipeline.ranker.name, pipeline.ensemble.name]

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        ranker = InProcessAds(repo, threads, entry.reference.get("ranker", RANKER))

        def pipeline(requests: Requests) -> Answer:
            ids, scores = ranker.rank(requests["CONTEXT"], requests["CANDIDATES"], int(requests["K"][0, 0]))
            return {"ITEM_IDS": ids, "SCORES": scores}
        return pipeline

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        store = self._store(repo)
        contexts, candidates = sample_requests(store, n_contexts=7, n_candidates=2 * k, seed=3)
        return [ad_requests(contexts, candidates, k), ad_requests(contexts[:2], candidates[:2, :3], 3)]

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        store = self._store(repo)
        rng = np.random.default_rng(seed)
        contexts = store.contexts[rng.integers(0, len(store.contexts), size=n)]
        return ad_requests(contexts, campaign_candidates(store, n, PERF_CANDIDATES, rng), min(k, PERF_CANDIDATES))

    def swappable_model(self, entry: Entry) -> str:
        return entry.reference.get("ranker", RANKER)

    @staticmethod
    def _store(repo: Path):
        return features_module.AdFeatureStore.load(latest_version_dir(repo, FEATURES))
