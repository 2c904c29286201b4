"""The multi-stage scenario (YouTube-style): retrieval top-N, then the CTR ranker's top-K.

    parity = export_multistage(two_tower, dcn, ds, Path("model_repository"), n_candidates=100)
    ids, scores = InProcessMultiStage(Path("model_repository")).recommend([42], k=10)

Ensemble ``recommend_multistage``: USER_ID INT64 [B,1], K INT32 [B,1] ->
ITEM_IDS INT64 [B,K], SCORES FP32 [B,K] (ranker logits), through
feature_lookup -> scorer (two-tower, ONNX) -> retrieve_topn (N from its config) ->
ranking_features -> ranker (DCN-v2, ONNX) -> rank_topk. The same repository also serves
``recommend`` (retrieval alone) and ``rank`` (ranking of given candidates), so the stages
can be measured apart. Unknown users: popular items as candidates, ranked with the
ranker's unknown-user row. K must be between 1 and N.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.export.repository import clear_repository, write_model
from recdeploy.export.retrieval_specs import MAX_BATCH, lookup_spec, scorer_spec
from recdeploy.export.scenarios import register_scenario
from recdeploy.export.scenarios.base import (
    SEEN_REMOVED,
    Contract,
    DemoRun,
    Entry,
    ExportError,
    ExportJob,
    ExportReport,
    Pipeline,
    Requests,
    Scenario,
    canary_users,
    check_fingerprint,
    contract_pipeline,
    latest_version_dir,
    read_metadata,
    shuffled_user_rows,
    user_requests,
    write_metadata,
)
from recdeploy.export.scenarios.ranking import (
    RESULT_OUTPUTS,
    InProcessRanker,
    check_compatible,
    rank_entry,
    rank_topk_spec,
    ranker_spec,
    ranking_features_spec,
    ranking_steps,
    write_ranking,
)
from recdeploy.export.scenarios.retrieval import RETRIEVAL_TASKS, write_retrieval
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
from recdeploy.train.onnx_io import ParityReport, cpu_session

ENSEMBLE = "recommend_multistage"
DEFAULT_CANDIDATES = 100
topn_module = load_python_model("retrieve_topn")
lookup_module = load_python_model("feature_lookup")


@dataclass(frozen=True)
class MultiStagePipeline:
    models: tuple[ModelSpec, ...]
    ensemble: EnsembleSpec


def retrieve_topn_spec(n_items: int, n_candidates: int, max_batch: int = MAX_BATCH) -> ModelSpec:
    if not 1 <= n_candidates <= n_items:
        raise ExportError(f"n_candidates must be between 1 and the catalogue size {n_items}, "
                          f"got {n_candidates}")
    return ModelSpec(
        name="retrieve_topn", backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("SCORES", "FP32", (n_items,)), TensorSpec("SEEN_ITEMS", "INT64", (-1,)),
                TensorSpec("IS_KNOWN", "BOOL", (1,))),
        outputs=(TensorSpec("CANDIDATES", "INT64", (n_candidates,)),),
        parameters=(("n_candidates", str(n_candidates)),))


def multistage_ensemble_spec(max_batch: int = MAX_BATCH) -> EnsembleSpec:
    return EnsembleSpec(
        name=ENSEMBLE, max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=RESULT_OUTPUTS,
        steps=(
            EnsembleStep("feature_lookup", {"USER_ID": "USER_ID"},
                         {"USER_INDEX": "user_index", "SEEN_ITEMS": "seen_items",
                          "IS_KNOWN": "is_known"}),
            EnsembleStep("scorer", {"USER_INDEX": "user_index"}, {"SCORES": "retrieval_scores"}),
            EnsembleStep("retrieve_topn", {"SCORES": "retrieval_scores", "SEEN_ITEMS": "seen_items",
                                           "IS_KNOWN": "is_known"}, {"CANDIDATES": "candidates"}),
            *ranking_steps("candidates"),
        ))


def multistage_pipeline(n_items: int, n_genres: int, n_candidates: int = DEFAULT_CANDIDATES,
                        max_batch: int = MAX_BATCH) -> MultiStagePipeline:
    models = (lookup_spec(max_batch), scorer_spec(n_items, max_batch=max_batch),
              retrieve_topn_spec(n_items, n_candidates, max_batch),
              ranking_features_spec(n_genres, max_batch), ranker_spec(n_genres, max_batch),
              rank_topk_spec(max_batch))
    pipeline = MultiStagePipeline(models=models, ensemble=multistage_ensemble_spec(max_batch))
    check_ensemble(pipeline.ensemble, {m.name: m for m in models})
    return pipeline


def export_multistage(retriever, ranker, ds: Dataset, repo: Path,
                      n_candidates: int = DEFAULT_CANDIDATES, retriever_card: dict | None = None,
                      ranker_card: dict | None = None) -> dict[str, ParityReport]:
    """Write recommend + rank + recommend_multistage into one (cleared) repository.

    retriever: a trained TwoTower; ranker: a trained DCNv2; both on ``ds``.
    Returns the ONNX parity report of each scorer.
    """
    repo = Path(repo)
    check_compatible(ranker, ds, ranker_card)
    check_fingerprint(retriever_card, ds)
    pipeline = multistage_pipeline(ds.n_items, ranker.n_genres, n_candidates)
    clear_repository(repo)
    scorer_parity, entries, notes = write_retrieval(retriever, ds, repo)
    parity = {"scorer": scorer_parity, "ranker": write_ranking(repo, ranker, ds, ranker_card)}
    topn = next(m for m in pipeline.models if m.name == "retrieve_topn")
    topk = latest_version_dir(repo, "topk")
    write_model(repo, build_model_config(topn), {
        **python_model_files("retrieve_topn"),
        "item_ids.npy": topk / "item_ids.npy", "popularity.npy": topk / "popularity.npy"})
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    entries += [rank_entry(), Entry(ENSEMBLE, "multistage", {"kind": "steps"})]
    write_metadata(repo, "multistage", ds, entries, n_users=ds.n_users, n_items=ds.n_items,
                   n_candidates=n_candidates,
                   onnx_parity_max_abs_diff={k: v.max_abs_diff for k, v in parity.items()},
                   card=retriever_card or {}, ranker_card=ranker_card or {}, notes=notes)
    return parity


class InProcessMultiStage:
    """``recommend_multistage`` in-process: the repository's artifacts and numpy cores."""

    def __init__(self, repo: Path, threads: int = 2):
        repo = Path(repo)
        self.table = lookup_module.open_user_store(latest_version_dir(repo, "feature_lookup"))
        folder = latest_version_dir(repo, "retrieve_topn")
        self.item_ids = lookup_module.load_npy(folder, "item_ids")
        self.popularity = lookup_module.load_npy(folder, "popularity")
        self.n = int(read_metadata(repo)["n_candidates"])
        self.retrieval = cpu_session(latest_version_dir(repo, "scorer") / "model.onnx", threads)
        self.ranker = InProcessRanker(repo, threads)

    def candidates(self, user_ids) -> np.ndarray:
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1, 1)
        index, seen, known = lookup_module.lookup_users(users, self.table)
        scores = self.retrieval.run(["SCORES"], {"USER_INDEX": index})[0]
        return topn_module.top_n_candidates(scores, seen, known, self.n, self.popularity, self.item_ids)

    def recommend(self, user_ids, k: int) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1, 1)
        return self.ranker.rank(users, self.candidates(users), k)


