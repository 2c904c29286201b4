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

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

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
    canary_users,
    check_fingerprint,
    k_column,
    latest_version_dir,
    read_metadata,
    write_metadata,
)
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
from recdeploy.train.onnx_io import (
    OnnxParityError,
    ParityReport,
    check_parity,
    cpu_session,
    export_onnx,
    onnx_files,
)

N_SPARSE, N_DENSE = 6, 3
FEATURE_TENSORS = ("SPARSE", "GENRES", "DENSE")
# candidates per perf_analyzer request: what a ranking stage typically scores
PERF_CANDIDATES = 100


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
    check_fingerprint(card, ds)
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
        write_model(repo, build_model_config(pipeline.ranker), onnx_files(onnx_path))
    write_model(repo, build_model_config(pipeline.features), {
        **python_model_files("ranking_features"),
        "user_ids.npy": npy_bytes(ds.user_ids.astype(np.int64)),
        "item_ids.npy": npy_bytes(ds.item_ids.astype(np.int64)),
        **{f"{name}.npy": npy_bytes(getattr(store, name)) for name in features_module.TABLES}})
    write_model(repo, build_model_config(pipeline.topk), {**python_model_files("rank_topk")})
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    return parity


def rank_entry(variant: str = "") -> Entry:
    return Entry(rank_ensemble_spec(variant=variant).name, "ranking", {"kind": "steps", "ranker": ranker_name(variant)},
                 variant_of="rank" if variant else "")


def export_ranking(model, ds: Dataset, repo: Path, card: dict | None = None) -> ParityReport:
    """A repository holding only the ranking scenario (cleared first), with its manifest."""
    repo = Path(repo)
    check_compatible(model, ds, card)
    clear_repository(repo)
    parity = write_ranking(repo, model, ds, card)
    write_metadata(repo, "ranking", ds, [rank_entry()], onnx_parity_max_abs_diff=parity.max_abs_diff,
                   card=card or {})
    return parity


def probe_features(store, rows: int = 16, candidates: int = 4, seed: int = 7) -> dict[str, np.ndarray]:
    """Feature tensors [rows, candidates, ...] of real users and items from the served store."""
    rng = np.random.default_rng(seed)
    users = rng.choice(store.user_ids, size=rows).reshape(-1, 1)
    items = rng.choice(store.sorted_item_ids, size=(rows, candidates))
    sparse, genres, dense, _ = features_module.candidate_features(users, items, store)
    return dict(zip(FEATURE_TENSORS, (sparse, genres, dense)))


def with_candidate_axis(onnx_path: Path, out: Path, probe: dict[str, np.ndarray], atol: float = 1e-5) -> Path:
    """A copy of a ranker exported on [R, 1, ...] rows that takes [B, N, ...] like ``ranker``.

    The exported graph computes its shapes at run time; only the declared axis 1 is fixed. The
    copy declares it symbolic, then must score ``probe`` ([B, N, ...]) exactly as the original
    scores the same rows laid out as [B*N, 1, ...], or OnnxParityError is raised.
    """
    model = onnx.load(str(onnx_path))
    for tensor in [*model.graph.input, *model.graph.output]:
        axis = tensor.type.tensor_type.shape.dim[1]
        axis.ClearField("dim_value")
        axis.dim_param = "candidates"
    del model.graph.value_info[:]           # shapes inferred for N = 1 would contradict N > 1
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    batch, n = probe["SPARSE"].shape[:2]
    flat = {name: value.reshape(batch * n, 1, *value.shape[2:]) for name, value in probe.items()}
    rows = cpu_session(onnx_path).run(["SCORES"], flat)[0]
    wide = cpu_session(out).run(["SCORES"], probe)[0]
    if wide.shape != (batch, n):
        raise OnnxParityError("SCORES", float("inf"), atol, 0.0)
    diff = float(np.abs(wide.reshape(-1) - rows.reshape(-1)).max())
    if diff > atol:
        raise OnnxParityError("SCORES", diff, atol, 0.0)
    return out


def add_ranker_variant(repo: Path, onnx_path: Path, variant: str, info: dict | None = None) -> RankingPipeline:
    """ranker_<variant> + rank_<variant> beside the full ranker of an exported repository,
    sharing its ranking_features and rank_topk; recorded in recdeploy.json and the manifest.
    onnx_path takes the ranker's tensors per row ([R, 1, ...], as compress measures them) or
    per request ([B, N, ...])."""
    repo = Path(repo)
    if not (repo / "ranking_features").is_dir():
        raise ExportError(f"{repo} has no exported ranking scenario (ranking_features); "
                          "run `recdeploy export` on the DCN-v2 run first")
    read_metadata(repo)
    store = features_module.FeatureStore.load(latest_version_dir(repo, "ranking_features"))
    n_genres = store.item_genres.shape[1]
    genres = next(t for t in onnx.load(str(onnx_path), load_external_data=False).graph.input
                  if t.name == "GENRES")
    width = genres.type.tensor_type.shape.dim[-1].dim_value
    if width != n_genres:
        raise ExportError(f"variant {variant!r} reads {width} genres but {repo} serves {n_genres}: "
                          "export the same run first")
    pipeline = ranking_pipeline(n_genres, variant=variant)
    with tempfile.TemporaryDirectory() as tmp:
        served = with_candidate_axis(Path(onnx_path), Path(tmp) / "model.onnx", probe_features(store))
        write_model(repo, build_model_config(pipeline.ranker), onnx_files(served))
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    add_entries(repo, [rank_entry(variant)], variant, info)
    return pipeline


