"""The three-kernel Triton form of the fused retrieval contract, run by Triton's interpreter on a
CPU where triton is installed (it is not a dependency: ``pip install triton`` runs these here;
the GPU run measures it, docs/gpu_h200.md). Small catalogues: the interpreter is slow."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recdeploy.export import fused_triton
from recdeploy.export.fused_gpu import GpuRetrieval
from recdeploy.perf.synthetic_catalogue import synthetic_features

# the interpreter's own numpy use, not ours
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")


# the kernel tests run in a fresh TRITON_INTERPRET=1 process (conftest's under_interpreter)
interpreted_only = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                      reason="run by test_the_kernels_under_the_interpreter")


def test_the_kernels_under_the_interpreter(under_interpreter):
    assert re.search(r"\b4 passed", under_interpreter(__file__))     # the 3 below and the errors' test


@pytest.fixture
def interpreted():
    pytest.importorskip("triton")
    return fused_triton


def _model(features, **kwargs):
    f = features
    return GpuRetrieval(f.user_vectors, f.item_vectors, f.item_bias, f.popularity, f.user_ids, f.seen_indptr,
                        f.seen_items, f.item_ids, chunk=8, margin=kwargs.pop("margin", 32), **kwargs)


@interpreted_only
def test_answers_equal_the_torch_form_for_known_unknown_users_and_per_row_k(interpreted):
    f = synthetic_features(n_items=3000, n_users=200, dim=64, seed=2)
    model = _model(f, groups=4)
    rank = interpreted.TritonFusedRank(model, (32, 4, 2), margin_cap=8)
    uid = torch.as_tensor(np.r_[f.user_ids[:5], [-1, 10 ** 9]])
    ids, best = rank(uid, 10)
    want_ids, want_best = model.rank_static(uid, 10)
    assert torch.equal(ids, want_ids)
    np.testing.assert_allclose(best.numpy(), want_best.numpy(), rtol=1e-5, atol=1e-5)
    assert (ids[-2:] == model.cold_ids[:10]).all()                      # unknown users: the popularity list
    # a row's own k pads the rest of its row, as GpuRetrieval.forward does
    k = torch.tensor([10, 3, 1, 10, 0, 10, 2], dtype=torch.int32)
    ids_k, best_k = rank(uid, 10, k)
    for row, own in enumerate(k.tolist()):
        assert torch.equal(ids_k[row, :own], want_ids[row, :own])
        assert (ids_k[row, own:] == -1).all() and torch.isinf(best_k[row, own:]).all()


@interpreted_only
def test_seen_items_never_come_back_and_tied_chunk_maxima_keep_the_best_scores(interpreted):
    f = synthetic_features(n_items=2000, n_users=50, dim=16, seed=5)
    # every item twice (ids differ, vectors and bias equal): chunk maxima tie in pairs
    half = f.item_vectors[:1000]
    f.item_vectors[1000:], f.item_bias[1000:] = half, f.item_bias[:1000]
    model = _model(f, groups=2, margin=8)
    rank = interpreted.TritonFusedRank(model, (16, 4, 2), margin_cap=4)
    uid = torch.as_tensor(f.user_ids[:4])
    ids, best = rank(uid, 12)
    _, want_best = model.rank_static(uid, 12)
    np.testing.assert_allclose(best.numpy(), want_best.numpy(), rtol=1e-5, atol=1e-5)
    for row, user in enumerate(uid.tolist()):
        position = int(model.id_to_row[user])
        seen = set(f.seen_items[f.seen_indptr[position]:f.seen_indptr[position + 1]].tolist())
        assert not seen & set(ids[row].tolist())


@interpreted_only
def test_the_served_form_exports_with_a_dynamic_batch_and_answers_like_the_eager_form(interpreted):
    f = synthetic_features(n_items=1500, n_users=40, dim=16, seed=3)
    model = _model(f, groups=2, margin=8)
    rank = interpreted.TritonFusedRank(model, (16, 4, 2), margin_cap=4)
    served = interpreted.TritonRetrieval(rank, 8, block_m=16)
    uid = torch.as_tensor(np.r_[f.user_ids[:3], [-5]]).reshape(-1, 1)
    ids, best = served(uid, torch.tensor([[8], [8], [4], [8]], dtype=torch.int32))
    want_ids, _ = rank(uid[:, 0], 8)
    assert ids.shape == (4, 8) and torch.equal(ids[[0, 1, 3]], want_ids[[0, 1, 3]])
    assert torch.equal(ids[2, :4], want_ids[2, :4]) and (ids[2, 4:] == -1).all()


def test_errors_name_the_setting_to_change():
    """(No triton needed: the settings are checked before any kernel is loaded.)"""
    f = synthetic_features(n_items=1500, n_users=40, dim=16, seed=3)
    with pytest.raises(ValueError, match="groups > 1"):
        fused_triton.TritonFusedRank(_model(f, groups=0))
    model = _model(f, groups=2, margin=8)
    with pytest.raises(ValueError, match="whole number of 32-item tiles"):
        fused_triton.TritonFusedRank(model, (32, 4, 2))
    with pytest.raises(ValueError, match=f"must lie in 1..{model.max_k}"):
        fused_triton.TritonFusedRank(model, (16, 4, 2)).widths(model.max_k + 1)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the compiler's test, not the interpreter's")
def test_the_kernels_compile_for_a_hopper_gpu():
    """The interpreter runs what the compiler may refuse (a loop-carried variable changing shape,
    say): compile each kernel for sm_90 here, as the device run will (no GPU needed). In a fresh
    process: the interpreter leaves triton.language patched in this one."""
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILE], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parents[2], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["scan", "select", "rescore"]


COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from recdeploy.export import fused_triton_kernels as kernels
ints = {"table_size", "n_users", "rows", "n_items", "n_groups", "wide", "kmax"}
types = {"users": "*fp16", "items_t": "*fp16", "chunk_max": "*fp16", "group_max": "*fp16", "bias": "*fp32",
         "users_full": "*fp32", "items_full": "*fp32", "cold_scores": "*fp32", "out_scores": "*fp32",
         "picked_groups": "*i32", "cand": "*i32", "count": "*i32", "k": "*i32"}
settings = {kernels.scan: ({"D": 64, "BLOCK_D": 64, "BM": 32, "BN": 128, "CH": 8, "TILES": 4}, 4),
            kernels.select: ({"GP": 2048, "GROUP": 64, "GB": 16, "CAP": 256}, 4),
            kernels.rescore: ({"WIDTH": 72, "DB": 8, "CAP": 256, "CH": 8, "KP": 128}, 8)}
for kernel, (constants, warps) in settings.items():
    signature = {name: "constexpr" if name in constants else
                 "i32" if name in ints or name.startswith("stride") else types.get(name, "*i64")
                 for name in kernel.arg_names}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    assert ".entry" in compiled.asm["ptx"] and compiled.asm["cubin"]
    print(kernel.__name__)
"""
