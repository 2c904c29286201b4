"""The grocery next-basket scenario: basket_lookup -> basket_scorer -> topk, repeats allowed.

    recdeploy train --model basket_knn --dataset instacart --out runs/basket_knn-instacart
    recdeploy export --run runs/basket_knn-instacart --repository repo_grocery
    recdeploy demo --scenario grocery

Ensemble ``recommend_basket``: USER_ID INT64 [B,1], K INT32 [B,1] -> ITEM_IDS INT64 [B,K],
SCORES FP32 [B,K]: the K products the user most likely buys in the next order. Unlike the
movie scenarios the user's past purchases are *kept* (most of a grocery basket is bought
again): the lookup hands topk no seen items. Steps:
- ``basket_lookup`` (python): every purchase of the user (item, basket age), repeats
  included, from the feature store; an unknown id (no orders) is a cold start;
- ``basket_scorer`` (ONNX, parity-checked against PyTorch on real histories, empty ones
  included): the ``basket_knn`` model, personal recency-weighted frequency blended with
  item-kNN neighbours, over the whole catalogue;
- ``topk`` (python, the retrieval scenario's own): the K best, popularity for cold starts,
  a K outside 1..catalogue is INVALID_ARGUMENT.
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.export.repository import clear_repository, npy_bytes, write_model
from recdeploy.export.retrieval_specs import MAX_BATCH, topk_spec
from recdeploy.export.scenarios import register_scenario
from recdeploy.export.scenarios.base import (
    SEEN_KEPT,
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
    shuffled_user_rows,
    user_requests,
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
from recdeploy.train.baskets import UserHistories, user_histories
from recdeploy.train.data import Dataset, item_popularity
from recdeploy.train.models import model_entry
from recdeploy.train.models.basket_knn import BasketKNN
from recdeploy.train.onnx_io import ParityReport, check_parity, cpu_session, export_onnx, onnx_files

ENSEMBLE = "recommend_basket"
LOOKUP = "basket_lookup"
SCORER = "basket_scorer"
HISTORY = ("HISTORY_ITEMS", "HISTORY_AGES")
lookup_module = load_python_model(LOOKUP)
topk_module = load_python_model("topk")


class GroceryExportError(ExportError):
    pass


# ---------------------------------------------------------------------------- specs (pure)

@dataclass(frozen=True)
class GroceryPipeline:
    lookup: ModelSpec
    scorer: ModelSpec
    topk: ModelSpec
    ensemble: EnsembleSpec

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return (self.lookup, self.scorer, self.topk)


def basket_lookup_spec(max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(
        name=LOOKUP, backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)),),
        outputs=(*(TensorSpec(name, "INT64", (-1,)) for name in HISTORY),
                 TensorSpec("SEEN_ITEMS", "INT64", (-1,)), TensorSpec("IS_KNOWN", "BOOL", (1,))))


def basket_scorer_spec(n_items: int, max_batch: int = MAX_BATCH, threads: int = 2) -> ModelSpec:
    return ModelSpec(
        name=SCORER, platform="onnxruntime_onnx", max_batch_size=max_batch,
        inputs=tuple(TensorSpec(name, "INT64", (-1,)) for name in HISTORY),
        outputs=(TensorSpec("SCORES", "FP32", (n_items,)),),
        parameters=(("intra_op_thread_count", str(threads)),))


def recommend_basket_spec(max_batch: int = MAX_BATCH) -> EnsembleSpec:
    return EnsembleSpec(
        name=ENSEMBLE, max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))),
        steps=(
            EnsembleStep(LOOKUP, {"USER_ID": "USER_ID"},
                         {"HISTORY_ITEMS": "history_items", "HISTORY_AGES": "history_ages",
                          "SEEN_ITEMS": "seen_items", "IS_KNOWN": "is_known"}),
            EnsembleStep(SCORER, {"HISTORY_ITEMS": "history_items", "HISTORY_AGES": "history_ages"},
                         {"SCORES": "all_scores"}),
            EnsembleStep("topk", {"SCORES": "all_scores", "SEEN_ITEMS": "seen_items",
                                  "IS_KNOWN": "is_known", "K": "K"},
                         {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}),
        ))


def grocery_pipeline(n_items: int, max_batch: int = MAX_BATCH) -> GroceryPipeline:
    pipeline = GroceryPipeline(lookup=basket_lookup_spec(max_batch), scorer=basket_scorer_spec(n_items, max_batch),
                               topk=topk_spec(n_items, max_batch), ensemble=recommend_basket_spec(max_batch))
    check_ensemble(pipeline.ensemble, {m.name: m for m in pipeline.models})
    return pipeline


# ---------------------------------------------------------------------------- export + checks

def parity_cases(history: UserHistories, n: int = 32) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real histories: typical (random users), long (the longest ones, hundreds of rows),
    short (each user's last 1-3 purchases) and empty (no orders: all padding)."""
    lengths = history.lengths()
    users = np.random.default_rng(0).choice(history.n_users, size=min(n, history.n_users), replace=False)
    longest = np.argsort(-lengths, kind="stable")[:min(8, history.n_users)]
    short_items, short_ages = history.padded(users[:8], width=3)
    return {"typical": history.padded(users), "long": history.padded(longest),
            "short": (short_items, short_ages),
            "empty": (np.full((4, 1), -1, np.int64), np.full((4, 1), -1, np.int64))}


