"""ann_search: the K best unseen items per user from an approximate (FAISS) index.

Inputs  USER_INDEX INT64 [B, 1]  internal user index (feature_lookup's output)
        SEEN_ITEMS INT64 [B, L]  internal indices to exclude, -1 padded
        IS_KNOWN   BOOL  [B, 1]  False -> rank by popularity (cold start)
        K          INT32 [B, 1]  how many items (the same K for every row of a request)
Outputs ITEM_IDS   INT64 [B, K]  raw item ids, best first (-1 where fewer than K remain)
        TOP_SCORES FP32  [B, K]  exact inner products of the returned items

Artifacts beside this file: index.faiss (HNSW or IVF-PQ over the catalogue; inner
products turned into L2 distances by one extra column, see export/ann.py),
user_vectors.npy ([U, D]: the user tower's output, the constant 1 that meets the item bias
included), the re-rank catalogue — catalogue.npy ([I, D] FP32) or, with ``rerank: int8`` in
ann.json, catalogue_codes.npy ([I, D] INT8) + catalogue_scale.npy ([I] FP16), compress/
rowwise.py's symmetric row-wise scheme at about a quarter of the bytes — item_ids.npy,
popularity.npy, ann.json (search settings) and recdeploy_triton_core.py.

How a row is answered (the same for every row, whatever else shares its batch, so served
and in-process answers agree however Triton batches):
1. fetch F = k + ceil(overfetch * L) candidates (L: that user's seen count), rounded up to a
   power of two; ``k_factor * F`` are asked of the index (IVF-PQ's codes are coarse);
2. candidates are re-scored against the re-rank catalogue (INT8: only the candidate rows
   are dequantized), seen ones dropped, ties by the lower item index (the exact ``topk``
   model's rule);
3. a row left with fewer than K candidates is answered by a full scan of the same re-rank
   catalogue: with FP32 the exact ensemble's answer; with INT8 the top-K of the INT8 scores
   (the FP32 copy is not kept: keeping it for rare fallbacks would undo the saving).
   ``overfetch`` is chosen at export from measurement (docs/ann.md).

Unlike the other python models this one needs ``faiss`` (``pip install faiss-cpu``) in the
stub's environment as well as numpy.
"""
import json
import os

import faiss
import numpy as np
from recdeploy_triton_core import (
    PipelineFault,
    execute_requests,
    load_npy,
    parse_k,
    top_k,
    version_folder,
)

__all__ = ["RERANKS", "AnnSearcher", "Fp32Catalogue", "Int8Catalogue", "TritonPythonModel", "block_scores",
           "fetch_sizes", "rank_candidates"]

# how the catalogue for the re-rank and the exact fallback is held (ann.json's "rerank")
RERANKS = ("fp32", "int8")
# rows converted to FP32 at once by a full scan (~17 MB at 65 columns)
SCAN_BLOCK = 1 << 18


def block_scores(users, codes, scale=None, block=SCAN_BLOCK):
    """users [B, D] FP32 x codes [I, D] (any float or int dtype) -> scores [B, I] FP32.

    The codes are converted block by block (CPUs have no INT8 / FP16 GEMM here: compute stays
    FP32, only the resident bytes shrink); scale [I], if given, multiplies each item's column
    (row-wise INT8: value = code * scale)."""
    out = np.empty((len(users), len(codes)), np.float32)
    for start in range(0, len(codes), block):
        part = out[:, start:start + block]
        np.matmul(users, codes[start:start + block].astype(np.float32).T, out=part)
        if scale is not None:
            part *= scale[start:start + block].astype(np.float32)
    return out


class Fp32Catalogue:
    """The re-rank catalogue as FP32 rows [I, D]: exact scores."""

    rerank = "fp32"

    def __init__(self, vectors):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.shape = self.vectors.shape

    @property
    def nbytes(self):
        return int(self.vectors.nbytes)

    def rows(self, index):
        """index [...] -> FP32 rows [..., D]"""
        return self.vectors[index]

    def scores(self, users):
        return users @ self.vectors.T


