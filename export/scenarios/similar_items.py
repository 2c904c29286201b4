"""The similar-items scenario ("more like this"): item id -> the K items most similar to it.

    recdeploy export --run runs/demo --scenario similar_items --repository repo_similar

Entries (one contract: ITEM_ID INT64 [B,1], K INT32 [B,1] -> ITEM_IDS INT64 [B,K], SCORES
FP32 [B,K]; the query item itself is never returned):
- ``similar_items``: item-kNN, cosine on the interaction matrix;
- ``similar_items_pearson``: item-kNN, shrunk Pearson on the ratings;
- ``similar_items_content``: cosine of genres, title words and release decade;
- ``similar_items_embedding``: cosine of the run's item vectors (two-tower, biased MF), when
  its model has them.
Each is item_lookup (python: raw id -> index) -> neighbours_<method> (python: the item's
precomputed top-N list, cut at K). The lists come from ``recdeploy.train.item_neighbours``
over all of the run's dataset (serving knows every interaction).

Precomputed lists, not a scorer: I x N ids and scores (12 bytes each) instead of an I x I
similarity or a scorer over the catalogue per request; a request costs a gather of K
entries, whatever the catalogue size (sizes: README, Scenarios). The price: K is at most N, and the
lists are rebuilt by a re-export when the data change. The brute-force build is O(I^2)
(``item_neighbours.MAX_ITEMS``); a catalogue of millions needs an ANN index.

An unknown item id (never in the catalogue, negative, past the largest) is not an error: it
gets the K most popular items scored by their interaction count, as an unknown user does in
the other scenarios, so one stale id cannot fail a batch. A K outside 1..N, a K that differs
within a request, or an ITEM_ID that is not [batch, 1] integers is INVALID_ARGUMENT.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recdeploy.export.repository import clear_repository, npy_bytes, write_model
from recdeploy.export.retrieval_specs import MAX_BATCH
from recdeploy.export.scenarios import register_scenario
from recdeploy.export.scenarios.base import (
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
from recdeploy.train.data import Dataset, item_popularity
from recdeploy.train.item_neighbours import (
    DEFAULT_SETTINGS,
    METHODS,
    NeighbourError,
    NeighbourLists,
    NeighbourSettings,
    neighbour_lists,
    next_item_quality,
)

SCENARIO = "similar_items"
LOOKUP = "item_lookup"
DEFAULT_METHOD = "cosine"        # the entry named plain ``similar_items``
lookup_module = load_python_model("item_lookup")
neighbours_module = load_python_model("neighbours")


# ---------------------------------------------------------------------------- specs (pure)

def entry_name(method: str) -> str:
    return SCENARIO if method == DEFAULT_METHOD else f"{SCENARIO}_{method}"


def neighbours_name(method: str) -> str:
    return f"neighbours_{method}"


def item_lookup_spec(max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(name=LOOKUP, backend="python", max_batch_size=max_batch,
                     inputs=(TensorSpec("ITEM_ID", "INT64", (1,)),),
                     outputs=(TensorSpec("ITEM_INDEX", "INT64", (1,)), TensorSpec("IS_KNOWN", "BOOL", (1,))))


def neighbours_spec(method: str, max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(name=neighbours_name(method), backend="python", max_batch_size=max_batch,
                     inputs=(TensorSpec("ITEM_INDEX", "INT64", (1,)), TensorSpec("IS_KNOWN", "BOOL", (1,)),
                             TensorSpec("K", "INT32", (1,))),
                     outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))))


def similar_items_spec(method: str, max_batch: int = MAX_BATCH) -> EnsembleSpec:
    spec = EnsembleSpec(
        name=entry_name(method), max_batch_size=max_batch,
        inputs=(TensorSpec("ITEM_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))),
        steps=(EnsembleStep(LOOKUP, {"ITEM_ID": "ITEM_ID"}, {"ITEM_INDEX": "item_index", "IS_KNOWN": "is_known"}),
               EnsembleStep(neighbours_name(method), {"ITEM_INDEX": "item_index", "IS_KNOWN": "is_known", "K": "K"},
                            {"ITEM_IDS": "ITEM_IDS", "SCORES": "SCORES"})))
    models = (item_lookup_spec(max_batch), neighbours_spec(method, max_batch))
    check_ensemble(spec, {m.name: m for m in models})
    return spec


# ---------------------------------------------------------------------------- export

def run_item_vectors(model) -> np.ndarray | None:
    """The run's item embeddings (I x D), or None for a model without ``item_vectors()``."""
    vectors = getattr(model, "item_vectors", None)
    return None if vectors is None else np.asarray(vectors().numpy(), dtype=np.float32)


