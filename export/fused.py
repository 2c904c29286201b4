"""The fused retrieval model: lookup -> scoring -> seen-item masking -> top-K in ONE graph.

    recdeploy export --run runs/demo    # a dot-product scorer also gets recommend_fused(_libtorch)

Why: every python hop of the three-step ensemble (python lookup -> ONNX scorer -> python
top-K) costs an IPC round trip to a stub process; one request then pays three. Folding the
lookup (a Gather on a dense id -> row table), the seen-item mask (a ScatterElements over the
user's CSR row) and the top-K (TopK) into the scorer leaves one step and the same contract:
USER_ID [B,1] INT64, K [B,1] INT32 -> ITEM_IDS [B,K] INT64, SCORES [B,K] FP32.

The same module is exported to ONNX (CPU, parity-checked against the numpy reference that the
three-step ensemble runs) and to TorchScript (recdeploy's native libtorch backend or the
python-based ``pytorch`` one locally, libtorch in the stock container). ONNX needs the
branch-free ``graph_forward``; scripted on CPU the model takes ``per_row_forward`` instead,
which does the same with far fewer interpreter ops (see there).
"""
# no `from __future__ import annotations` here: torch.jit.script reads FusedRetrieval's
# class-level buffer annotations as objects and rejects them as strings
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recdeploy.export.compare import AnswerMismatch, compare_answers
from recdeploy.export.repository import write_model
from recdeploy.export.triton_config import (
    EnsembleSpec,
    EnsembleStep,
    ModelSpec,
    TensorSpec,
    build_ensemble_config,
    build_model_config,
    check_ensemble,
)
from recdeploy.export.triton_python import load_python_model
from recdeploy.train.onnx_io import cpu_session, export_onnx

MAX_BATCH = 256
# histories up to this long are masked after the TopK (see FusedRetrieval)
POST_FILTER_MAX_SEEN = 64
# Dense id -> row tables above this many entries would waste memory; sparse ids need a hash.
MAX_DENSE_ID = 50_000_000


class FusedExportError(ValueError):
    pass


