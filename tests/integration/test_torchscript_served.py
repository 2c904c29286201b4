"""The python-based ``pytorch`` backend serves the fused TorchScript model (what KIND_GPU runs
on a GPU machine) and answers like the ONNX fused model, up to the order of tied scores."""
import shutil

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def torch_server(repository, tmp_path_factory, trained_run, ml100k):
    from recdeploy.export.fused import (export_fused_torchscript, fused_ensemble_spec, fused_from_repository,
                                        fused_model_spec)
    from recdeploy.export.repository import write_manifest, write_model
    from recdeploy.export.retrieval import build_feature_arrays
    from recdeploy.export.triton_config import build_ensemble_config, build_model_config
    from recdeploy.serve.server import ServerConfig, TritonServer
    from recdeploy.train.checkpoint import load_checkpoint

    repo = tmp_path_factory.mktemp("torch_repo") / "repo"
    shutil.copytree(repository, repo)
    scorer = load_checkpoint(trained_run[0]).model.retrieval_scorer().eval()
    fused = fused_from_repository(scorer, build_feature_arrays(ml100k))
    spec = fused_model_spec("fused_torch", platform="pytorch_libtorch", instances=1)
    path = export_fused_torchscript(fused, repo.parent / "model.pt")
    write_model(repo, build_model_config(spec), {"model.pt": path})
    write_model(repo, build_ensemble_config(fused_ensemble_spec(spec, "recommend_torch")), {})
    write_manifest(repo)
    with TritonServer(ServerConfig(model_repository=repo, verify_manifest=True)) as server:
        yield server


def test_torchscript_fused_equals_onnx_fused(torch_server, ml100k):
    users = np.r_[ml100k.user_ids[:24], [10 ** 9]]
    with RecommendClient(torch_server.grpc_url, model="recommend_fused") as onnx_client, \
            RecommendClient(torch_server.grpc_url, model="recommend_torch") as torch_client:
        want_ids, want_scores = onnx_client.recommend(users, k=20)
        ids, scores = torch_client.recommend(users, k=20)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    known = slice(0, 24)  # learned scores have no ties: the lists are identical
    assert np.array_equal(ids[known], want_ids[known])
    # the unknown user ranks by popularity counts, full of ties: the same scores, maybe another tie order
    assert sorted(scores[-1].tolist()) == sorted(want_scores[-1].tolist())