def build_lists(ds: Dataset, vectors: np.ndarray | None,
                settings: NeighbourSettings = DEFAULT_SETTINGS) -> dict[str, NeighbourLists]:
    """Every method's lists over all of ds (the embedding's only with vectors)."""
    try:
        return {method: neighbour_lists(method, ds, vectors, settings) for method in METHODS
                if method != "embedding" or vectors is not None}
    except NeighbourError as error:
        raise ExportError(str(error)) from error


def write_similar_items(repo: Path, ds: Dataset, lists: Mapping[str, NeighbourLists]) -> list[Entry]:
    """item_lookup, one neighbours_<method> and one ensemble per method; returns the entries."""
    item_ids = ds.item_ids.astype(np.int64)
    if np.any(np.diff(item_ids) <= 0):
        raise ExportError("dataset item ids must be sorted and unique")
    popularity = item_popularity(ds, np.arange(ds.n_interactions))
    write_model(repo, build_model_config(item_lookup_spec()),
                {**python_model_files("item_lookup"), "item_ids.npy": npy_bytes(item_ids)})
    entries = []
    for method, found in lists.items():
        write_model(repo, build_model_config(neighbours_spec(method)), {
            **python_model_files("neighbours"), "neighbour_index.npy": npy_bytes(found.index),
            "neighbour_scores.npy": npy_bytes(found.scores), "item_ids.npy": npy_bytes(item_ids),
            "popularity.npy": npy_bytes(popularity)})
        write_model(repo, build_ensemble_config(similar_items_spec(method)), {})
        entries.append(Entry(entry_name(method), SCENARIO, {"kind": "neighbours", "model": neighbours_name(method)}))
    return entries


def embedding_check(lists: NeighbourLists, vectors: np.ndarray, n: int = 64) -> float:
    """Max |stored score - cosine of the PyTorch item vectors| over n items' lists."""
    rows = np.linspace(0, len(vectors) - 1, num=min(n, len(vectors))).astype(int)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    index = lists.index[rows]
    want = np.einsum("rd,rnd->rn", unit[rows].astype(np.float64), unit[np.maximum(index, 0)].astype(np.float64))
    return float(np.max(np.abs(np.where(index >= 0, lists.scores[rows] - want, 0.0)), initial=0.0))


# ---------------------------------------------------------------------------- in-process