def export_grocery(model: BasketKNN, ds: Dataset, repo: Path, card: dict | None = None) -> dict[str, ParityReport]:
    """Write the grocery repository (cleared first) for a trained basket_knn; returns the
    ONNX-vs-PyTorch parity per case. The feature store holds every order of every user."""
    check_fingerprint(card, ds)
    if not isinstance(model, BasketKNN):
        raise GroceryExportError(f"the grocery scenario serves basket_knn runs, not {type(model).__name__}")
    if model.n_items != ds.n_items or np.any(np.diff(ds.user_ids) <= 0):
        raise GroceryExportError(f"model scores {model.n_items} items but {ds.name} has {ds.n_items} "
                                 "(or its user ids are not sorted and unique)")
    repo = Path(repo)
    clear_repository(repo)
    history = user_histories(ds)
    pipeline = grocery_pipeline(ds.n_items)
    cases = parity_cases(history)
    axes = {**{name: {0: "batch", 1: "length"} for name in HISTORY}, "SCORES": {0: "batch"}}
    with tempfile.TemporaryDirectory() as tmp:
        typical = dict(zip(HISTORY, cases["typical"]))
        onnx_path = export_onnx(model.eval(), typical, ["SCORES"], Path(tmp) / "model.onnx", dynamic_axes=axes)
        parity = {case: check_parity(model, onnx_path, dict(zip(HISTORY, arrays)), ["SCORES"], 1e-6, 1e-4)
                  for case, arrays in cases.items()}
        write_model(repo, build_model_config(pipeline.scorer), onnx_files(onnx_path))
    write_model(repo, build_model_config(pipeline.lookup), {
        **python_model_files(LOOKUP), "user_ids.npy": npy_bytes(ds.user_ids.astype(np.int64)),
        "history_indptr.npy": npy_bytes(history.indptr), "history_items.npy": npy_bytes(history.items),
        "history_ages.npy": npy_bytes(history.ages)})
    write_model(repo, build_model_config(pipeline.topk), {
        **python_model_files("topk"), "item_ids.npy": npy_bytes(ds.item_ids.astype(np.int64)),
        "popularity.npy": npy_bytes(item_popularity(ds, np.arange(ds.n_interactions)))})
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    write_metadata(repo, "grocery", ds, [Entry(ENSEMBLE, "grocery", {"kind": "steps"})],
                   n_users=ds.n_users, n_items=ds.n_items,
                   onnx_parity_max_abs_diff={c: r.max_abs_diff["SCORES"] for c, r in parity.items()},
                   card=card or {})
    return parity


# ---------------------------------------------------------------------------- in-process

class GroceryInProcess:
    """recommend_basket in-process: the repository's own artifacts and python-model functions."""

    def __init__(self, repo: Path, threads: int = 2):
        repo = Path(repo)
        self.table = lookup_module.BasketTable.load(latest_version_dir(repo, LOOKUP))
        topk = latest_version_dir(repo, "topk")
        self.item_ids = topk_module.load_npy(topk, "item_ids")
        self.popularity = topk_module.load_npy(topk, "popularity")
        self.session = cpu_session(latest_version_dir(repo, SCORER) / "model.onnx", threads)

    def score_history(self, items: np.ndarray, ages: np.ndarray) -> np.ndarray:
        return self.session.run(["SCORES"], {"HISTORY_ITEMS": np.asarray(items, np.int64),
                                             "HISTORY_AGES": np.asarray(ages, np.int64)})[0]

    def recommend(self, user_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        items, ages, seen, known = lookup_module.lookup_baskets(np.asarray(user_ids, np.int64), self.table)
        scores = self.score_history(items, ages)
        k = topk_module.parse_k(np.array([k], dtype=np.int32), len(self.item_ids))
        return topk_module.top_k(scores, seen, known, k, self.popularity, self.item_ids)


@register_scenario("grocery")
class GroceryScenario(Scenario):
    summary = "grocery next basket: the products a user likely buys next, repeats allowed (basket_knn)"

    def handles(self, models: Mapping[str, str]) -> bool:
        return model_entry(models["run"]).task == "next_basket"

    def demo_runs(self) -> dict[str, DemoRun]:
        return {"run": DemoRun("basket_knn", dataset="instacart")}

    def contracts(self) -> tuple[Contract, ...]:
        spec = recommend_basket_spec()
        return (Contract.of(spec,
                            "every purchase from the feature store; bought items are kept (repeat purchases); "
                            "an unknown user (no orders) gets the most popular products; a K outside "
                            "1..catalogue is INVALID_ARGUMENT", SEEN_KEPT, entry=ENSEMBLE),)

    def export(self, job: ExportJob) -> ExportReport:
        run = job.run()
        if not isinstance(run.model, BasketKNN):
            raise GroceryExportError(f"the grocery scenario serves basket_knn runs, not {run.config.model}")
        parity = export_grocery(run.model, job.dataset, job.repo, run.card)
        return ExportReport((ENSEMBLE,), {f"ONNX basket_knn vs PyTorch, {case} histories": r.max_abs_diff["SCORES"]
                                          for case, r in parity.items()})

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        recommender = GroceryInProcess(repo, threads)
        return contract_pipeline(lambda users, k: recommender.recommend(users[:, 0], int(k[0, 0])))

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        users = canary_users(self._users(repo))
        return [user_requests(users, k), user_requests(users[:2], 1)]

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        return shuffled_user_rows(self._users(repo), k, n, seed)

    def swappable_model(self, entry: Entry) -> str:
        return SCORER

    @staticmethod
    def _users(repo: Path) -> np.ndarray:
        return lookup_module.load_npy(latest_version_dir(repo, LOOKUP), "user_ids").astype(np.int64)
