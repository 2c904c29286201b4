"""The sequential ("watch next") scenario on Triton: history_lookup -> sasrec_scorer -> topk.

    report = export_sequential(model, load_dataset("ml-100k"), Path("repo_next"), card)
    rec = SequentialInProcess(Path("repo_next"))
    ids, scores = rec.recommend(np.array([42, 7]), k=10)

Ensemble ``recommend_next``: USER_ID INT64 [B,1], K INT32 [B,1] -> ITEM_IDS INT64 [B,K] (raw
item ids, best first, the user's seen items removed), SCORES FP32 [B,K]. Unknown users get
popular items. The scorer is also callable directly with an explicit history:
``sasrec_scorer``: HISTORY INT64 [B,L] (tokens = internal item + 1, right-aligned, 0-padded,
any L: longer ones keep their last max_len) -> SCORES FP32 [B,I].

The repository is its own (not beside the retrieval models): its ``topk`` serves the
filtered catalogue of the sequential protocol, which differs from the retrieval one.
"""
from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recdeploy.export.feature_store import StoreSpec, store_files, write_redis_store
from recdeploy.export.repository import clear_repository, npy_bytes, write_model
from recdeploy.export.retrieval_specs import MAX_BATCH, RetrievalPipeline, topk_spec
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
from recdeploy.train.data import Dataset
from recdeploy.train.models import model_entry
from recdeploy.train.models.sasrec import SASRec
from recdeploy.train.onnx_io import (
    ParityReport,
    check_parity,
    cpu_session,
    export_onnx,
    onnx_files,
)
from recdeploy.train.tasks.sequential import (
    history_tokens,
    sequential_dataset,
    user_sequences,
)

ENSEMBLE = "recommend_next"
SCORER = "sasrec_scorer"
history_module = load_python_model("history_lookup")
topk_module = load_python_model("topk")


class SequentialExportError(ExportError):
    pass


# ---------------------------------------------------------------------------- specs (pure)

# the same three steps as retrieval (lookup -> scorer -> topk), with a history lookup
SequentialPipeline = RetrievalPipeline


def history_lookup_spec(max_len: int, max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(
        name="history_lookup", backend="python", max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)),),
        outputs=(TensorSpec("HISTORY", "INT64", (max_len,)), TensorSpec("SEEN_ITEMS", "INT64", (-1,)),
                 TensorSpec("IS_KNOWN", "BOOL", (1,))))


def sasrec_scorer_spec(n_items: int, max_batch: int = MAX_BATCH, threads: int = 2) -> ModelSpec:
    return ModelSpec(
        name=SCORER, platform="onnxruntime_onnx", max_batch_size=max_batch,
        inputs=(TensorSpec("HISTORY", "INT64", (-1,)),),
        outputs=(TensorSpec("SCORES", "FP32", (n_items,)),),
        parameters=(("intra_op_thread_count", str(threads)),))


def recommend_next_spec(max_batch: int = MAX_BATCH) -> EnsembleSpec:
    return EnsembleSpec(
        name=ENSEMBLE, max_batch_size=max_batch,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))),
        steps=(
            EnsembleStep("history_lookup", {"USER_ID": "USER_ID"},
                         {"HISTORY": "history", "SEEN_ITEMS": "seen_items", "IS_KNOWN": "is_known"}),
            EnsembleStep(SCORER, {"HISTORY": "history"}, {"SCORES": "all_scores"}),
            EnsembleStep("topk", {"SCORES": "all_scores", "SEEN_ITEMS": "seen_items",
                                  "IS_KNOWN": "is_known", "K": "K"},
                         {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}),
        ))


def sequential_pipeline(n_items: int, max_len: int, max_batch: int = MAX_BATCH) -> SequentialPipeline:
    pipeline = SequentialPipeline(lookup=history_lookup_spec(max_len, max_batch),
                                  scorer=sasrec_scorer_spec(n_items, max_batch),
                                  topk=topk_spec(n_items, max_batch),
                                  ensemble=recommend_next_spec(max_batch))
    check_ensemble(pipeline.ensemble, {m.name: m for m in pipeline.models})
    return pipeline


