"""The fused lookup -> score -> mask -> top-K graph equals the three-step numpy reference."""
import numpy as np
import pytest
import torch

from recdeploy.export.fused import (
    FusedExportError,
    FusedRetrieval,
    check_fused_parity,
    export_fused_onnx,
    export_fused_torchscript,
    fused_ensemble_spec,
    fused_model_spec,
    module_runner,
    onnx_runner,
)


@pytest.fixture(scope="module")
def tiny():
    """3 users (ids 5, 9, 12), 6 items; user 9 has seen items 0 and 3, user 12 nothing."""
    rng = np.random.default_rng(0)
    features = type("F", (), dict(
        user_ids=np.array([5, 9, 12]), seen_indptr=np.array([0, 1, 3, 3]),
        seen_items=np.array([2, 0, 3]), item_ids=np.array([100, 101, 102, 103, 104, 105]),
        popularity=np.array([4, 9, 9, 1, 0, 7], np.float32)))
    users = rng.normal(size=(3, 4)).astype(np.float32)
    items = rng.normal(size=(6, 4)).astype(np.float32)
    bias = rng.normal(size=6).astype(np.float32)
    fused = FusedRetrieval(users, items, bias, features.popularity, features.user_ids,
                           features.seen_indptr, features.seen_items, features.item_ids)
    return fused, features, users @ items.T + bias


def test_onnx_equals_reference_including_unknown_users_and_exhausted_rows(tiny, tmp_path):
    fused, features, all_scores = tiny
    path = export_fused_onnx(fused, tmp_path / "f.onnx", np.array([5, 9]))
    users = np.array([5, 9, 12, 7, -1, 10 ** 15])
    parity = check_fused_parity(onnx_runner(path), fused, features, all_scores, users, ks=(1, 3, 6))
    assert parity.users_checked == 6 and parity.max_score_diff < 1e-5
    ids, scores = onnx_runner(path)(np.array([[7], [9]]), np.array([[6], [6]], np.int32))
    # unknown user 7: popularity order, ties (101, 102 at 9) by lower index
    assert ids[0].tolist() == [101, 102, 105, 100, 103, 104]
    # user 9 has seen items 0 and 3: only four remain, padded with -1 / -inf
    assert ids[1, 4:].tolist() == [-1, -1] and np.isneginf(scores[1, 4:]).all()


def test_rows_asking_fewer_than_the_batch_max_are_padded(tiny, tmp_path):
    fused, _, _ = tiny
    ids, scores = onnx_runner(export_fused_onnx(fused, tmp_path / "f.onnx", np.array([5])))(
        np.array([[5], [12]]), np.array([[2], [4]], np.int32))
    assert ids.shape == (2, 4) and ids[0, 2:].tolist() == [-1, -1] and (ids[1] >= 0).all()


def test_torchscript_equals_reference_up_to_tie_order(tiny, tmp_path):
    fused, features, all_scores = tiny
    scripted = torch.jit.load(str(export_fused_torchscript(fused, tmp_path / "f.pt")))
    check_fused_parity(module_runner(scripted), fused, features, all_scores,
                       np.array([5, 9, 12, 7]), ks=(1, 3, 6), exact_ties=False)


def test_parity_check_catches_a_wrong_graph(tiny):
    fused, features, all_scores = tiny
    with pytest.raises(FusedExportError, match="differ(s)? from the reference"):
        check_fused_parity(module_runner(fused), fused, features, all_scores + np.arange(6), np.array([5, 9]))


def test_specs_keep_the_recommend_contract():
    model = fused_model_spec()
    ensemble = fused_ensemble_spec(model)
    assert [t.name for t in ensemble.inputs] == ["USER_ID", "K"]
    assert [t.name for t in ensemble.outputs] == ["ITEM_IDS", "SCORES"]
    torch_model = fused_model_spec("fused_torch", platform="pytorch_libtorch", kind="KIND_GPU")
    step = fused_ensemble_spec(torch_model, "recommend_torch").steps[0]
    # contract names on the libtorch model too: they map to forward()'s outputs by order
    assert step.output_map == {"ITEM_IDS": "ITEM_IDS", "SCORES": "SCORES"}
    assert [t.name for t in torch_model.outputs] == ["ITEM_IDS", "SCORES"]
    assert dict(model.parameters)["batch_group_inputs"] == "K"


