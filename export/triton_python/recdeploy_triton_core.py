"""recdeploy_triton_core: the numpy core every python-backend model of recdeploy shares.

    from recdeploy_triton_core import BadRequest, execute_requests, parse_k, top_k

Not a model. ``python_model_files(name)`` copies this file beside ``model.py`` into every
python model's version folder. The 2.51 stub (and the stock NGC container's, the same
python backend) appends ``<model>/<version>`` and ``<model>`` to ``sys.path`` and imports
``model.py`` as ``<version>.model``, so ``import recdeploy_triton_core`` finds the copy beside
it. Each model instance runs in its own stub process, so models carrying different copies
cannot see each other's. ``sys.path`` lists site-packages before the version folder: a pip
package of the same name would win, hence a name no package uses. In-process,
``load_python_model`` registers this file under the same name before loading a model file.

Error semantics (one response per request, one bad request never fails the others):
``BadRequest`` is the client's mistake -> INVALID_ARGUMENT (HTTP 400); anything else, e.g.
``PipelineFault`` or a bug -> INTERNAL (HTTP 500), which monitoring counts as a server fault.
Imports only numpy (and the backend's ``triton_python_backend_utils`` when present).
"""
import os

import numpy as np

try:  # present inside Triton's python backend; absent when tests import the numpy core
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover
    pb_utils = None


class BadRequest(ValueError):
    """The request is wrong (K out of range, a wrong shape or dtype): INVALID_ARGUMENT."""


class PipelineFault(RuntimeError):
    """An input an earlier ensemble step produced disagrees with this model's artifacts (say
    the scorer's catalogue and item_ids.npy): the deployment is broken, not the request."""


def version_folder(args):
    """The model's own version folder: artifacts are read from here, never from a request."""
    return os.path.join(args["model_repository"], str(args["model_version"]))


def load_npy(folder, name, mmap=False):
    """np.load(<folder>/<name>.npy) whose error names the file (a truncated copy, say).
    mmap: map the file read-only instead of reading it (the pages are shared by every process
    that maps it: a server's instances and an in-process reference)."""
    path = os.path.join(folder, f"{name}.npy")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except Exception as error:
        raise ValueError(f"cannot load {path}: {type(error).__name__}: {error}") from error


def parse_k(k, limit, what="the catalogue size"):
    """One K for the request: an integer, the same for every row, 1 <= K <= limit.

    ``what`` names the limit in the message ("the number of candidates" for a ranker).
    """
    k = np.asarray(k).reshape(-1)
    if k.size == 0:
        raise BadRequest("K is empty; send one positive integer per row")
    if k.dtype.kind not in "iu":
        raise BadRequest(f"K must be one integer per row, got {k.dtype} values "
                         f"(K must be an integer tensor)")
    if np.any(k != k[0]):
        raise BadRequest(f"K must be the same for every row of a request, got {sorted(set(k.tolist()))}")
    value = int(k[0])
    if not 1 <= value <= limit:
        raise BadRequest(f"K must be between 1 and {what} {limit}, got {value}")
    return value


def user_id_column(user_ids):
    """USER_ID [B] or [B, 1] integers -> int64 [B]; BadRequest for another shape or dtype."""
    return id_column(user_ids, "USER_ID")


def id_column(ids, name):
    """An id input ``name`` ([B] or [B, 1] integers) -> int64 [B]; BadRequest otherwise."""
    ids = np.asarray(ids)
    if ids.ndim > 2 or (ids.ndim == 2 and ids.shape[1] != 1):
        raise BadRequest(f"{name} must be [batch, 1], got {list(ids.shape)}")
    if ids.dtype.kind not in "iu":
        raise BadRequest(f"{name} must be an integer tensor, got {ids.dtype}")
    return ids.reshape(-1).astype(np.int64)


def top_k(scores, seen, is_known, k, popularity, item_ids):
    """-> (raw item ids [B,K], scores [B,K]); seen items removed, unknown users get popularity.

    SCORES [B, I], SEEN_ITEMS [B, L] internal indices (-1 padded) and IS_KNOWN [B, 1] come
    from earlier steps, so a mismatch with the artifacts is a PipelineFault. Rows with fewer
    than K unseen items end in -1 (score -inf). Ties: the lower item index first.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[1] != len(item_ids):
        raise PipelineFault(f"SCORES must be [batch, {len(item_ids)}], got {list(scores.shape)}")
    known = np.asarray(is_known).reshape(-1).astype(bool)
    if len(known) != len(scores):
        raise PipelineFault(f"IS_KNOWN has {len(known)} rows, SCORES {len(scores)}")
    scores = np.where(known[:, None], scores, popularity[None, :]).astype(np.float32)
    seen = np.asarray(seen, dtype=np.int64).reshape(len(scores), -1)
    if seen.size and seen.max() >= scores.shape[1]:
        raise PipelineFault(f"SEEN_ITEMS holds index {int(seen.max())}, beyond the catalogue "
                            f"({scores.shape[1]} items)")
    rows, cols = np.nonzero(seen >= 0)
    scores[rows, seen[rows, cols]] = -np.inf
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    # stable order: by score, ties by item index, so served and offline lists agree exactly
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    best = np.take_along_axis(candidates, order, axis=1)
    best_scores = np.take_along_axis(candidate_scores, order, axis=1)
    ids = np.where(np.isfinite(best_scores), item_ids[best], -1)
    return ids.astype(np.int64), best_scores.astype(np.float32)


# ---------------------------------------------------------------- the execute adapter

def execute_requests(model, requests, handler):
    """One response per request: ``handler(get)`` -> {output name: array}.

    ``get(name)`` is the request's input as numpy. A ``BadRequest`` answers that request
    INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT): the client must fix it, a retry cannot
    help. Any other exception answers INTERNAL (500). Messages start with ``model``.
    """
    responses = []
    for request in requests:
        try:
            outputs = handler(_input_getter(request))
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(array)) for name, array in outputs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        except BadRequest as error:
            responses.append(error_response(f"{model}: {error}", pb_utils.TritonError.INVALID_ARG))
        except Exception as error:  # one bad request must not take the others down
            responses.append(error_response(f"{model}: {type(error).__name__}: {error}",
                                            pb_utils.TritonError.INTERNAL))
    return responses


def error_response(message, code):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def _input_getter(request):
    def get(name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:  # Triton checks required inputs; only a direct misuse lands here
            raise BadRequest(f"input {name} is missing")
        return tensor.as_numpy()
    return get
