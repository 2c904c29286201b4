"""similar_items on the real tritonserver: served == in-process for every entry, bad input over
gRPC and HTTP, and item_knn served through the retrieval scenario."""
import re

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios import ExportJob, scenario_named
from recdeploy.export.scenarios.retrieval import export_retrieval
from recdeploy.export.scenarios.similar_items import SimilarItemsInProcess
from recdeploy.serve.canary import run_canary
from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.config import TrainConfig
from recdeploy.train.tasks import fit_closed_form

pytestmark = pytest.mark.integration

CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}
PROTOCOLS = ["grpc", "http"]
ENTRIES = {"similar_items": "neighbours_cosine", "similar_items_pearson": "neighbours_pearson",
           "similar_items_content": "neighbours_content", "similar_items_embedding": "neighbours_embedding"}


@pytest.fixture(scope="module")
def similar_repository(tmp_path_factory, trained_run, ml100k):
    repo = tmp_path_factory.mktemp("similar_served")
    scenario_named("similar_items").export(ExportJob(repo, {"run": load_checkpoint(trained_run[0])}, ml100k))
    return repo


@pytest.fixture(scope="module")
def similar_server(similar_repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=similar_repository, verify_manifest=True)) as running:
        yield running


def url_of(server, protocol):
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_entry_passes_the_canary(similar_server, similar_repository, protocol):
    report = run_canary(similar_repository, url_of(similar_server, protocol), protocol)
    assert set(report.requests) == set(ENTRIES) and report.max_abs_score_diff == 0.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_a_batch_of_real_items_is_served_as_in_process(similar_server, similar_repository, ml100k,
                                                       protocol, entry):
    items = np.sort(np.random.default_rng(5).choice(ml100k.item_ids, size=16, replace=False))
    with RecommendClient(url_of(similar_server, protocol), protocol, model=entry) as client:
        got = client.infer({"ITEM_ID": items.reshape(-1, 1), "K": np.full((16, 1), 25, np.int32)},
                           ["ITEM_IDS", "SCORES"])
    want_ids, want_scores = SimilarItemsInProcess(similar_repository, ENTRIES[entry]).similar(items, 25)
    assert got["ITEM_IDS"].shape == (16, 25) and np.array_equal(got["ITEM_IDS"], want_ids)
    assert not np.any(got["ITEM_IDS"] == items[:, None])
    np.testing.assert_array_equal(got["SCORES"], want_scores)


def served_error(server, protocol, inputs, model="similar_items"):
    from tritonclient.utils import InferenceServerException

    with RecommendClient(url_of(server, protocol), protocol, model=model) as client:
        with pytest.raises(InferenceServerException) as error:
            client.infer(inputs, ["ITEM_IDS", "SCORES"])
    return error.value.status(), error.value.message()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", ["K = 0", "K > the list", "K < 0", "K differs per row", "ITEM_ID [1, 2]",
                                  "ITEM_ID float"])
def test_bad_input_is_invalid_argument_and_the_server_stays_up(similar_server, protocol, case):
    one = np.array([[50]], np.int64)
    inputs, message = {
        "K = 0": ({"ITEM_ID": one, "K": np.array([[0]], np.int32)},
                  "neighbours_cosine: K must be between 1 and the neighbour-list length 100, got 0"),
        "K > the list": ({"ITEM_ID": one, "K": np.array([[101]], np.int32)},
                         "neighbours_cosine: K must be between 1 and the neighbour-list length 100, got 101"),
        "K < 0": ({"ITEM_ID": one, "K": np.array([[-3]], np.int32)}, "got -3"),
        "K differs per row": ({"ITEM_ID": np.array([[50], [1]], np.int64), "K": np.array([[3], [4]], np.int32)},
                              r"K must be the same for every row of a request, got \[3, 4\]"),
        "ITEM_ID [1, 2]": ({"ITEM_ID": np.array([[50, 1]], np.int64), "K": np.array([[3]], np.int32)},
                           r"unexpected shape for input 'ITEM_ID'.*Expected \[-1,1\], got \[1,2\]"),
        "ITEM_ID float": ({"ITEM_ID": np.array([[50.0]], np.float32), "K": np.array([[3]], np.int32)},
                          "ITEM_ID"),
    }[case]
    status, text = served_error(similar_server, protocol, inputs)
    assert status == CLIENT_ERROR[protocol] and re.search(message, text), text
    with RecommendClient(url_of(similar_server, protocol), protocol, model="similar_items") as client:
        assert client.infer({"ITEM_ID": one, "K": np.array([[3]], np.int32)}, ["ITEM_IDS"])["ITEM_IDS"].shape == (1, 3)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_items_get_the_most_popular_items_beside_real_answers(similar_server, ml100k, protocol):
    counts = np.bincount(ml100k.items, minlength=ml100k.n_items)
    popular = ml100k.item_ids[np.argsort(-counts, kind="stable")[:5]]
    items = np.array([[10 ** 9], [-4], [int(ml100k.item_ids[0])]], np.int64)
    with RecommendClient(url_of(similar_server, protocol), protocol, model="similar_items_pearson") as client:
        got = client.infer({"ITEM_ID": items, "K": np.full((3, 1), 5, np.int32)}, ["ITEM_IDS", "SCORES"])
    assert got["ITEM_IDS"][0].tolist() == got["ITEM_IDS"][1].tolist() == popular.tolist()
    assert got["SCORES"][0].tolist() == counts[np.argsort(-counts, kind="stable")[:5]].tolist()
    assert got["ITEM_IDS"][2].tolist() != popular.tolist() and int(ml100k.item_ids[0]) not in got["ITEM_IDS"][2]


# ---------------------------------------------------------------- item_knn as a retrieval model

@pytest.fixture(scope="module")
def item_knn_repository(tmp_path_factory, ml100k):
    config = TrainConfig(model="item_knn", neighbours=50)
    model, _ = fit_closed_form(config, ml100k, np.arange(ml100k.n_interactions))
    repo = tmp_path_factory.mktemp("item_knn_retrieval")
    export_retrieval(model, ml100k, repo, {"dataset_fingerprint": ml100k.fingerprint()})
    return repo


def test_item_knn_is_served_by_the_retrieval_scenario_as_in_process(item_knn_repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=item_knn_repository)) as server:
        report = run_canary(item_knn_repository, server.grpc_url, "grpc")
    assert "recommend" in report.requests and "recommend_fused" in report.requests
