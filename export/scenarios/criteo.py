"""The large-CTR scenario: Criteo-format impressions -> criteo_features -> DLRM / DCN-v2 -> top-K.

    recdeploy train --model dlrm --dataset criteo --out runs/dlrm-criteo
    recdeploy export --run runs/dlrm-criteo --repository model_repository   # ensemble criteo_rank
    recdeploy demo --scenario criteo

Models: ``criteo_features`` (python, numpy only: raw counts and 32-bit ids -> log counts and
embedding rows through the training vocabularies), ``criteo_ranker`` (ONNX, parity-checked
against PyTorch on held-out rows; weights in ``model.onnx.data`` beside the graph once they
pass protobuf's 2 GiB limit), ``rank_topk`` (the ranking scenario's). Ensemble
``criteo_rank``: DENSE FP32 [B,N,13], CATEGORICAL INT64 [B,N,26], CANDIDATES INT64 [B,N],
K INT32 [B,1] -> ITEM_IDS INT64 [B,K], SCORES FP32 [B,K] (logits; sigmoid gives pCTR).
Compressed tables (row-wise INT8 / INT4, mixed precision) are served as
``criteo_rank_<variant>`` beside it; ``--cached-tables ROWS`` adds ``criteo_rank_cached``
(the table memory-mapped behind a row cache, ``criteo_cached.py``). Held-out impressions
(raw, as a client would send them) are kept in ``criteo_requests.npz`` for the canary and perf_analyzer.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from recdeploy.export.repository import clear_repository, npy_bytes, write_model
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
    ScenarioError,
    add_entries,
    check_fingerprint,
    k_column,
    latest_version_dir,
    read_metadata,
    write_metadata,
)
from recdeploy.export.scenarios.ranking import RESULT_OUTPUTS, rank_topk_module, rank_topk_spec
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
from recdeploy.train.checkpoint import Checkpoint
from recdeploy.train.criteo.prepare import PreparedCriteo
from recdeploy.train.models import model_entry
from recdeploy.train.onnx_io import ParityReport, check_parity, cpu_session, export_onnx, onnx_files

MAX_BATCH = 2048
PERF_CANDIDATES = 20          # ads an ad-ranking request scores
SAMPLE_IMPRESSIONS = 4096     # held-out impressions kept for canary and perf requests
REQUESTS_FILE = "criteo_requests.npz"
RANKER_INPUTS = ("DENSE_X", "SPARSE")

features_module = load_python_model("criteo_features")


# ---------------------------------------------------------------------------- specs (pure)

def request_inputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec("DENSE", "FP32", (-1, 13)), TensorSpec("CATEGORICAL", "INT64", (-1, 26)),
            TensorSpec("CANDIDATES", "INT64", (-1,)))


def ranker_inputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec("DENSE_X", "FP32", (-1, 13)), TensorSpec("SPARSE", "INT64", (-1, 26)))


def features_spec(max_batch: int = MAX_BATCH) -> ModelSpec:
    return ModelSpec(name="criteo_features", backend="python", max_batch_size=max_batch,
                     inputs=request_inputs(), outputs=(*ranker_inputs(), TensorSpec("VALID", "BOOL", (-1,))))


def ranker_name(variant: str = "") -> str:
    return f"criteo_ranker_{variant}" if variant else "criteo_ranker"


def ranker_spec(max_batch: int = MAX_BATCH, threads: int = 2, variant: str = "") -> ModelSpec:
    return ModelSpec(name=ranker_name(variant), platform="onnxruntime_onnx", max_batch_size=max_batch,
                     inputs=ranker_inputs(), outputs=(TensorSpec("SCORES", "FP32", (-1,)),),
                     parameters=(("intra_op_thread_count", str(threads)),))


def ensemble_spec(max_batch: int = MAX_BATCH, variant: str = "") -> EnsembleSpec:
    ranker = ranker_name(variant)
    steps = (
        EnsembleStep("criteo_features", {"DENSE": "DENSE", "CATEGORICAL": "CATEGORICAL",
                                         "CANDIDATES": "CANDIDATES"},
                     {"DENSE_X": "dense_x", "SPARSE": "sparse", "VALID": "valid"}),
        EnsembleStep(ranker, {"DENSE_X": "dense_x", "SPARSE": "sparse"}, {"SCORES": "candidate_scores"}),
        EnsembleStep("rank_topk", {"SCORES": "candidate_scores", "CANDIDATES": "CANDIDATES",
                                   "VALID": "valid", "K": "K"},
                     {"ITEM_IDS": "ITEM_IDS", "TOP_SCORES": "SCORES"}))
    return EnsembleSpec(name=f"criteo_rank_{variant}" if variant else "criteo_rank", max_batch_size=max_batch,
                        inputs=(*request_inputs(), TensorSpec("K", "INT32", (1,))),
                        outputs=RESULT_OUTPUTS, steps=steps)


def pipeline_specs(variant: str = "", threads: int = 2) -> tuple[tuple[ModelSpec, ...], EnsembleSpec]:
    models = (features_spec(), ranker_spec(threads=threads, variant=variant), rank_topk_spec(MAX_BATCH))
    ensemble = ensemble_spec(variant=variant)
    check_ensemble(ensemble, {m.name: m for m in models})
    return models, ensemble


# ---------------------------------------------------------------------------- requests

def held_out_impressions(data: PreparedCriteo, n: int = SAMPLE_IMPRESSIONS, seed: int = 0):
    """(dense raw FP32 [n, 13], ids INT64 [n, 26]) of test rows, as a client would send them."""
    _, dense, sparse = data.arrays("test")
    rows = np.sort(np.random.default_rng(seed).choice(len(dense), size=min(n, len(dense)), replace=False))
    raw_dense = np.round(np.expm1(np.asarray(dense[rows], dtype=np.float64))).astype(np.float32)
    return raw_dense, data.vocab.raw_ids(np.asarray(sparse[rows]))


def impression_requests(dense: np.ndarray, ids: np.ndarray, rows: int, n: int, k: int, seed: int) -> Requests:
    """``rows`` requests of ``n`` candidate impressions drawn from the kept ones (ad id = index + 1)."""
    pick = np.random.default_rng(seed).integers(0, len(dense), size=(rows, n))
    return {"DENSE": dense[pick], "CATEGORICAL": ids[pick], "CANDIDATES": (pick + 1).astype(np.int64),
            "K": k_column(rows, k)}


def load_impressions(repo: Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(repo) / REQUESTS_FILE
    if not path.is_file():
        raise ExportError(f"{repo} has no {REQUESTS_FILE}: export the criteo scenario first")
    with np.load(path) as saved:
        return saved["dense"], saved["ids"]


# ---------------------------------------------------------------------------- export

def export_ranker(model, inputs: dict[str, np.ndarray], path: Path, external_data: bool | None = None,
                  constant_folding: bool = True) -> Path:
    """-> ``path`` (+ ``path.data`` past 2 GiB). Exported in a scratch folder first: past 2 GiB
    torch writes one file per initializer before they are gathered into ``.data``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", 1: "candidates"} for name in [*inputs, "SCORES"]}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        made = export_onnx(model, inputs, ["SCORES"], Path(tmp) / path.name, dynamic_axes=axes,
                           external_data=external_data, constant_folding=constant_folding)
        for name, file in onnx_files(made, path.name).items():
            shutil.move(str(file), str(path.parent / name))
    return path


