"""The Triton chunk-max kernel of the GPU benchmark, run by Triton's interpreter on a CPU (where
triton is installed: the test extra has it), in a fresh TRITON_INTERPRET=1 process."""
import os
import re

import numpy as np
import pytest
import torch

from recdeploy.export.fused_gpu import GpuRetrieval
from recdeploy.perf.synthetic_catalogue import synthetic_features


def test_the_kernel_under_the_interpreter(under_interpreter):
    assert re.search(r"\b2 passed", under_interpreter(__file__))


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="run by test_the_kernel_under_the_interpreter")
@pytest.mark.parametrize("groups", [0, 2])
def test_the_kernel_keeps_each_chunks_best_score_and_the_answers_equal_the_torch_form(groups):
    pytest.importorskip("triton")
    from recdeploy.perf.gpu_triton import TritonChunkRank

    f = synthetic_features(n_items=3000, n_users=200, dim=64, seed=2)
    model = GpuRetrieval(f.user_vectors, f.item_vectors, f.item_bias, f.popularity, f.user_ids, f.seen_indptr,
                         f.seen_items, f.item_ids, chunk=8, groups=groups)
    uid = torch.as_tensor(np.r_[f.user_ids[:20], [-1, 10 ** 9]])
    for config in ((128, 4, 4, 3), (64, 2, 4, 2)):
        rank = TritonChunkRank(model, 8, config)
        users = model.users_half[model.id_to_row[uid[:5]]][:, :64].contiguous()
        scores = users.float() @ model.items_half_t[:64].float() + model.items_full[:, 64]
        np.testing.assert_allclose(rank.chunk_maxima(users).float().numpy(),
                                   scores.view(5, -1, 8).amax(2).numpy(), atol=4e-3)   # stored as FP16
        ids, best = rank(uid, 50)
        want_ids, want_best = model.rank_static(uid, 50)
        assert torch.equal(ids, want_ids) and torch.equal(best, want_best)
    with pytest.raises(ValueError, match="build the GpuRetrieval with chunk=16"):
        TritonChunkRank(model, 16)