# ---------------------------------------------------------------------------- feature store

@dataclass(frozen=True)
class HistoryArrays:
    """What history_lookup and topk serve from (internal indices of the filtered catalogue)."""
    user_ids: np.ndarray          # int64 [U] sorted raw ids
    history_indptr: np.ndarray    # int64 [U+1]
    history_items: np.ndarray     # int64 [N] internal items, time order per user
    seen_indptr: np.ndarray       # int64 [U+1]
    seen_items: np.ndarray        # int64 [S] every catalogue item the user rated (any rating)
    item_ids: np.ndarray          # int64 [I] raw id per internal item
    popularity: np.ndarray        # float32 [I] cold-start ranking


def build_history_arrays(raw: Dataset, ds: Dataset) -> HistoryArrays:
    """ds: the filtered dataset the model was trained on; raw: before filtering.

    The history is the whole filtered sequence (training, validation and test items: at
    serving time all of it is the past). Seen items come from the raw ratings, so a movie
    rated 1 star is not recommended again either.
    """
    if np.any(np.diff(ds.user_ids) <= 0):
        raise SequentialExportError("dataset user ids must be sorted and unique")
    sequences = user_sequences(ds)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    # raw internal item -> filtered internal item (-1: not in the served catalogue)
    to_filtered = np.full(raw.n_items, -1, dtype=np.int64)
    position = np.searchsorted(ds.item_ids, raw.item_ids)
    clipped = np.minimum(position, ds.n_items - 1)
    inside = (position < ds.n_items) & (ds.item_ids[clipped] == raw.item_ids)
    to_filtered[inside] = position[inside]
    user_row = np.searchsorted(ds.user_ids, raw.user_ids[raw.users])
    keep = (user_row < ds.n_users) & (to_filtered[raw.items] >= 0)
    keep &= ds.user_ids[np.minimum(user_row, ds.n_users - 1)] == raw.user_ids[raw.users]
    pairs = np.unique(np.stack([user_row[keep], to_filtered[raw.items[keep]]], axis=1), axis=0)
    seen_indptr = np.searchsorted(pairs[:, 0], np.arange(ds.n_users + 1)).astype(np.int64)
    return HistoryArrays(
        user_ids=ds.user_ids.astype(np.int64), history_indptr=np.r_[0, np.cumsum(lengths)],
        history_items=np.concatenate(sequences).astype(np.int64), seen_indptr=seen_indptr,
        seen_items=pairs[:, 1].astype(np.int64), item_ids=ds.item_ids.astype(np.int64),
        popularity=np.bincount(ds.items, minlength=ds.n_items).astype(np.float32))


# ---------------------------------------------------------------------------- ONNX + checks

@dataclass(frozen=True)
class SequentialExportReport:
    parity: dict[str, ParityReport]     # case -> ONNX vs PyTorch
    width_invariance: float             # max |ONNX(short at width 5) - ONNX(same at max_len)|

    def max_abs_diff(self) -> dict[str, float]:
        return {case: r.max_abs_diff["SCORES"] for case, r in self.parity.items()}


def export_scorer_onnx(model: torch.nn.Module, sample: np.ndarray, path: Path) -> Path:
    """SASRec -> ONNX with dynamic batch *and* history length (the model truncates/pads)."""
    return export_onnx(model, {"HISTORY": sample}, ["SCORES"], path,
                       dynamic_axes={"HISTORY": {0: "batch", 1: "length"}, "SCORES": {0: "batch"}})


def parity_cases(ds: Dataset, max_len: int, n: int = 32) -> dict[str, np.ndarray]:
    """Real histories: typical (width max_len), short (1-5 items, width 5), long (untruncated,
    width > max_len), and empty (all padding, at width max_len and width 1)."""
    return parity_cases_of(user_sequences(ds), max_len, n)