class FusedRetrieval(nn.Module):
    """user id (B x 1 int64), k (B x 1 int32) -> item ids (B x Kmax int64), scores (B x Kmax fp32).

    Kmax is the largest k of the batch; a row asking fewer gets -1 / -inf beyond its k (only
    possible where a server batches requests with different k together). Unknown users rank
    by popularity; every item a known user has seen is excluded.
    """
    id_to_row: torch.Tensor
    user_vectors: torch.Tensor
    item_vectors_t: torch.Tensor
    item_bias: torch.Tensor
    popularity: torch.Tensor
    seen_indptr: torch.Tensor
    seen_items: torch.Tensor
    item_ids: torch.Tensor

    def __init__(self, user_vectors, item_vectors, item_bias, popularity, user_ids, seen_indptr,
                 seen_items, item_ids, half: bool = False):
        super().__init__()
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(user_ids) and (user_ids.min() < 0 or user_ids.max() >= MAX_DENSE_ID):
            raise FusedExportError(f"user ids must lie in [0, {MAX_DENSE_ID}) for the dense id table")
        id_to_row = np.full(int(user_ids.max(initial=-1)) + 2, -1, dtype=np.int64)
        id_to_row[user_ids] = np.arange(len(user_ids))
        n_items = len(item_ids)
        user_vectors = np.asarray(user_vectors, np.float32)
        item_vectors = np.asarray(item_vectors, np.float32)
        bias = np.asarray(item_bias, np.float32)
        popularity = np.asarray(popularity, np.float32)
        self.half_catalogue = bool(half)
        if half:
            # FP16 catalogue (a GPU's tensor cores, half the bytes to scan); bias and the
            # popularity counts stay FP32 (counts overflow FP16 past 65504)
            users = np.r_[user_vectors, np.zeros((1, user_vectors.shape[1]), np.float32)]
            items_t = item_vectors.T.astype(np.float16)
        else:
            # One GEMM does it all: users [u, 1, 0] x items [v; bias; popularity] gives
            # u.v + bias; the extra "unknown" row [0, 0, 1] gives popularity (cold start).
            # No elementwise pass over the B x I scores is left before the mask.
            users = np.r_[np.c_[user_vectors, np.ones(len(user_vectors)), np.zeros(len(user_vectors))],
                          np.r_[np.zeros(user_vectors.shape[1]), 0.0, 1.0][None, :]].astype(np.float32)
            items_t = np.r_[item_vectors.T, bias[None, :], popularity[None, :]]
        self.register_buffer("id_to_row", torch.from_numpy(id_to_row))
        self.register_buffer("user_vectors", torch.from_numpy(np.ascontiguousarray(users)))
        self.register_buffer("item_vectors_t", torch.from_numpy(np.ascontiguousarray(items_t)))
        self.register_buffer("item_bias", torch.from_numpy(bias))
        self.register_buffer("popularity", torch.from_numpy(popularity))
        indptr = np.asarray(seen_indptr, np.int64)
        self.register_buffer("seen_indptr", torch.from_numpy(np.r_[indptr, indptr[-1]]))
        # a trailing sentinel keeps gathers in range for users with nothing seen
        self.register_buffer("seen_items", torch.from_numpy(np.r_[np.asarray(seen_items, np.int64), 0]))
        self.register_buffer("item_ids", torch.from_numpy(np.asarray(item_ids, np.int64)))
        self.n_users, self.n_items = len(user_ids), n_items
        # Short histories are masked after a TopK over k + L candidates (no pass over the
        # B x I scores; the B x (k+L) x L comparison is small); long ones in place before it.
        lengths = np.diff(indptr)
        self.mask_after_topk = bool(len(lengths) == 0 or lengths.max() <= POST_FILTER_MAX_SEEN)

    def forward(self, user_id: torch.Tensor, k: torch.Tensor):
        if torch.jit.is_scripting() and user_id.device.type == "cpu":
            return self.per_row_forward(user_id, k)
        return self.graph_forward(user_id, k)

    def _rows(self, uid: torch.Tensor):
        """user ids B -> (table rows B, known B): unknown and out-of-range ids get row n_users."""
        table_size = self.id_to_row.shape[0]
        in_range = (uid >= 0) & (uid < table_size)
        row = self.id_to_row[uid.clamp(0, table_size - 1)]
        known = in_range & (row >= 0)
        return torch.where(known, row, torch.full_like(row, self.n_users)), known

    def _scores(self, row: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        vectors = self.user_vectors[row].to(self.item_vectors_t.dtype)
        scores = (vectors @ self.item_vectors_t).float()                         # B x I
        if self.half_catalogue:
            scores = torch.where(known[:, None], scores + self.item_bias, self.popularity[None, :])
        return scores

    @staticmethod
    def _clip_to_k(ids: torch.Tensor, best: torch.Tensor, k: torch.Tensor):
        """Beyond a row's own k, and where no unseen item was left (-inf), -1 / -inf."""
        keep = (torch.arange(best.shape[1], device=best.device)[None, :] < k[:, None]) & torch.isfinite(best)
        ids = torch.where(keep, ids, torch.full_like(ids, -1))
        best = torch.where(keep, best, torch.full_like(best, float("-inf")))
        return ids, best

    def per_row_forward(self, user_id: torch.Tensor, k: torch.Tensor):
        """The TorchScript CPU path, same results as ``graph_forward`` with far fewer
        interpreter ops (docs/performance.md): each row's seen items are filled with -inf by
        one ``index_fill_`` on a slice of the CSR list, and the k clipping runs only when a
        row needs it."""
        row, known = self._rows(user_id[:, 0])
        scores = self._scores(row, known)
        starts: list[int] = self.seen_indptr[row].tolist()
        ends: list[int] = self.seen_indptr[row + 1].tolist()
        known_rows: list[bool] = known.tolist()
        for b in range(len(starts)):
            if known_rows[b] and ends[b] > starts[b]:
                scores[b].index_fill_(0, self.seen_items[starts[b]:ends[b]], float("-inf"))
        k = k[:, 0].to(torch.int64)
        kmax = int(k.max())
        kmin = int(k.min())
        if kmax > self.n_items or kmin < 1:  # a ValueError is the client's mistake (INVALID_ARG)
            raise ValueError("K must be between 1 and the catalogue size " + str(self.n_items)
                             + ", got " + str(kmax if kmax > self.n_items else kmin))
        best, top = torch.topk(scores, kmax, dim=1)
        ids = self.item_ids[top]
        if bool((k != kmax).any()) or not bool(torch.isfinite(best[:, -1]).all()):
            ids, best = self._clip_to_k(ids, best, k)
        return ids, best

    def graph_forward(self, user_id: torch.Tensor, k: torch.Tensor):
        """The branch-free form: the ONNX export, and TorchScript on a GPU."""
        uid = user_id[:, 0]
        row, known = self._rows(uid)
        scores = self._scores(row, known)
        start = self.seen_indptr[row]
        length = torch.where(known, self.seen_indptr[row + 1] - start, torch.zeros_like(start))
        # torch's stub wants a number; a 0-d tensor is accepted and keeps L dynamic in the ONNX trace
        offsets = torch.arange(length.max(), device=uid.device)  # type: ignore[call-overload]
        valid = offsets[None, :] < length[:, None]                                # B x L
        k = k[:, 0].to(torch.int64)
        if self.mask_after_topk:
            ids, best = self._top_k_then_mask(scores, start, offsets, valid, k)
        else:
            ids, best = self._mask_then_top_k(scores, start, offsets, valid, length, k)
        return self._clip_to_k(ids, best, k)

    def _mask_then_top_k(self, scores, start, offsets, valid, length, k):
        """In-place mask: padding slots of a row repeat its first seen item (-inf again), or,
        for a row with nothing seen, rewrite item 0 unchanged."""
        has_seen = (length > 0)[:, None]
        first = torch.where(has_seen, self.seen_items[start][:, None], torch.zeros_like(start)[:, None])
        index = torch.where(valid, self.seen_items[(start[:, None] + offsets[None, :]) * valid], first)
        values = torch.where(valid | has_seen, torch.full_like(index, float("-inf"), dtype=scores.dtype),
                             scores.gather(1, index))
        best, top = torch.topk(scores.scatter(1, index, values), k.max(), dim=1)
        return self.item_ids[top], best

    def _top_k_then_mask(self, scores, start, offsets, valid, k):
        """TopK over k + L, drop the seen candidates, keep the first k of the rest in order.

        Removing items from a sorted list keeps its order (ties included), so this equals
        masking first; at most L of the k + L candidates can be seen ones.
        """
        seen = torch.where(valid, self.seen_items[(start[:, None] + offsets[None, :]) * valid],
                           torch.full_like(valid, -1, dtype=torch.int64))          # B x L
        kmax = k.max()
        best, top = torch.topk(scores, torch.clamp(kmax + offsets.shape[0], max=self.n_items), dim=1)
        unseen = ~(top[:, :, None] == seen[:, None, :]).any(dim=2)               # B x W
        rank = torch.cumsum(unseen.to(torch.int64), dim=1) - 1
        # kept candidates land in column rank; the rest in a spare column W, sliced off
        spare = torch.full_like(rank, 0) + top.shape[1]
        column = torch.where(unseen & (rank < kmax), rank, spare)
        ids = torch.cat([torch.full_like(top, -1), torch.full_like(top[:, :1], -1)], dim=1)
        out = torch.cat([torch.full_like(best, float("-inf")), torch.full_like(best[:, :1], float("-inf"))], dim=1)
        ids = ids.scatter(1, column, self.item_ids[top])
        out = out.scatter(1, column, best)
        return ids[:, 0:kmax], out[:, 0:kmax]


def dot_product_parts(scorer: nn.Module):
    """(user vectors U x D, item vectors I x D, item bias I) of a dot-product scorer, else None.

    Dot-product scorers (DotProductScorer and its RetrievalScorer) hold user_embedding and
    item_table_t, biases folded into extra columns. A scorer without them (NeuMF's MLP)
    cannot be folded into one GEMM.
    """
    user_embedding = getattr(scorer, "user_embedding", None)
    item_table_t = getattr(scorer, "item_table_t", None)
    if not isinstance(user_embedding, nn.Embedding) or not isinstance(item_table_t, torch.Tensor):
        return None
    users = user_embedding.weight.detach().numpy()
    items = item_table_t.detach().numpy().T
    return users, items, np.zeros(len(items), np.float32)


def fused_from_repository(scorer: nn.Module, features) -> FusedRetrieval:
    """Build from a dot-product served scorer and the FeatureArrays of the three-step ensemble."""
    parts = dot_product_parts(scorer)
    if parts is None:
        raise FusedExportError(f"{type(scorer).__name__} is not a dot-product scorer; it cannot be fused")
    users, items, bias = parts
    return FusedRetrieval(
        user_vectors=users, item_vectors=items, item_bias=bias, popularity=features.popularity,
        user_ids=features.user_ids, seen_indptr=features.seen_indptr,
        seen_items=features.seen_items, item_ids=features.item_ids)


# --------------------------------------------------------------------- Triton specs

def score_rows(n_items: int, budget: int = 4 << 30) -> int:
    """The largest power-of-two batch (1..MAX_BATCH) whose FP32 scores [rows, n_items] fit ``budget``:
    the batcher merges requests up to max_batch_size rows (256 x 10^7 = 10 GB killed an instance)."""
    rows = max(1, budget // (4 * max(1, n_items)))
    return int(min(MAX_BATCH, 2 ** int(np.log2(rows))))


def fused_model_spec(name: str = "fused_retrieval", platform: str = "onnxruntime_onnx",
                     kind: str = "KIND_CPU", instances: int = 2, max_queue_delay_us: int = 500,
                     threads: int = 1, max_batch: int = MAX_BATCH, n_items: int = 0,
                     filename: str = "") -> ModelSpec:
    """Two single-threaded instances and a 500 us queue delay: the perf lab's best schedule
    on a 2-core box (docs/performance.md). n_items > 0 declares K's valid range, which
    recdeploy's backends (python-based and native) check before the graph runs: ONNX TopK and
    an AOTInductor package cannot refuse a bad K as the client's mistake, and caps the batch by
    the score matrix (``score_rows``: 64 at 10^7 items). filename: the model
    file when not the platform's default (``model.pt2``: an AOTInductor package)."""
    # libtorch outputs keep the contract's names: names without the <name>__<index>
    # convention map to forward()'s outputs by order (stock libtorch backend and ours), so the
    # model itself answers the recommend contract, ensemble or not
    if n_items:
        max_batch = min(max_batch, score_rows(n_items))
    return ModelSpec(
        name=name, platform=platform, max_batch_size=max_batch, instance_count=instances,
        instance_kind=kind, max_queue_delay_us=max_queue_delay_us, default_model_filename=filename,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))),
        # intra_op_thread_count: read by the stock onnxruntime backend and ours;
        # batch_group_inputs: our python-based backends only run requests with equal K together
        parameters=(("intra_op_thread_count", str(threads)), ("batch_group_inputs", "K"),
                    *((("input_range", f"K=1..{n_items}"),) if n_items else ())))