def probe_inputs(impressions: tuple[np.ndarray, np.ndarray], vocab, rows: int = 8, n: int = 6) -> dict[str, np.ndarray]:
    """The ranker's inputs for ``rows`` requests of ``n`` of the given raw impressions."""
    dense, ids = impressions
    request = impression_requests(dense, ids, rows, n, 1, seed=11)
    x, sparse, _ = features_module.transform(request["DENSE"], request["CATEGORICAL"], request["CANDIDATES"], vocab)
    return {"DENSE_X": x, "SPARSE": sparse}


def export_criteo(model, data: PreparedCriteo, repo: Path, card: dict | None = None,
                  external_data: bool | None = None) -> ParityReport:
    """A repository holding only the criteo scenario (cleared first), with its manifest."""
    if not isinstance(data, PreparedCriteo):
        raise ExportError(f"the criteo scenario exports runs trained on --dataset criteo, not {data.name}")
    check_fingerprint(card, data)  # type: ignore[arg-type]  # duck-typed: name, fingerprint()
    if tuple(model.rows_per_field) != tuple(data.rows_per_field):
        raise ExportError(f"the model's tables ({sum(model.rows_per_field):,} rows) do not match the "
                          f"dataset's vocabularies ({data.n_items:,} rows): train it on this dataset")
    repo = Path(repo)
    clear_repository(repo)
    model = model.eval()
    vocab = features_module.Vocab(data.vocab.keys, data.vocab.rows, data.vocab.offsets, data.vocab.sizes,
                                  data.vocab.hash_rows)
    dense, ids = held_out_impressions(data)
    inputs = probe_inputs((dense, ids), vocab)
    models, ensemble = pipeline_specs()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_ranker(model, inputs, Path(tmp) / "model.onnx", external_data)
        parity = check_parity(model, onnx_path, inputs, ["SCORES"], atol=1e-4, rtol=1e-4)
        write_model(repo, build_model_config(models[1]), onnx_files(onnx_path))
    write_model(repo, build_model_config(models[0]), {
        **python_model_files("criteo_features"),
        **{f"{name}.npy": npy_bytes(getattr(vocab, name.replace("vocab_", "")))
           for name in features_module.VOCAB_FILES}})
    write_model(repo, build_model_config(models[2]), python_model_files("rank_topk"))
    write_model(repo, build_ensemble_config(ensemble), {})
    np.savez(repo / REQUESTS_FILE, dense=dense, ids=ids)
    write_metadata(repo, "criteo", data,  # type: ignore[arg-type]  # duck-typed like check_fingerprint
                   [criteo_entry()], onnx_parity_max_abs_diff=parity.max_abs_diff, card=card or {})
    return parity


