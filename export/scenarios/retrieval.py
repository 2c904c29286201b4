"""The retrieval scenario ("you may like"): user id -> the K best items the user has not seen.

    recdeploy export --run runs/demo --repository model_repository

Entries (one contract: USER_ID INT64 [B,1], K INT32 [B,1] -> ITEM_IDS INT64 [B,K],
SCORES FP32 [B,K]; the user's seen items removed; unknown users get the most popular items):
- ``recommend``: feature_lookup (python) -> scorer (ONNX, parity-checked against PyTorch on
  real users) -> topk (python); ``recommend_<variant>`` the same through ``scorer_<variant>``
  (a compressed scorer from ``recdeploy compress``);
- ``recommend_fused`` (one ONNX graph), ``recommend_fused_libtorch`` and the plain model
  ``fused_retrieval_libtorch`` (the same graph as TorchScript), ``recommend_fused_aoti`` and
  ``fused_retrieval_aoti`` (the graph as a torch.export + AOTInductor package, where a C++
  compiler is at hand) for dot-product scorers, each checked against the three-step numpy
  path at export (see ``export/fused.py``, ``export/fused_aoti.py``);
- ``recommend_ann_hnsw`` / ``recommend_ann_ivfpq`` (``recdeploy export --ann hnsw,ivfpq``):
  feature_lookup -> ann_<kind> (python: a FAISS index over the same item matrix, seen items
  filtered from an over-fetched candidate list, exact search where too few survive); an
  approximation of ``recommend``, its recall measured at export (see ``export/ann.py``).
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from recdeploy.export.ann import InProcessAnn, write_ann_models
from recdeploy.export.ann_index import AnnConfig
from recdeploy.export.feature_store import StoreSpec, store_files, write_redis_store
from recdeploy.export.fused import (
    dot_product_parts,
    fused_from_repository,
    onnx_runner,
    torchscript_runner,
    write_fused_variant,
)
from recdeploy.export.fused_aoti import AotiUnavailable, aoti_runner, write_fused_aoti_variant
from recdeploy.export.repository import clear_repository, npy_bytes, write_model
from recdeploy.export.retrieval_specs import (
    RetrievalPipeline,
    ensemble_spec,
    retrieval_pipeline,
)
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
    ScenarioError,
    add_entries,
    canary_users,
    check_fingerprint,
    contract_pipeline,
    latest_version_dir,
    read_metadata,
    shuffled_user_rows,
    user_requests,
    write_metadata,
)
from recdeploy.export.triton_config import build_ensemble_config, build_model_config
from recdeploy.export.triton_python import load_python_model, python_model_files
from recdeploy.train.data import Dataset, item_popularity
from recdeploy.train.models import model_entry
from recdeploy.train.onnx_io import (
    ParityReport,
    check_parity,
    cpu_session,
    export_onnx,
    onnx_files,
)

lookup_module = load_python_model("feature_lookup")
topk_module = load_python_model("topk")

# the protocols whose models score a user against the whole catalogue
RETRIEVAL_TASKS = frozenset({"retrieval_loo", "retrieval_random", "rating", "rating_cv"})
THREE_STEP = "steps"
ANN = "ann"
# reference kinds whose runtime (torch.topk) promises no order among equal scores
TORCH_KINDS = frozenset({"torchscript", "aoti"})


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


def write_python_models(repo: Path, pipeline: RetrievalPipeline, features: FeatureArrays,
                        store: StoreSpec | None = None) -> None:
    """feature_lookup reads the baked CSR, or (``store``) Redis written here; topk the catalogue."""
    if store is None:
        user_files = {"seen_indptr.npy": npy_bytes(features.seen_indptr),
                      "seen_items.npy": npy_bytes(features.seen_items)}
    else:
        write_redis_store(store, features.user_ids, {"seen": (features.seen_indptr, features.seen_items)},
                          features.item_ids, {"scenario": "retrieval"})
        user_files = store_files(store)
    write_model(repo, build_model_config(pipeline.lookup), {
        **python_model_files("feature_lookup"), "user_ids.npy": npy_bytes(features.user_ids), **user_files})
    write_model(repo, build_model_config(pipeline.topk), {
        **python_model_files("topk"),
        "item_ids.npy": npy_bytes(features.item_ids),
        "popularity.npy": npy_bytes(features.popularity)})


def write_scorer_variant(repo: Path, onnx_path: Path, n_items: int, variant: str = "") -> RetrievalPipeline:
    """Add scorer[_variant] + recommend[_variant] for an ONNX file taking USER_INDEX."""
    pipeline = retrieval_pipeline(n_items, variant)
    write_model(repo, build_model_config(pipeline.scorer), onnx_files(onnx_path))
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    return pipeline


def three_step_entry(pipeline: RetrievalPipeline, variant_of: str = "") -> Entry:
    return Entry(pipeline.ensemble.name, "retrieval", {"kind": THREE_STEP, "scorer": pipeline.scorer.name},
                 variant_of=variant_of)


def sample_user_indices(n_users: int, n: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_users, size=min(n, n_users), replace=False)).astype(np.int64)


def write_retrieval(model, ds: Dataset, repo: Path, store: StoreSpec | None = None,
                    ann: tuple[AnnConfig, ...] = ()) -> tuple[ParityReport, list[Entry], list[str]]:
    """Write the retrieval models into ``repo`` (not cleared); returns parity, entries and
    notes (a variant left out, and why).

    model: any model with ``retrieval_scorer()`` (USER_INDEX -> SCORES). store: read users'
    seen items from this Redis store instead of the baked arrays. ann: the ANN indexes to
    build beside the exact entries (dot-product scorers only)."""
    scorer = model.retrieval_scorer().eval()
    users = sample_user_indices(ds.n_users).reshape(-1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(scorer, {"USER_INDEX": users}, ["SCORES"], Path(tmp) / "model.onnx")
        parity = check_parity(scorer, onnx_path, {"USER_INDEX": users}, ["SCORES"])
        pipeline = write_scorer_variant(repo, onnx_path, ds.n_items)
    features = build_feature_arrays(ds)
    write_python_models(repo, pipeline, features, store)
    entries, notes = [three_step_entry(pipeline)], []
    parts = dot_product_parts(scorer)
    if store is not None:
        notes.append("fused and ANN entries left out: their references read the seen items baked at "
                     "export, the Redis store's live updates would not reach them")
    elif parts is not None:  # a dot-product scorer folds into one graph
        with torch.no_grad():
            all_scores = scorer(torch.arange(ds.n_users)[:, None]).numpy()
        check_users = ds.user_ids[users[:, 0]]
        fused = write_fused_variant(repo, scorer, features, check_users, all_scores)
        try:
            fused |= write_fused_aoti_variant(repo, fused_from_repository(scorer, features), features,
                                              check_users, all_scores)
        except AotiUnavailable as why:
            notes.append(f"recommend_fused_aoti left out: {why}")
        entries += [Entry(name, "retrieval", reference, exact_ties=reference["kind"] not in TORCH_KINDS)
                    for name, reference in fused.items()]
        ann_entries, ann_notes = write_ann_entries(repo, parts, features, ann)
        entries, notes = entries + ann_entries, notes + ann_notes
    elif ann:
        notes.append(f"ANN entries left out: {type(scorer).__name__} is not a dot-product scorer")
    return parity, entries, notes


def write_ann_entries(repo: Path, parts, features: FeatureArrays, configs: tuple[AnnConfig, ...]
                      ) -> tuple[list[Entry], list[str]]:
    """ann_<kind> + recommend_ann_<kind> per config beside a written ``feature_lookup``; parts:
    ``dot_product_parts`` of the scorer (its tables already hold the bias as a column)."""
    entries, notes = [], []
    for written in write_ann_models(repo, configs, parts[0], parts[1], features):
        info = written.info
        entries.append(Entry(written.ensemble.name, "retrieval", {"kind": ANN, "model": written.model.name},
                             variant_of="recommend"))
        notes.append(f"{written.ensemble.name}: recall@{info['k']} vs exact {info['recall_at_k']:.3f} on "
                     f"real users, over-fetch {info['overfetch']}, exact fallback {info['fallback_rate']:.1%}, "
                     f"index {info['index_bytes'] / 2**20:.1f} MiB + {info['rerank'].upper()} re-rank catalogue "
                     f"{info['rerank_bytes'] / 2**20:.1f} MiB (flat FP32 {info['flat_bytes'] / 2**20:.1f} MiB)")
    return entries, notes


def export_retrieval(model, ds: Dataset, repo: Path, card: dict | None = None,
                     store: StoreSpec | None = None, ann: tuple[AnnConfig, ...] = ()) -> ParityReport:
    """A repository holding only the retrieval scenario (cleared first), with its manifest."""
    check_fingerprint(card, ds)
    repo = Path(repo)
    clear_repository(repo)
    parity, entries, notes = write_retrieval(model, ds, repo, store, ann)
    write_metadata(repo, "retrieval", ds, entries, n_users=ds.n_users, n_items=ds.n_items,
                   onnx_parity_max_abs_diff=parity.max_abs_diff, card=card or {}, notes=notes)
    return parity


# ---------------------------------------------------------------------------- in-process

class InProcessRecommender:
    """``recommend`` (or ``recommend_<variant>`` with ``variant_scorer``) in-process: the
    repository's own artifacts (latest versions) and the very numpy functions the python
    models run, so "served equals offline" compares Triton's plumbing, not two codes."""

    def __init__(self, repo: Path, variant_scorer: str = "scorer", threads: int = 2):
        repo = Path(repo)
        self.table = lookup_module.open_user_store(latest_version_dir(repo, "feature_lookup"))
        topk = latest_version_dir(repo, "topk")
        self.item_ids = topk_module.load_npy(topk, "item_ids")
        self.popularity = topk_module.load_npy(topk, "popularity")
        self.session = cpu_session(latest_version_dir(repo, variant_scorer) / "model.onnx", threads)

    def recommend(self, user_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index, seen, known = lookup_module.lookup_users(np.asarray(user_ids, dtype=np.int64), self.table)
        scores = self.session.run(["SCORES"], {"USER_INDEX": index})[0]
        k = topk_module.parse_k(np.array([k], dtype=np.int32), len(self.item_ids))
        return topk_module.top_k(scores, seen, known, k, self.popularity, self.item_ids)


def known_user_ids(repo: Path, lookup: str = "feature_lookup") -> np.ndarray:
    return lookup_module.load_npy(latest_version_dir(repo, lookup), "user_ids").astype(np.int64)


@register_scenario("retrieval")
class RetrievalScenario(Scenario):
    summary = "\"you may like\": a user's top-K unseen items (two-tower, MF, NeuMF)"

    online_store = True

    def handles(self, models: Mapping[str, str]) -> bool:
        return bool(set(model_entry(models["run"]).tasks) & RETRIEVAL_TASKS)

    def demo_runs(self) -> dict[str, DemoRun]:
        return {"run": DemoRun("two_tower")}

    def contracts(self) -> tuple[Contract, ...]:
        spec = ensemble_spec()
        notes = ("seen items removed; unknown users get the most popular items; "
                 "a bad K is INVALID_ARGUMENT")
        steps = tuple(step.model_name for step in spec.steps)
        return (Contract("recommend", spec.inputs, spec.outputs, steps, notes, SEEN_REMOVED),
                Contract("recommend_<variant>", spec.inputs, spec.outputs,
                         ("feature_lookup", "scorer_<variant>", "topk"), "a compressed scorer; " + notes, SEEN_REMOVED),
                Contract("recommend_fused", spec.inputs, spec.outputs, ("fused_retrieval",),
                         "one ONNX graph (dot-product scorers); " + notes, SEEN_REMOVED),
                Contract("recommend_fused_libtorch", spec.inputs, spec.outputs,
                         ("fused_retrieval_libtorch",), "the same graph as TorchScript; " + notes, SEEN_REMOVED),
                Contract("fused_retrieval_libtorch", spec.inputs, spec.outputs, (),
                         "the TorchScript model called directly (no ensemble); " + notes, SEEN_REMOVED),
                Contract("recommend_fused_aoti", spec.inputs, spec.outputs, ("fused_retrieval_aoti",),
                         "the same graph as an AOTInductor package (model.pt2; needs a C++ compiler "
                         "at export, recdeploy's native backend to serve); " + notes, SEEN_REMOVED),
                Contract("fused_retrieval_aoti", spec.inputs, spec.outputs, (),
                         "the AOTInductor package called directly (no ensemble); " + notes, SEEN_REMOVED),
                Contract("recommend_ann_<hnsw|ivfpq>", spec.inputs, spec.outputs, ("feature_lookup", "ann_<kind>"),
                         "approximate (FAISS; export --ann); seen items filtered from an over-fetched list, "
                         "exact search where too few survive; " + notes, SEEN_REMOVED))

    def export(self, job: ExportJob) -> ExportReport:
        run = job.run()
        parity = export_retrieval(run.model, job.dataset, job.repo, run.card, job.options.get("feature_store"),
                                  tuple(job.options.get("ann", ())))
        meta = read_metadata(job.repo)
        return ExportReport(tuple(meta["ensembles"]),
                            {f"ONNX scorer vs PyTorch on {parity.n_rows} real users":
                             max(parity.max_abs_diff.values())}, tuple(meta.get("notes", ())))

    def add_variant(self, repo: Path, onnx_path: Path, slug: str, info: dict | None = None) -> list[str]:
        """scorer_<slug> + recommend_<slug> beside the full model, sharing its lookup and topk."""
        meta = read_metadata(repo)
        width = onnx.load(str(onnx_path), load_external_data=False).graph.output[0]
        n_items = width.type.tensor_type.shape.dim[-1].dim_value
        if meta.get("n_items") != n_items:
            raise ExportError(f"variant {slug!r} scores {n_items} items but {repo} serves "
                              f"{meta.get('n_items')}: export the same run first")
        pipeline = write_scorer_variant(Path(repo), Path(onnx_path), n_items, slug)
        add_entries(repo, [three_step_entry(pipeline, variant_of="recommend")], slug, info)
        return [pipeline.scorer.name, pipeline.ensemble.name]

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        kind = entry.reference.get("kind")
        if kind == THREE_STEP:
            recommender = InProcessRecommender(repo, entry.reference["scorer"], threads)
            return contract_pipeline(lambda users, k: recommender.recommend(users[:, 0], int(k[0, 0])))
        folder = latest_version_dir(repo, entry.reference.get("model", ""))
        if kind == ANN:
            ann = InProcessAnn(latest_version_dir(repo, "feature_lookup"), folder, threads)
            return contract_pipeline(lambda users, k: ann.recommend(users[:, 0], int(k[0, 0])))
        if kind == "onnx":
            return contract_pipeline(onnx_runner(folder / "model.onnx", threads))
        if kind in TORCH_KINDS:
            torch.set_num_threads(threads)
            if kind == "aoti":
                return contract_pipeline(aoti_runner(folder / "model.pt2"))
            return contract_pipeline(torchscript_runner(folder / "model.pt"))
        raise ScenarioError(f"entry {entry.name!r}: unknown reference kind {kind!r}")

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        users = canary_users(known_user_ids(repo))
        return [user_requests(users, k), user_requests(users[:2], 1)]

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        return shuffled_user_rows(known_user_ids(repo), k, n, seed)

    def swappable_model(self, entry: Entry) -> str:
        if entry.reference.get("kind") != THREE_STEP:
            raise ScenarioError(f"{entry.name} serves an index or one fused model: re-export instead of a swap")
        return entry.reference["scorer"]

