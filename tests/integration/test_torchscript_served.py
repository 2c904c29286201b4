"""Without the native backend (no compiler, or RECDEPLOY_NATIVE_BACKEND=0) the python-based
``pytorch`` backend serves the same TorchScript files and AOTInductor packages, and answers
like the ONNX fused model, up to the order of tied scores."""
import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def python_based_server(repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=repository, native_backends=False)) as server:
        yield server


@pytest.mark.parametrize("entry", ["recommend_fused_libtorch", "recommend_fused_aoti"])
def test_python_based_pytorch_backend_serves_the_libtorch_and_aoti_variants(python_based_server, ml100k, entry):
    assert "libtorch backend:" not in python_based_server.log_path.read_text()
    users = np.r_[ml100k.user_ids[:24], [10 ** 9]]
    with RecommendClient(python_based_server.grpc_url, model="recommend_fused") as onnx_client, \
            RecommendClient(python_based_server.grpc_url, model=entry) as torch_client:
        want_ids, want_scores = onnx_client.recommend(users, k=20)
        ids, scores = torch_client.recommend(users, k=20)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    known = slice(0, 24)  # learned scores have no ties: the lists are identical
    assert np.array_equal(ids[known], want_ids[known])
    # the unknown user ranks by popularity counts, full of ties: the same scores, maybe another tie order
    assert sorted(scores[-1].tolist()) == sorted(want_scores[-1].tolist())