def criteo_entry(variant: str = "") -> Entry:
    return Entry(ensemble_spec(variant=variant).name, "criteo", {"kind": "steps", "ranker": ranker_name(variant)},
                 variant_of="criteo_rank" if variant else "")


def add_criteo_variant(repo: Path, onnx_path: Path, variant: str, info: dict | None = None) -> list[str]:
    """criteo_ranker_<variant> + criteo_rank_<variant> beside the full ranker. onnx_path takes
    DENSE_X [B, N, 13] and SPARSE [B, N, 26] (``export_ranker``'s layout)."""
    repo = Path(repo)
    if not (repo / "criteo_features").is_dir():
        raise ExportError(f"{repo} has no exported criteo scenario: export the full run first")
    read_metadata(repo)
    models, ensemble = pipeline_specs(variant)
    write_model(repo, build_model_config(models[1]), onnx_files(Path(onnx_path)))
    write_model(repo, build_ensemble_config(ensemble), {})
    add_entries(repo, [criteo_entry(variant)], variant, info)
    return [models[1].name, ensemble.name]


# ---------------------------------------------------------------------------- in-process

class InProcessCriteo:
    """The ``criteo_rank`` ensemble in-process, from the repository's own artifacts."""

    def __init__(self, repo: Path, threads: int = 2, ranker: str = "criteo_ranker"):
        self.vocab = features_module.Vocab.load(latest_version_dir(repo, "criteo_features"))
        self.session = cpu_session(latest_version_dir(repo, ranker) / "model.onnx", threads)

    def rank(self, requests: Requests) -> Answer:
        x, sparse, valid = features_module.transform(requests["DENSE"], requests["CATEGORICAL"],
                                                     requests["CANDIDATES"], self.vocab)
        scores = self.session.run(["SCORES"], {"DENSE_X": x, "SPARSE": sparse})[0]
        candidates = np.asarray(requests["CANDIDATES"], dtype=np.int64)
        k = rank_topk_module.parse_k(requests["K"], candidates.shape[1], "the number of candidates")
        ids, best = rank_topk_module.rank_top_k(scores, candidates, valid, k)
        return {"ITEM_IDS": ids, "SCORES": best}