# ---------------------------------------------------------------------------- in-process

class InProcessRanker:
    """The ``rank`` ensemble in-process, from the repository's own artifacts and numpy cores
    (``ranker="ranker_<variant>"``: the ``rank_<variant>`` ensemble)."""

    def __init__(self, repo: Path, threads: int = 2, ranker: str = "ranker"):
        repo = Path(repo)
        self.store = features_module.FeatureStore.load(latest_version_dir(repo, "ranking_features"))
        self.session = cpu_session(latest_version_dir(repo, ranker) / "model.onnx", threads)

    def rank(self, user_ids, candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1, 1)
        candidates = np.asarray(candidates, dtype=np.int64).reshape(len(users), -1)
        sparse, genres, dense, valid = features_module.candidate_features(users, candidates, self.store)
        scores = self.session.run(["SCORES"], {"SPARSE": sparse, "GENRES": genres, "DENSE": dense})[0]
        k = rank_topk_module.parse_k(np.array([k], dtype=np.int32), candidates.shape[1],
                                     "the number of candidates")
        return rank_topk_module.rank_top_k(scores, candidates, valid, k)


def candidate_requests(users: np.ndarray, candidates: np.ndarray, k: int) -> Requests:
    users = np.asarray(users, dtype=np.int64).reshape(-1, 1)
    return {"USER_ID": users, "CANDIDATES": np.asarray(candidates, dtype=np.int64).reshape(len(users), -1),
            "K": k_column(len(users), k)}


@register_scenario("ranking")
class RankingScenario(Scenario):
    summary = "ranking / CTR: a user's K best of the candidates given (DCN-v2)"

    def handles(self, models: Mapping[str, str]) -> bool:
        return "ctr" in model_entry(models["run"]).tasks

    def demo_runs(self) -> dict[str, DemoRun]:
        return {"run": DemoRun("dcn_v2")}

    def contracts(self) -> tuple[Contract, ...]:
        spec = rank_ensemble_spec()
        notes = ("SCORES are the ranker's logits (sigmoid: pCTR); unknown or repeated candidates "
                 "come last with id -1; unknown users use the ranker's unknown-user row; "
                 "K beyond the candidates is INVALID_ARGUMENT")
        return (Contract.of(spec, notes, entry="rank"),
                Contract.of(spec, "a compressed ranker; " + notes, entry="rank_<variant>",
                            steps=("ranking_features", "ranker_<variant>", "rank_topk")))

    def export(self, job: ExportJob) -> ExportReport:
        run = job.run()
        parity = export_ranking(run.model, job.dataset, job.repo, run.card)
        return ExportReport(("rank",), {"ONNX ranker vs PyTorch on real users and items":
                                        max(parity.max_abs_diff.values())})

    def add_variant(self, repo: Path, onnx_path: Path, slug: str, info: dict | None = None) -> list[str]:
        pipeline = add_ranker_variant(repo, onnx_path, slug, info)
        return [pipeline.ranker.name, pipeline.ensemble.name]

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        ranker = InProcessRanker(repo, threads, entry.reference.get("ranker", "ranker"))

        def pipeline(requests: Requests) -> Answer:
            ids, scores = ranker.rank(requests["USER_ID"], requests["CANDIDATES"], int(requests["K"][0, 0]))
            return {"ITEM_IDS": ids, "SCORES": scores}
        return pipeline

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        store = self._store(repo)
        users = canary_users(store.user_ids)
        rng = np.random.default_rng(3)
        candidates = rng.choice(store.sorted_item_ids, size=(len(users), 2 * k))
        candidates[:, -1] = -1                     # padding / an unknown id
        candidates[:, -2] = candidates[:, 0]       # a repeat
        return [candidate_requests(users, candidates, k)]

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        store = self._store(repo)
        rng = np.random.default_rng(seed)
        users = np.resize(store.user_ids[rng.permutation(len(store.user_ids))], n)
        candidates = rng.choice(store.sorted_item_ids, size=(n, PERF_CANDIDATES))
        return candidate_requests(users, candidates, min(k, PERF_CANDIDATES))

    def swappable_model(self, entry: Entry) -> str:
        return entry.reference.get("ranker", "ranker")

    @staticmethod
    def _store(repo: Path):
        return features_module.FeatureStore.load(latest_version_dir(repo, "ranking_features"))