def parity_cases_of(sequences: list[np.ndarray], max_len: int, n: int = 32) -> dict[str, np.ndarray]:
    """``parity_cases`` from any users' sequences (an update reads them from the online store)."""
    order = np.argsort([-len(s) for s in sequences], kind="stable")
    rng = np.random.default_rng(0)
    picked = rng.choice(len(sequences), size=min(n, len(sequences)), replace=False)
    typical = [sequences[u] for u in picked]
    short = [sequences[u][:1 + i % 5] for i, u in enumerate(order[-n:])]
    longest = [sequences[u] for u in order[:min(n, len(order))]]
    long_width = max(max_len + 1, max(len(s) for s in longest))
    return {"typical": history_tokens(typical, max_len), "short": history_tokens(short, 5),
            "long": history_tokens(longest, long_width),
            "empty": np.zeros((4, max_len), dtype=np.int64), "empty_width1": np.zeros((4, 1), np.int64)}


def check_scorer(model: SASRec, onnx_path: Path, cases: dict[str, np.ndarray],
                 atol: float = 1e-4, rtol: float = 1e-4) -> SequentialExportReport:
    """ONNX Runtime vs PyTorch on every case (raises OnnxParityError), no NaN anywhere, and
    the amount of padding does not change ONNX's answer."""
    import onnxruntime as ort

    parity = {case: check_parity(model, onnx_path, {"HISTORY": tokens}, ["SCORES"], atol, rtol)
              for case, tokens in cases.items()}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = {case: session.run(["SCORES"], {"HISTORY": t})[0] for case, t in cases.items()}
    bad = [case for case, out in outputs.items() if not np.all(np.isfinite(out))]
    if bad:
        raise SequentialExportError(f"ONNX scorer returned non-finite scores for {bad}")
    short = cases["short"]
    widened = np.pad(short, ((0, 0), (model.max_len - short.shape[1], 0)))
    width_diff = float(np.abs(session.run(["SCORES"], {"HISTORY": widened})[0] - outputs["short"]).max())
    if width_diff > atol:
        raise SequentialExportError(f"padding changed the ONNX scores by {width_diff:.3g} (max |diff|)")
    return SequentialExportReport(parity=parity, width_invariance=width_diff)


def write_history_lookup(repo: Path, pipeline, arrays: HistoryArrays, max_len: int,
                         store: StoreSpec | None = None) -> None:
    """history_lookup reading the baked CSRs, or (``store``) Redis, written here."""
    csr = {"history": (arrays.history_indptr, arrays.history_items),
           "seen": (arrays.seen_indptr, arrays.seen_items)}
    if store is None:
        user_files = {f"{field}_{part}.npy": npy_bytes(array) for field, pair in csr.items()
                      for part, array in zip(("indptr", "items"), pair)}
    else:
        write_redis_store(store, arrays.user_ids, csr, arrays.item_ids,
                          {"scenario": "sequential", "new_users": True})
        user_files = store_files(store)
    write_model(repo, build_model_config(pipeline.lookup), {
        **python_model_files("history_lookup"), "max_len.npy": npy_bytes(np.array(max_len)),
        "user_ids.npy": npy_bytes(arrays.user_ids), **user_files})