class Int8Catalogue:
    """The re-rank catalogue as compress/rowwise.py's symmetric row-wise INT8: codes [I, D]
    int8 and an FP16 scale per row (value = code * scale), quantized at export. A quarter of
    the FP32 bytes plus 2 a row; scores carry the quantization error (docs/ann.md)."""

    rerank = "int8"

    def __init__(self, codes, scale):
        self.codes = np.ascontiguousarray(codes)
        self.scale = np.ascontiguousarray(scale, dtype=np.float16).reshape(-1)
        if self.codes.dtype != np.int8 or self.codes.ndim != 2 or len(self.scale) != len(self.codes):
            raise ValueError(f"INT8 catalogue: codes {self.codes.dtype} {list(self.codes.shape)} and scale "
                             f"{list(self.scale.shape)} are not int8 [I, D] and [I]")
        self.shape = self.codes.shape

    @property
    def nbytes(self):
        return int(self.codes.nbytes + self.scale.nbytes)

    def rows(self, index):
        """index [...] -> dequantized FP32 rows [..., D] (only these rows are converted)"""
        return self.codes[index].astype(np.float32) * self.scale[index].astype(np.float32)[..., None]

    def scores(self, users):
        return block_scores(users, self.codes, self.scale)


def load_catalogue(folder, rerank):
    """The re-rank catalogue a version folder holds for ann.json's ``rerank``."""
    # mapped, not read: at 10^7 items the catalogue is 0.7-2.6 GB, shared by every instance
    if rerank == "fp32":
        return Fp32Catalogue(load_npy(folder, "catalogue", mmap=True))
    if rerank == "int8":
        return Int8Catalogue(load_npy(folder, "catalogue_codes", mmap=True), load_npy(folder, "catalogue_scale"))
    raise PipelineFault(f"ann.json names an unknown rerank {rerank!r}; valid: {', '.join(RERANKS)}")


def fetch_sizes(k, seen_counts, overfetch, n_items):
    """Candidates fetched per row: k + ceil(overfetch * L), to the next power of two, <= n_items."""
    want = k + np.ceil(overfetch * np.asarray(seen_counts, dtype=np.float64)).astype(np.int64)
    rounded = 2 ** np.ceil(np.log2(np.maximum(want, 1))).astype(np.int64)
    return np.minimum(rounded, n_items)


def seen_mask(candidates, seen):
    """[B, F] True where a row's candidate is among that row's seen items (seen [B, L], -1 padded):
    one sorted array of (row, item) keys and a binary search per candidate."""
    rows = np.arange(len(candidates), dtype=np.int64)[:, None]
    n = int(max(candidates.max(initial=0), seen.max(initial=0))) + 1
    keys = np.sort((rows * n + seen)[seen >= 0])
    if not len(keys):
        return np.zeros(candidates.shape, bool)
    probe = rows * n + candidates
    return keys[np.minimum(np.searchsorted(keys, probe), len(keys) - 1)] == probe


