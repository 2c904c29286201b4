"""GpuRetrieval (FP16 scan, FP32 rescore) answers exactly like the FP32 fused graph, on a CPU too."""
import numpy as np
import pytest
import torch

from recdeploy.export.fused import FusedExportError, FusedRetrieval, export_fused_torchscript
from recdeploy.export.fused_gpu import GpuRetrieval
from recdeploy.perf.synthetic_catalogue import synthetic_features


@pytest.fixture(scope="module")
def parts():
    f = synthetic_features(n_items=2000, n_users=300, dim=16, seen_per_user=12, seed=4)
    return (f.user_vectors, f.item_vectors, f.item_bias, f.popularity, f.user_ids, f.seen_indptr,
            f.seen_items, f.item_ids)


def ask(model, users, k):
    users_t = torch.as_tensor(np.asarray(users, np.int64)).reshape(-1, 1)
    k_t = torch.as_tensor(np.asarray(k, np.int32)).reshape(-1, 1).expand(len(users_t), 1).contiguous()
    with torch.inference_mode():
        forward = model.graph_forward if isinstance(model, FusedRetrieval) else model
        ids, scores = forward(users_t, k_t)
    return ids.numpy(), scores.numpy()


@pytest.mark.parametrize(("chunk", "groups"), [(0, 0), (16, 0), (4, 4)])
def test_equals_the_fp32_graph_for_known_and_unknown_users(parts, chunk, groups):
    reference = FusedRetrieval(*parts)
    model = GpuRetrieval(*parts, chunk=chunk, groups=groups)
    users = np.r_[parts[4][::7], [-1, 0, 10 ** 12]]
    for k in (1, 10, min(100, model.max_k)):       # chunks of 16: K up to 125 chunks - L - margin
        ids, scores = ask(model, users, k)
        want_ids, want_scores = ask(reference, users, k)
        assert ids.shape == (len(users), k)
        known = slice(0, len(users) - 3)
        # the same lists; where two items trade places, their scores differ by rounding only
        # (the rescore sums in another order than the reference's one GEMM)
        assert [set(row) for row in ids[known].tolist()] == [set(row) for row in want_ids[known].tolist()]
        swapped = ids[known] != want_ids[known]
        assert swapped.mean() < 0.01 and np.abs(scores[known][swapped] - want_scores[known][swapped]).max(
            initial=0) < 1e-5
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        # unknown users: the popularity list, ties by the lower index like the numpy reference
        order = np.argsort(-parts[3], kind="stable")[:k]
        assert (ids[-3:] == parts[7][order]).all()


def test_seen_items_never_come_back_and_rows_keep_their_own_k(parts):
    model = GpuRetrieval(*parts, chunk=16)
    users = parts[4][:6]
    ids, scores = ask(model, users, [3, 7, 3, 7, 3, 7])
    indptr, seen = parts[5], parts[6]
    for row in range(6):
        assert not set(ids[row].tolist()) & set(parts[7][seen[indptr[row]:indptr[row + 1]]].tolist())
    assert ids.shape == (6, 7) and (ids[0::2, 3:] == -1).all() and np.isneginf(scores[0::2, 3:]).all()


def test_a_row_that_runs_out_of_unseen_items_is_padded():
    ids_in = np.array([10, 11, 12, 13])
    model = GpuRetrieval(np.eye(2, dtype=np.float32), np.ones((4, 2), np.float32), np.zeros(4),
                         np.ones(4, np.float32), np.array([1, 2]), np.array([0, 3, 3]), np.array([0, 1, 2]), ids_in)
    ids, scores = ask(model, [1], 4)
    assert ids.tolist() == [[13, -1, -1, -1]] and np.isneginf(scores[0, 1:]).all()


@pytest.mark.parametrize("groups", [0, 4])
def test_scripted_and_static_forms_answer_the_same(parts, tmp_path, groups):
    model = GpuRetrieval(*parts, chunk=16 if not groups else 4, groups=groups)
    scripted = torch.jit.load(str(export_fused_torchscript(model, tmp_path / "m.pt")))
    users = parts[4][:20]
    ids, scores = ask(model, users, 50)
    assert np.array_equal(ask(scripted, users, 50)[0], ids)
    with torch.inference_mode():
        static_ids, static_scores = model.rank_static(torch.as_tensor(users), 50)
    assert np.array_equal(static_ids.numpy(), ids) and np.array_equal(static_scores.numpy(), scores)


def test_chunks_that_leave_no_room_for_a_top_k_are_refused(parts):
    with pytest.raises(FusedExportError, match="leave no room for a top-K"):
        GpuRetrieval(*parts, chunk=512)
    with pytest.raises(FusedExportError, match="chunk, margin and groups must be >= 0"):
        GpuRetrieval(*parts, chunk=-1)
    with pytest.raises(FusedExportError, match="groups of chunks need chunk > 0"):
        GpuRetrieval(*parts, groups=4)
    with pytest.raises(FusedExportError, match="32 blocks of 64 items leave no room"):
        GpuRetrieval(*parts, chunk=16, groups=4)
    assert GpuRetrieval(*parts, chunk=16).max_k == 2000 // 16 - 12 - 32
    assert GpuRetrieval(*parts, chunk=4, groups=4).max_k == 2000 // 16 - 12 - 32