def test_both_masking_strategies_agree(tiny, tmp_path):
    """Short histories are masked after a TopK over k + L, long ones in place before it."""
    fused, features, all_scores = tiny
    users = np.array([5, 9, 12, 7])
    assert fused.mask_after_topk  # at most 2 seen items per user here
    for strategy in (True, False):
        fused.mask_after_topk = strategy
        path = export_fused_onnx(fused, tmp_path / f"f{strategy}.onnx", np.array([5, 9]))
        check_fused_parity(onnx_runner(path), fused, features, all_scores, users, ks=(1, 2, 4, 6))
    fused.mask_after_topk = True


def test_biased_mf_scorer_folds_into_the_fused_graph(tmp_path):
    """DotProductScorer (biases as extra columns) fuses too; NeuMF's MLP scorer does not."""
    from recdeploy.export.fused import dot_product_parts, fused_from_repository
    from recdeploy.train.models import build_model

    torch.manual_seed(0)
    mf = build_model("biased_mf", n_users=3, n_items=6, dim=4, global_mean=3.5)
    scorer = mf.retrieval_scorer().eval()
    features = type("F", (), dict(
        user_ids=np.array([5, 9, 12]), seen_indptr=np.array([0, 1, 3, 3]), seen_items=np.array([2, 0, 3]),
        item_ids=np.arange(100, 106), popularity=np.array([4, 9, 9, 1, 0, 7], np.float32)))
    fused = fused_from_repository(scorer, features)
    with torch.no_grad():
        all_scores = scorer(torch.arange(3)[:, None]).numpy()
    path = export_fused_onnx(fused, tmp_path / "mf.onnx", np.array([5, 9]))
    check_fused_parity(onnx_runner(path), fused, features, all_scores, np.array([5, 9, 12, 7]), ks=(1, 3, 6))
    neumf = build_model("neumf", n_users=3, n_items=6, dim=4)
    assert dot_product_parts(neumf.retrieval_scorer()) is None


def test_torchscript_per_row_path_equals_the_graph_path(tiny, tmp_path):
    """On CPU the scripted model loops over rows; it must answer what the graph form does,
    for unknown users, users out of unseen items, and rows asking fewer than the batch max."""
    fused, _, _ = tiny
    scripted = torch.jit.load(str(export_fused_torchscript(fused, tmp_path / "f.pt")))
    users = torch.tensor([[5], [9], [12], [7], [-1], [9]])
    for k in ([[6]] * 6, [[1], [6], [2], [3], [6], [4]], [[2]] * 6):
        k = torch.tensor(k, dtype=torch.int32)
        with torch.inference_mode():
            row_ids, row_scores = scripted.per_row_forward(users, k)
            graph_ids, graph_scores = scripted.graph_forward(users, k)
            ids, scores = scripted(users, k)
        assert torch.equal(ids, row_ids) and torch.equal(scores, row_scores)
        torch.testing.assert_close(row_scores, graph_scores, rtol=0, atol=1e-6)
        finite = torch.isfinite(graph_scores)
        assert torch.equal(finite, torch.isfinite(row_scores))
        # unique scores here, so the ids agree too (ties could order differently)
        assert torch.equal(row_ids, graph_ids)


def test_torchscript_per_row_path_refuses_k_beyond_the_catalogue(tiny, tmp_path):
    fused, _, _ = tiny
    scripted = torch.jit.load(str(export_fused_torchscript(fused, tmp_path / "f.pt")))
    with pytest.raises(Exception, match="K must be between 1 and the catalogue size 6, got 7"):
        scripted(torch.tensor([[5]]), torch.tensor([[7]], dtype=torch.int32))
    with pytest.raises(Exception, match="K must be between 1 and the catalogue size 6, got 0"):
        scripted(torch.tensor([[5]]), torch.tensor([[0]], dtype=torch.int32))
    ids, _ = scripted(torch.tensor([[5]]), torch.tensor([[6]], dtype=torch.int32))
    assert ids.shape == (1, 6)