def rank_candidates(candidates, users, catalogue, seen, k):
    """candidates [B, F] internal indices (-1: none) -> (best [B, k], scores [B, k], survivors [B]).

    catalogue: an Fp32Catalogue / Int8Catalogue (or FP32 rows [I, D]). Scores of the candidates,
    seen and missing ones -inf, best first with ties by the lower index; survivors: how many
    finite candidates each row had.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    valid = candidates >= 0
    safe = np.where(valid, candidates, 0)
    if isinstance(catalogue, np.ndarray):
        catalogue = Fp32Catalogue(catalogue)
    users = np.asarray(users, dtype=np.float32)
    scores = np.matmul(catalogue.rows(safe), users[:, :, None])[..., 0]
    if seen.shape[1]:
        valid &= ~seen_mask(safe, seen)
    # one candidate can come back twice (IVF probes): keep its first copy (checked first: rare)
    ordered = np.sort(candidates, axis=1)
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():
        order = np.argsort(safe, axis=1, kind="stable")
        ordered = np.take_along_axis(safe, order, axis=1)
        repeat = np.zeros_like(valid)
        np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
        valid &= ~repeat
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    order = np.lexsort((safe, -scores), axis=1)[:, :k]
    best = np.take_along_axis(safe, order, axis=1)
    best_scores = np.take_along_axis(scores, order, axis=1)
    return best, best_scores, valid.sum(axis=1)


class AnnSearcher:
    """The index, the vectors and the settings of one ANN step.

    ``AnnSearcher.load(folder)`` reads a version folder (once, in initialize()); benchmarks
    build one from arrays in memory. users: [U, D] vectors addressed by USER_INDEX; catalogue:
    an Fp32Catalogue, an Int8Catalogue or FP32 rows [I, D].
    """

    def __init__(self, index, users, catalogue, item_ids, popularity, settings, threads=1):
        self.index = index
        self.users = np.asarray(users, dtype=np.float32)
        self.catalogue = catalogue if isinstance(catalogue, (Fp32Catalogue, Int8Catalogue)) \
            else Fp32Catalogue(catalogue)
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.settings = {**dict(settings), "rerank": self.catalogue.rerank}
        if self.catalogue.shape != (len(self.item_ids), self.users.shape[1]):
            raise ValueError(f"catalogue {list(self.catalogue.shape)} does not match "
                             f"{len(self.item_ids)} items of width {self.users.shape[1]}")
        faiss.omp_set_num_threads(int(threads))
        self.fallbacks = 0            # rows answered by exact search (a counter for reports)

    @classmethod
    def load(cls, folder, threads=1):
        with open(os.path.join(folder, "ann.json")) as handle:
            settings = json.load(handle)
        return cls(faiss.read_index(os.path.join(folder, "index.faiss")), load_npy(folder, "user_vectors"),
                   load_catalogue(folder, settings.get("rerank", "fp32")), load_npy(folder, "item_ids"),
                   load_npy(folder, "popularity"), settings, threads)

    def search(self, vectors, fetch):
        """-> internal indices [B, k_factor * fetch] (-1 where the index found fewer)."""
        width = self.index.d
        queries = np.zeros((len(vectors), width), np.float32)
        # the index's extra columns (the inner-product-to-L2 column, IVF-PQ's padding) are 0 in a query
        queries[:, :vectors.shape[1]] = vectors
        ask = min(len(self.item_ids), int(np.ceil(self.settings.get("k_factor", 1) * fetch)))
        kind = self.settings["kind"]
        if kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(int(self.settings["ef_search"]), ask))
        elif kind == "ivfpq":
            params = faiss.SearchParametersIVF(nprobe=int(self.settings["nprobe"]))
        else:
            raise PipelineFault(f"ann.json names an unknown index kind {kind!r}")
        return self.index.search(queries, ask, params=params)[1]

    def top_k(self, user_index, seen, is_known, k):
        """-> (raw item ids [B, k], exact scores [B, k]), the exact ``topk`` model's contract."""
        index = np.asarray(user_index, dtype=np.int64).reshape(-1)
        known = np.asarray(is_known).reshape(-1).astype(bool)
        seen = np.asarray(seen, dtype=np.int64).reshape(len(index), -1)
        if len(known) != len(index) or (len(index) and index.max(initial=0) >= len(self.users)):
            raise PipelineFault(f"USER_INDEX {list(index.shape)} / IS_KNOWN {list(known.shape)} "
                                f"disagree with {len(self.users)} user vectors")
        best = np.zeros((len(index), k), np.int64)
        scores = np.full((len(index), k), -np.inf, np.float32)
        exact = ~known
        fetch = fetch_sizes(k, (seen >= 0).sum(axis=1), float(self.settings["overfetch"]), len(self.item_ids))
        for size in np.unique(fetch[known]):
            rows = np.flatnonzero(known & (fetch == size))
            candidates = self.search(self.users[index[rows]], int(size))
            found, found_scores, left = rank_candidates(candidates, self.users[index[rows]],
                                                        self.catalogue, seen[rows], k)
            best[rows], scores[rows] = found, found_scores
            exact[rows[left < k]] = True
        self.fallbacks += int(exact[known].sum())
        ids = np.where(np.isfinite(scores), self.item_ids[best], -1)
        if exact.any():   # cold starts and rows the index left short: the exact answer
            rows = np.flatnonzero(exact)
            all_scores = self.catalogue.scores(self.users[index[rows]])
            ids[rows], scores[rows] = top_k(all_scores, seen[rows], known[rows], k, self.popularity,
                                            self.item_ids)
        return ids.astype(np.int64), scores.astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        threads = (config.get("parameters") or {}).get("threads", {}).get("string_value", "1")
        self.searcher = AnnSearcher.load(version_folder(args), int(threads) if threads.isdigit() else 1)

    def execute(self, requests):
        return execute_requests("ann_search", requests, self.answer)

    def answer(self, get):
        k = parse_k(get("K"), len(self.searcher.item_ids))
        ids, best = self.searcher.top_k(get("USER_INDEX"), get("SEEN_ITEMS"), get("IS_KNOWN"), k)
        return {"ITEM_IDS": ids, "TOP_SCORES": best}