def fused_ensemble_spec(model: ModelSpec, name: str = "recommend_fused") -> EnsembleSpec:
    ids, scores = (t.name for t in model.outputs)
    spec = EnsembleSpec(
        name=name, max_batch_size=model.max_batch_size,
        inputs=(TensorSpec("USER_ID", "INT64", (1,)), TensorSpec("K", "INT32", (1,))),
        outputs=(TensorSpec("ITEM_IDS", "INT64", (-1,)), TensorSpec("SCORES", "FP32", (-1,))),
        steps=(EnsembleStep(model.name, {"USER_ID": "USER_ID", "K": "K"},
                            {ids: "ITEM_IDS", scores: "SCORES"}),))
    check_ensemble(spec, {model.name: model})
    return spec


# --------------------------------------------------------------------- export

@dataclass(frozen=True)
class FusedParity:
    users_checked: int
    max_score_diff: float


def reference_recommend(features, scorer_scores: np.ndarray, user_ids: np.ndarray, k: int):
    """The three-step ensemble's numpy path, on precomputed scorer outputs."""
    lookup_module, topk_module = load_python_model("feature_lookup"), load_python_model("topk")
    table = lookup_module.UserTable(features.user_ids, features.seen_indptr, features.seen_items)
    index, seen, known = lookup_module.lookup_users(user_ids, table)
    return topk_module.top_k(scorer_scores[index[:, 0]], seen, known, k, features.popularity,
                             features.item_ids)