class SimilarItemsInProcess:
    """One entry in-process: the repository's own arrays, the python models' numpy functions."""

    def __init__(self, repo: Path, model: str):
        self.table = lookup_module.ItemTable.load(latest_version_dir(repo, LOOKUP))
        self.neighbours = neighbours_module.NeighbourTable.load(latest_version_dir(repo, model))

    def similar(self, item_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index, known = lookup_module.lookup_items(np.asarray(item_ids), self.table)
        k = neighbours_module.parse_k(np.array([k], np.int32), self.neighbours.length,
                                      "the neighbour-list length")
        return neighbours_module.nearest(index, known, k, self.neighbours)


def item_requests(items: np.ndarray, k: int) -> Requests:
    items = np.asarray(items, dtype=np.int64).reshape(-1, 1)
    return {"ITEM_ID": items, "K": k_column(len(items), k)}


@register_scenario(SCENARIO)
class SimilarItemsScenario(Scenario):
    summary = ("\"more like this\": an item's top-K similar items (content, item-kNN, embeddings); "
               "export any run with --scenario similar_items")

    def handles(self, models: Mapping[str, str]) -> bool:
        return False   # its runs (a two-tower) also export as retrieval: ask with --scenario

    def demo_runs(self) -> dict[str, DemoRun]:
        # the item vectors of the embedding entry; 10 epochs keep the demo within minutes
        return {"run": DemoRun("two_tower", settings={"epochs": 10})}

    def contracts(self) -> tuple[Contract, ...]:
        notes = ("the query item never returned; -1 where fewer neighbours; unknown items get the "
                 "most popular items; K in 1..N (the list length) else INVALID_ARGUMENT")
        what = {"cosine": "item-kNN, cosine on interactions", "pearson": "item-kNN, shrunk Pearson on ratings",
                "content": "cosine of genres, title words, decade", "embedding": "cosine of the run's item vectors"}
        contracts = []
        for method in METHODS:
            spec = similar_items_spec(method)
            contracts.append(Contract.of(spec, f"{what[method]}; {notes}"))
        return tuple(contracts)

    def export(self, job: ExportJob) -> ExportReport:
        run, ds = job.run(), job.dataset
        check_fingerprint(run.card, ds)
        vectors = run_item_vectors(run.model)
        if vectors is not None and len(vectors) != ds.n_items:
            raise ExportError(f"the run's model has {len(vectors)} item vectors but {ds.name} has {ds.n_items} items")
        lists = build_lists(ds, vectors)
        repo = Path(job.repo)
        clear_repository(repo)
        entries = write_similar_items(repo, ds, lists)
        # the embedding is scored only where the run was fitted on the evaluation's own split
        loo_vectors = vectors if (run.card or {}).get("task") == "retrieval_loo" else None
        quality = next_item_quality(ds, loo_vectors)
        write_metadata(repo, SCENARIO, ds, entries, n_items=ds.n_items,
                       neighbours=int(next(iter(lists.values())).index.shape[1]),
                       next_item_quality=quality, card=run.card or {})
        parity = {} if vectors is None else {
            "embedding lists vs the cosine of the PyTorch item vectors": embedding_check(lists["embedding"], vectors)}
        notes = tuple(f"next item from the previous one (leave-one-out), {method}: HR@10 {q['hr@10']:.4f}, "
                      f"NDCG@10 {q['ndcg@10']:.4f}" for method, q in quality.items())
        if vectors is None:
            notes += (f"no embedding entry: {type(run.model).__name__} has no item_vectors()",)
        return ExportReport(tuple(e.name for e in entries), parity, notes)

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        similar = SimilarItemsInProcess(Path(repo), entry.reference["model"])

        def pipeline(requests: Requests):
            ids, scores = similar.similar(requests["ITEM_ID"], int(np.asarray(requests["K"]).reshape(-1)[0]))
            return {"ITEM_IDS": ids, "SCORES": scores}
        return pipeline

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        items = canary_users(self._items(repo))          # real ids spread out, then an unknown one
        k = min(k, int(read_metadata(repo)["neighbours"]))
        return [item_requests(items, k), item_requests(items[:2], 1)]

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        """n item pages, drawn in proportion to the items' interaction counts (seeded)."""
        folder = latest_version_dir(repo, entry.reference["model"])
        popularity = neighbours_module.load_npy(folder, "popularity").astype(np.float64) + 1.0
        items = np.random.default_rng(seed).choice(self._items(repo), size=n, p=popularity / popularity.sum())
        return item_requests(items, min(k, int(read_metadata(repo)["neighbours"])))

    def swappable_model(self, entry: Entry) -> str:
        return entry.reference["model"]

    @staticmethod
    def _items(repo: Path) -> np.ndarray:
        return lookup_module.load_npy(latest_version_dir(repo, LOOKUP), "item_ids").astype(np.int64)