@register_scenario("criteo")
class CriteoScenario(Scenario):
    summary = "large CTR (Criteo format): the K best of N impressions' raw features (DLRM, DCN-v2)"

    def handles(self, models: Mapping[str, str]) -> bool:
        return "criteo_ctr" in model_entry(models["run"]).tasks

    def demo_runs(self) -> dict[str, DemoRun]:
        return {"run": DemoRun("dlrm", dataset="criteo")}

    def contracts(self) -> tuple[Contract, ...]:
        spec = ensemble_spec()
        notes = ("DENSE: raw counts, NaN = missing; CATEGORICAL: the 8-hex-digit ids as integers, "
                 "-1 = missing, unseen ids use the out-of-vocabulary row; padding (-1) or repeated "
                 "candidates come last with id -1; SCORES are logits")
        # criteo_cached builds on this module's specs, hence imported here and not at the top
        from recdeploy.export.scenarios.criteo_cached import cached_ensemble_spec
        return (Contract.of(spec, notes, entry="criteo_rank"),
                Contract.of(spec, "compressed tables; " + notes, entry="criteo_rank_<variant>",
                            steps=("criteo_features", "criteo_ranker_<variant>", "rank_topk")),
                Contract.of(cached_ensemble_spec(), "the FP32 tables memory-mapped behind a row cache "
                            "(export --cached-tables); " + notes))

    def export(self, job: ExportJob) -> ExportReport:
        run = job.run()
        parity = export_criteo(run.model, job.dataset, job.repo, run.card)  # type: ignore[arg-type]
        return ExportReport(("criteo_rank",), {"ONNX ranker vs PyTorch on held-out impressions":
                                               max(parity.max_abs_diff.values())})

    def add_variant(self, repo: Path, onnx_path: Path, slug: str, info: dict | None = None) -> list[str]:
        return add_criteo_variant(repo, onnx_path, slug, info)

    def add_cached_tables(self, repo: Path, run: Checkpoint, capacity: int) -> ExportReport:
        from recdeploy.export.scenarios.criteo_cached import ENTRY, add_cached_tables  # see contracts()
        parity = add_cached_tables(run.model, repo, capacity)
        return ExportReport((ENTRY,), {"dense-only ONNX ranker (cached tables) vs PyTorch":
                                       max(parity.max_abs_diff.values())})

    def reference(self, repo: Path, entry: Entry, threads: int = 2) -> Pipeline:
        return InProcessCriteo(repo, threads, entry.reference.get("ranker", "criteo_ranker")).rank

    def canary_requests(self, repo: Path, entry: Entry, k: int = 10) -> list[Requests]:
        dense, ids = load_impressions(repo)
        request = impression_requests(dense, ids, rows=6, n=2 * k, k=k, seed=3)
        request["CANDIDATES"][:, -1] = -1                                   # padding
        request["CANDIDATES"][:, -2] = request["CANDIDATES"][:, 0]          # a repeat
        request["DENSE"][0, :, :] = np.nan                                  # every count missing
        request["CATEGORICAL"][1, :, :] = -1                                # every id missing
        request["CATEGORICAL"][2, :, :5] = 0xFFFFFFFF                       # ids never seen
        return [request]

    def perf_rows(self, repo: Path, entry: Entry, k: int = 10, n: int = 2048, seed: int = 0) -> Requests:
        dense, ids = load_impressions(repo)
        return impression_requests(dense, ids, rows=n, n=PERF_CANDIDATES, k=min(k, PERF_CANDIDATES), seed=seed)

    def swappable_model(self, entry: Entry) -> str:
        if entry.reference.get("cached_tables"):
            raise ScenarioError(f"{entry.name}: a retrained run changes the table and the dense ranker "
                                "together; export it again instead of swapping one model")
        return entry.reference.get("ranker", "criteo_ranker")