def check_fused_parity(run_fused, fused: FusedRetrieval, features, all_scores: np.ndarray,
                       user_ids: np.ndarray, ks=(1, 10, 100), exact_ties: bool = True) -> FusedParity:
    """run_fused(user_ids [B,1], k [B,1]) -> (ids, scores): must equal the numpy reference.

    ONNX TopK puts the lower index first among equal scores, as the reference does
    (exact_ties=True). torch.topk promises no tie order: with exact_ties=False, ids are
    compared only where a score is unique in its row, the scores everywhere.
    """
    worst = 0.0
    for k in ks:
        k = min(k, fused.n_items)
        ids, scores = run_fused(user_ids.reshape(-1, 1), np.full((len(user_ids), 1), k, np.int32))
        want_ids, want_scores = reference_recommend(features, all_scores, user_ids, k)
        try:
            worst = max(worst, compare_answers({"ITEM_IDS": ids, "SCORES": scores},
                                               {"ITEM_IDS": want_ids, "SCORES": want_scores},
                                               label=f"fused top-{k}", rows=[f"user {u}" for u in user_ids],
                                               exact_ties=exact_ties))
        except AnswerMismatch as mismatch:
            raise FusedExportError(str(mismatch)) from mismatch
    return FusedParity(users_checked=len(user_ids), max_score_diff=worst)