def export_sequential(model, raw: Dataset, repo: Path, card: dict | None = None,
                      store: StoreSpec | None = None) -> SequentialExportReport:
    """model: a trained SASRec; raw: the unfiltered dataset it was trained from (the protocol's
    filter is applied here again). Writes the repository (users' histories into ``store``
    when given); returns the checks' numbers."""
    check_fingerprint(card, raw)
    ds = sequential_dataset(raw)
    if ds.n_items != model.n_items:
        raise SequentialExportError(f"model scores {model.n_items} items but the filtered "
                                    f"{raw.name} catalogue has {ds.n_items}")
    repo = Path(repo)
    clear_repository(repo)  # its topk would clash with another scenario's catalogue
    pipeline = sequential_pipeline(ds.n_items, model.max_len)
    cases = parity_cases(ds, model.max_len)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_scorer_onnx(model, cases["typical"], Path(tmp) / "model.onnx")
        report = check_scorer(model.eval(), onnx_path, cases)
        write_model(repo, build_model_config(pipeline.scorer), onnx_files(onnx_path))
    arrays = build_history_arrays(raw, ds)
    write_history_lookup(repo, pipeline, arrays, model.max_len, store)
    write_model(repo, build_model_config(pipeline.topk), {
        **python_model_files("topk"), "item_ids.npy": npy_bytes(arrays.item_ids),
        "popularity.npy": npy_bytes(arrays.popularity)})
    write_model(repo, build_ensemble_config(pipeline.ensemble), {})
    write_metadata(repo, "sequential", raw, [Entry(ENSEMBLE, "sequential", {"kind": "steps"})],
                   filtered_fingerprint=ds.fingerprint(), n_users=ds.n_users, n_items=ds.n_items,
                   max_len=model.max_len, onnx_parity_max_abs_diff=report.max_abs_diff(),
                   padding_width_invariance=report.width_invariance, card=card or {})
    return report


# ---------------------------------------------------------------------------- in-process

class SequentialInProcess:
    """recommend_next in-process: the repository's own artifacts and python-model functions."""

    def __init__(self, repo: Path, threads: int = 2):
        repo = Path(repo)
        self.lookup, self.topk = history_module, topk_module
        self.table = self.lookup.open_history_store(latest_version_dir(repo, "history_lookup"))
        topk = latest_version_dir(repo, "topk")
        self.item_ids = topk_module.load_npy(topk, "item_ids")
        self.popularity = topk_module.load_npy(topk, "popularity")
        self.session = cpu_session(latest_version_dir(repo, SCORER) / "model.onnx", threads)

    def score_history(self, tokens: np.ndarray) -> np.ndarray:
        return self.session.run(["SCORES"], {"HISTORY": np.asarray(tokens, dtype=np.int64)})[0]

    def recommend(self, user_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        history, seen, known = self.lookup.lookup_histories(np.asarray(user_ids, np.int64), self.table)
        scores = self.score_history(history)
        k = self.topk.parse_k(np.array([k], dtype=np.int32), len(self.item_ids))
        return self.topk.top_k(scores, seen, known, k, self.popularity, self.item_ids)


@register_scenario("sequential")
class SequentialScenario(Scenario):
    summary = "\"watch next\": the next items after a user's history (SASRec)"

    online_store = True

    def handles(self, models: Mapping[str, str]) -> bool:
        return "sequential" in model_entry(models["run"]).tasks

    def demo_runs(self) -> dict[str, DemoRun]:
        return {"run": DemoRun("sasrec", settings={"epochs": 4})}

    def contracts(self) -> tuple[Contract, ...]:
        spec = recommend_next_spec()
        return (Contract.of(spec, "history from the feature store; seen items removed; unknown users get "
                            f"the most popular items; {SCORER} also takes an explicit HISTORY", SEEN_REMOVED,
                            entry=ENSEMBLE),)

    def export(self, job: ExportJob) -> ExportReport:
        run = job.run()
        report = export_sequential(run.model, job.dataset, job.repo, run.card, job.options.get("feature_store"))
        parity = {f"ONNX SASRec vs PyTorch, {case} histories": diff
                  for case, diff in report.max_abs_diff().items()}
        return ExportReport((ENSEMBLE,), parity,
                            (f"padding changes ONNX scores by {report.width_invariance:.2e}",))

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        recommender = SequentialInProcess(repo, threads)
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
        return topk_module.load_npy(latest_version_dir(repo, "history_lookup"), "user_ids").astype(np.int64)
