"""Against the real tritonserver: the ``criteo_rank`` ensemble, a row-wise INT8 variant and the
cached-tables entry answer exactly as their in-process pipelines (padding, repeats, missing and
unseen values included; the cached entry as the full ranker), the cache's hits are counters on
the metrics port, and a client's mistake is INVALID_ARGUMENT with the server still up."""
import re
import urllib.request

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.compress.criteo_tables import with_tables
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.export.scenarios.criteo import add_criteo_variant, export_criteo, export_ranker
from recdeploy.export.scenarios.criteo_cached import add_cached_tables
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
    add_cached_tables(model, repo, capacity=100)      # far fewer rows than the table: evictions
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
    assert set(report.requests) == {"criteo_rank", "criteo_rank_int8", "criteo_rank_cached"}
    assert report.max_abs_score_diff <= 1e-5


def cache_counters(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    found = {what: re.search(rf'^recdeploy_cache_{what}_total{{model="criteo_features_cached"}} (\S+)$', text, re.M)
             for what in ("hits", "lookups")}
    assert all(found.values()), text
    return {what: float(match.group(1)) for what, match in found.items() if match}


def test_cache_hits_are_counted_on_the_metrics_port(criteo_server, criteo_repo):
    from recdeploy.export.scenarios import scenario_named
    from recdeploy.export.scenarios.base import entries_of

    before = cache_counters(criteo_server)
    scenario = scenario_named("criteo")
    request = scenario.perf_rows(criteo_repo, entries_of(criteo_repo)["criteo_rank_cached"], k=5, n=2)
    request["CATEGORICAL"][:, :, 1:] = -1              # 40 x 26 lookups of <= 40 + 25 rows: they fit
    with RecommendClient(criteo_server.grpc_url, "grpc", model="criteo_rank_cached") as client:
        for _ in range(2):                             # the second time, every row is a hit
            client.infer(request, ["ITEM_IDS", "SCORES"])
    after = cache_counters(criteo_server)
    lookups = 2 * request["CATEGORICAL"].size
    assert after["lookups"] - before["lookups"] == lookups
    assert lookups / 2 <= after["hits"] - before["hits"] <= lookups


@pytest.mark.parametrize("entry", ["criteo_rank", "criteo_rank_cached"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_ids_are_a_client_error_and_the_server_stays_up(criteo_server, protocol, entry):
    from tritonclient.utils import InferenceServerException

    url = criteo_server.grpc_url if protocol == "grpc" else criteo_server.http_url
    request = {"DENSE": np.zeros((1, 3, 13), np.float32), "CATEGORICAL": np.full((1, 3, 26), -7, np.int64),
               "CANDIDATES": np.arange(3, dtype=np.int64)[None], "K": np.array([[2]], np.int32)}
    with RecommendClient(url, protocol, model=entry) as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(request, ["ITEM_IDS", "SCORES"])
        assert error.value.status() == CLIENT_ERROR[protocol]
        assert "32-bit" in error.value.message()
        wrong = {**request, "CATEGORICAL": np.zeros((1, 3, 25), np.int64)}
        with pytest.raises(InferenceServerException) as error:
            client.infer(wrong, ["ITEM_IDS", "SCORES"])
        assert error.value.status() == CLIENT_ERROR[protocol]
        request["CATEGORICAL"][:] = -1
        assert client.infer(request, ["ITEM_IDS", "SCORES"])["ITEM_IDS"].shape == (1, 2)
    assert criteo_server.is_ready()
