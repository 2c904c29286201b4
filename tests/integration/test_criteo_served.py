"""Against the real tritonserver: the ``criteo_rank`` ensemble and a row-wise INT8 variant
answer exactly as their in-process pipelines (padding, repeats, missing and unseen values
included), and a client's mistake is INVALID_ARGUMENT with the server still up."""
import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.compress.criteo_tables import with_tables
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.export.scenarios.criteo import add_criteo_variant, export_criteo, export_ranker
from recdeploy.serve.canary import run_canary
from recdeploy.train.config import TrainConfig
from recdeploy.train.criteo.prepare import SyntheticSource, prepare
from recdeploy.train.criteo.synthetic import SyntheticCriteo
from recdeploy.train.tasks import run_task

pytestmark = pytest.mark.integration
CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}


@pytest.fixture(scope="module")
def criteo_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("criteo")
    data = prepare(SyntheticSource(SyntheticCriteo(rows=10_000, scale=0.002, chunk_rows=10_000)),
                   root / "data", progress=False)
    model = run_task(TrainConfig.for_model("dlrm", dataset="criteo", dim=4), data, progress=False).model
    repo = root / "repo"
    export_criteo(model, data, repo)
    int8 = with_tables(model, RowwiseTable.quantize(model.sparse_arch.tables.weight, 8))
    inputs = {"DENSE_X": np.random.rand(2, 3, 13).astype(np.float32),
              "SPARSE": np.zeros((2, 3, 26), np.int64)}
    add_criteo_variant(repo, export_ranker(int8, inputs, root / "int8" / "model.onnx", constant_folding=False),
                       "int8")
    return repo


@pytest.fixture(scope="module")
def criteo_server(criteo_repo):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=criteo_repo)) as running:
        yield running


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_equals_inprocess(criteo_server, criteo_repo, protocol):
    url = criteo_server.grpc_url if protocol == "grpc" else criteo_server.http_url
    report = run_canary(criteo_repo, url, protocol)
    assert set(report.requests) == {"criteo_rank", "criteo_rank_int8"}
    assert report.max_abs_score_diff <= 1e-5


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_ids_are_a_client_error_and_the_server_stays_up(criteo_server, protocol):
    from tritonclient.utils import InferenceServerException

    url = criteo_server.grpc_url if protocol == "grpc" else criteo_server.http_url
    request = {"DENSE": np.zeros((1, 3, 13), np.float32), "CATEGORICAL": np.full((1, 3, 26), -7, np.int64),
               "CANDIDATES": np.arange(3, dtype=np.int64)[None], "K": np.array([[2]], np.int32)}
    with RecommendClient(url, protocol, model="criteo_rank") as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(request, ["ITEM_IDS", "SCORES"])
        assert error.value.status() == CLIENT_ERROR[protocol]
        assert "32-bit" in error.value.message()
        request["CATEGORICAL"][:] = -1
        assert client.infer(request, ["ITEM_IDS", "SCORES"])["ITEM_IDS"].shape == (1, 2)
    assert criteo_server.is_ready()