def onnx_runner(path: Path, threads: int = 2):
    session = cpu_session(path, threads)
    return lambda users, k: tuple(session.run(["ITEM_IDS", "SCORES"], {"USER_ID": users, "K": k}))


def export_fused_onnx(fused: FusedRetrieval, path: Path, example_users: np.ndarray) -> Path:
    users = example_users.reshape(-1, 1).astype(np.int64)
    k = np.full((len(users), 1), min(10, fused.n_items), dtype=np.int32)
    return export_onnx(fused, {"USER_ID": users, "K": k}, ["ITEM_IDS", "SCORES"], path,
                       dynamic_axes={"USER_ID": {0: "batch"}, "K": {0: "batch"},
                                     "ITEM_IDS": {0: "batch", 1: "k"}, "SCORES": {0: "batch", 1: "k"}})


def export_fused_torchscript(fused: nn.Module, path: Path) -> Path:
    """TorchScript (scripted, so the data-dependent k and seen-list width stay dynamic) of
    FusedRetrieval or a module with its contract (GpuRetrieval)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(fused.eval()).save(str(path))
    return path


def module_runner(module: nn.Module, device="cpu"):
    """(users [B,1], k [B,1]) numpy -> (ids, scores) numpy through a torch or TorchScript
    module on ``device`` (the in-process side of the parity checks and benchmarks)."""
    module = module.to(device).eval()

    def run(users, k):
        with torch.inference_mode():
            ids, scores = module(torch.from_numpy(users).to(device), torch.from_numpy(k).to(device))
            return ids.cpu().numpy(), scores.cpu().numpy()
    return run


def torchscript_runner(path: Path):
    return module_runner(torch.jit.load(str(path)))


LIBTORCH_VARIANT = "libtorch"


def write_fused_variant(repo: Path, scorer: nn.Module, features, check_user_ids: np.ndarray,
                        all_scores: np.ndarray) -> dict[str, dict]:
    """Add fused_retrieval (ONNX) + recommend_fused, and the same graph as TorchScript
    (fused_retrieval_libtorch + recommend_fused_libtorch: libtorch inside tritonserver when
    the native backend builds, the stock container's libtorch backend elsewhere), beside the
    three-step ensemble. Each file is parity-checked against the numpy reference first.

    all_scores: the three-step scorer's output for every known user (U x I), the reference.
    Returns {entry: how its reference runs} for the entries written: the two ensembles and
    the TorchScript model, which answers the contract when called directly too.
    """
    fused = fused_from_repository(scorer, features)
    unknown = np.array([-1, int(features.user_ids.max()) + 1, 2 ** 62], dtype=np.int64)
    users = np.r_[check_user_ids, unknown].astype(np.int64)
    onnx_spec = fused_model_spec(n_items=fused.n_items)
    torch_spec = fused_model_spec(f"fused_retrieval_{LIBTORCH_VARIANT}", platform="pytorch_libtorch",
                                  n_items=fused.n_items)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_fused_onnx(fused, Path(tmp) / "model.onnx", check_user_ids[:8])
        check_fused_parity(onnx_runner(path), fused, features, all_scores, users)
        write_model(repo, build_model_config(onnx_spec), {"model.onnx": path})
        path = export_fused_torchscript(fused, Path(tmp) / "model.pt")
        check_fused_parity(torchscript_runner(path), fused, features, all_scores, users,
                           exact_ties=False)
        write_model(repo, build_model_config(torch_spec), {"model.pt": path})
    onnx_ensemble = fused_ensemble_spec(onnx_spec)
    torch_ensemble = fused_ensemble_spec(torch_spec, f"recommend_fused_{LIBTORCH_VARIANT}")
    for ensemble in (onnx_ensemble, torch_ensemble):
        write_model(repo, build_ensemble_config(ensemble), {})
    torch_ref = {"kind": "torchscript", "model": torch_spec.name}
    return {onnx_ensemble.name: {"kind": "onnx", "model": onnx_spec.name},
            torch_ensemble.name: torch_ref, torch_spec.name: torch_ref}
