"""The fused retrieval model as a torch.export + AOTInductor package (``model.pt2``).

    recdeploy export --run runs/demo    # also writes fused_retrieval_aoti + recommend_fused_aoti
    RECDEPLOY_AOTI=0 recdeploy export ...   # without it (the compile takes a while on 2 cores)

PyTorch documents TorchScript as deprecated in favour of torch.export + AOTInductor. This
exports ``FusedRetrieval``'s branch-free ``graph_forward`` (the form the ONNX export takes)
with a dynamic batch, compiles it ahead of time into a shared library packaged with its
weights, checks it against the numpy reference like the other fused files, and serves it
through recdeploy's native libtorch backend, which loads a ``.pt2`` file with libtorch's
``AOTIModelPackageLoader``. What torch.export needed: the top-K width and the seen-list
width are data-dependent (``k.max()``, the batch's longest history), so they become unbacked
sizes; ``torch._check`` states K's valid range, which the package then checks at run time
(the native backend refuses a bad K before, as the client's mistake). The TorchScript CPU
path (``per_row_forward``) loops over rows in Python and does not export.

The package holds machine code for the exporting machine's CPU (Inductor compiles with its
vector ISA) or, exported on a GPU, for that device: export where it will be served, as with
a TensorRT plan. Compiling needs a C++ compiler (``g++`` or ``$CXX``); without one the export
leaves this variant out and says why.
"""
# no `from __future__ import annotations`: torch.export reads the wrapper's signature
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recdeploy.export.fused import (
    MAX_BATCH,
    FusedRetrieval,
    check_fused_parity,
    fused_ensemble_spec,
    fused_model_spec,
)
from recdeploy.export.repository import write_model
from recdeploy.export.triton_config import build_ensemble_config, build_model_config

AOTI_VARIANT = "aoti"
AOTI_FILE = "model.pt2"
# 0 leaves the AOTInductor variant out of every export
ENV_SWITCH = "RECDEPLOY_AOTI"


class AotiUnavailable(RuntimeError):
    """The AOTInductor package cannot be built here; the message says why."""


def aoti_enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def require_compiler() -> str:
    """The C++ compiler Inductor will use, or AotiUnavailable saying there is none."""
    from torch._inductor import exc
    from torch._inductor.cpp_builder import get_cpp_compiler
    try:
        return get_cpp_compiler()
    except exc.InvalidCxxCompiler as error:
        raise AotiUnavailable("no C++ compiler for AOTInductor (g++ on PATH, or set CXX)") from error


class CheckedRetrieval(nn.Module):
    """``graph_forward`` of a fused model (or any module with that contract), with K's valid
    range stated for torch.export: a K outside 1..n_items fails the call instead of
    returning a clipped or empty list."""

    def __init__(self, model: nn.Module, n_items: int):
        super().__init__()
        self.model = model
        self.n_items = n_items

    def forward(self, user_id: torch.Tensor, k: torch.Tensor):
        k_low, k_high = k.min().item(), k.max().item()
        torch._check(k_low >= 1, lambda: "K must be at least 1")
        torch._check(k_high <= self.n_items, lambda: f"K must be at most the catalogue size {self.n_items}")
        forward = getattr(self.model, "graph_forward", self.model)
        return forward(user_id, k)


def export_program(model: nn.Module, n_items: int, example_users: torch.Tensor,
                   max_batch: int = MAX_BATCH) -> torch.export.ExportedProgram:
    """torch.export of ``CheckedRetrieval(model)``: batch dynamic (1..max_batch), K and the
    seen-list width data-dependent. Example inputs live on the device the package is for."""
    users = example_users.reshape(-1, 1).to(torch.int64)
    k = torch.full_like(users, min(10, n_items), dtype=torch.int32)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return torch.export.export(CheckedRetrieval(model, n_items).eval(), (users, k),
                               dynamic_shapes=({0: batch}, {0: batch}), strict=False)


def export_fused_aoti(model: nn.Module, n_items: int, path: Path, example_users: np.ndarray,
                      device: str = "cpu") -> Path:
    """Compile ``model`` (FusedRetrieval, or a module with its contract) into ``path``.

    Raises AotiUnavailable without a C++ compiler."""
    require_compiler()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    users = torch.as_tensor(np.asarray(example_users, np.int64), device=device)
    with torch.no_grad():
        program = export_program(model, n_items, users)
        # the first batch size this process compiles for sets nothing: sizes stay symbolic
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path)))


def load_aoti(path: Path, device: str = "cpu"):
    """The compiled package as a callable on ``device``'s tensors: (users, k) -> (ids, scores)."""
    index = torch.device(device).index
    return torch._inductor.aoti_load_package(str(path), device_index=-1 if index is None else index)


def aoti_runner(path: Path, device: str = "cpu"):
    """(users [B,1], k [B,1]) numpy -> (ids, scores) numpy through a compiled package."""
    package = load_aoti(path, device)

    def run(users, k):
        with torch.inference_mode():
            ids, scores = package(torch.from_numpy(users).to(device), torch.from_numpy(k).to(device))
            return ids.cpu().numpy(), scores.cpu().numpy()
    return run


def write_fused_aoti_variant(repo: Path, fused: FusedRetrieval, features, check_user_ids: np.ndarray,
                             all_scores: np.ndarray) -> dict[str, dict]:
    """fused_retrieval_aoti (``model.pt2``, platform pytorch_libtorch: recdeploy's native
    backend loads it with AOTIModelPackageLoader) + recommend_fused_aoti, parity-checked
    against the numpy reference first. Returns {entry: reference}, as write_fused_variant.

    Raises AotiUnavailable when it cannot be built here (no compiler, or switched off)."""
    if not aoti_enabled():
        raise AotiUnavailable(f"switched off ({ENV_SWITCH}=0)")
    require_compiler()
    spec = fused_model_spec(f"fused_retrieval_{AOTI_VARIANT}", platform="pytorch_libtorch",
                            n_items=fused.n_items, filename=AOTI_FILE)
    unknown = np.array([-1, int(features.user_ids.max()) + 1, 2 ** 62], dtype=np.int64)
    users = np.r_[check_user_ids, unknown].astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_fused_aoti(fused, fused.n_items, Path(tmp) / AOTI_FILE, check_user_ids[:8])
        # torch.topk (the package calls ATen's) promises no order among equal scores
        check_fused_parity(aoti_runner(path), fused, features, all_scores, users, exact_ties=False)
        write_model(repo, build_model_config(spec), {AOTI_FILE: path})
    ensemble = fused_ensemble_spec(spec, f"recommend_fused_{AOTI_VARIANT}")
    write_model(repo, build_ensemble_config(ensemble), {})
    reference = {"kind": "aoti", "model": spec.name}
    return {ensemble.name: reference, spec.name: reference}