@register_scenario("multistage")
class MultiStageScenario(Scenario):
    summary = "YouTube-style: retrieval top-N, then the CTR ranker's top-K (two-tower + DCN-v2)"
    roles = ("run", "ranker")

    def handles(self, models: Mapping[str, str]) -> bool:
        return (bool(set(model_entry(models["run"]).tasks) & RETRIEVAL_TASKS)
                and "ctr" in model_entry(models["ranker"]).tasks)

    def demo_runs(self) -> dict[str, DemoRun]:
        return {"run": DemoRun("two_tower"), "ranker": DemoRun("dcn_v2")}

    def contracts(self) -> tuple[Contract, ...]:
        spec = multistage_ensemble_spec()
        return (Contract.of(spec, "the ranker orders the retriever's N unseen candidates; K <= N; unknown "
                            "users: popular candidates; the repository also serves recommend and rank",
                            SEEN_REMOVED, entry=ENSEMBLE),)

    def export(self, job: ExportJob) -> ExportReport:
        run, ranker = job.run("run"), job.run("ranker")
        n = int(job.options.get("candidates") or DEFAULT_CANDIDATES)
        parity = export_multistage(run.model, ranker.model, job.dataset, job.repo, n, run.card, ranker.card)
        meta = read_metadata(job.repo)
        return ExportReport(tuple(meta["ensembles"]),
                            {f"ONNX {name} vs PyTorch": max(report.max_abs_diff.values())
                             for name, report in parity.items()}, tuple(meta.get("notes", ())))

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        recommender = InProcessMultiStage(repo, threads)
        return contract_pipeline(lambda users, k: recommender.recommend(users, int(k[0, 0])))

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        users = canary_users(self._users(repo))
        return [user_requests(users, k), user_requests(users[:2], 1)]

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        return shuffled_user_rows(self._users(repo), k, n, seed)

    def swappable_model(self, entry: Entry) -> str:
        return "ranker"

    @staticmethod
    def _users(repo: Path) -> np.ndarray:
        return lookup_module.load_npy(latest_version_dir(repo, "feature_lookup"), "user_ids").astype(np.int64)
