"""recommend_ann_* on the real tritonserver beside the exact ensemble: served == the same FAISS
index in-process, recall against the served exact answer, seen items filtered, errors. HNSW
re-ranks from the FP32 catalogue, IVF-PQ from the row-wise INT8 one: both stores served."""
import json
import shutil

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.ann_index import parse_ann, recall_at_k
from recdeploy.export.compare import compare_answers
from recdeploy.export.fused import dot_product_parts
from recdeploy.export.scenarios import entries_of, scenario_named
from recdeploy.export.scenarios.base import add_entries, user_requests
from recdeploy.export.scenarios.retrieval import build_feature_arrays, write_ann_entries
from recdeploy.serve.canary import run_canary
from recdeploy.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.integration

ANN_ENTRIES = ["recommend_ann_hnsw", "recommend_ann_ivfpq"]
ANN_SETTINGS = "hnsw,ivfpq:rerank=int8"


@pytest.fixture(scope="module")
def ann_repository(tmp_path_factory, repository, trained_run, ml100k):
    """The session's exported ML-100k repository plus both ANN entries (as ``export --ann``)."""
    repo = tmp_path_factory.mktemp("ann_served") / "repo"
    shutil.copytree(repository, repo)
    scorer = load_checkpoint(trained_run[0]).model.retrieval_scorer().eval()
    entries, _ = write_ann_entries(repo, dot_product_parts(scorer), build_feature_arrays(ml100k),
                                   parse_ann(ANN_SETTINGS))
    add_entries(repo, entries)
    return repo


@pytest.fixture(scope="module")
def ann_server(ann_repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=ann_repository, verify_manifest=True)) as running:
        yield running


@pytest.fixture(scope="module")
def real_users(ml100k):
    return np.sort(np.random.default_rng(11).choice(ml100k.user_ids, size=48, replace=False))


def test_the_served_entries_hold_the_rerank_catalogue_they_were_given(ann_repository):
    info = {kind: json.loads((ann_repository / f"ann_{kind}" / "1" / "ann.json").read_text())
            for kind in ("hnsw", "ivfpq")}
    assert (info["hnsw"]["rerank"], info["ivfpq"]["rerank"]) == ("fp32", "int8")
    assert (ann_repository / "ann_ivfpq" / "1" / "catalogue_codes.npy").is_file()
    assert not (ann_repository / "ann_ivfpq" / "1" / "catalogue.npy").exists()


def test_the_canary_holds_ann_entries_to_their_in_process_index(ann_server, ann_repository):
    report = run_canary(ann_repository, ann_server.grpc_url, "grpc", entries=tuple(ANN_ENTRIES))
    assert set(report.requests) == set(ANN_ENTRIES) and report.max_abs_score_diff < 1e-4


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("entry", ANN_ENTRIES)
def test_served_ann_equals_in_process_batched_and_one_by_one(ann_server, ann_repository, real_users,
                                                            protocol, entry):
    scenario = scenario_named("retrieval")
    reference = scenario.reference(ann_repository, entries_of(ann_repository)[entry])
    url = ann_server.grpc_url if protocol == "grpc" else ann_server.http_url
    requests = user_requests(np.r_[real_users, 10 ** 9], 20)      # + a cold start
    with RecommendClient(url, protocol, model=entry) as client:
        batched = client.infer(requests, ["ITEM_IDS", "SCORES"])
        single = [client.infer(user_requests(real_users[i:i + 1], 20), ["ITEM_IDS", "SCORES"])
                  for i in range(8)]
    want = reference(requests)
    assert batched["ITEM_IDS"].shape == (49, 20)
    assert compare_answers(batched, want, label=entry) < 1e-4
    for i, answer in enumerate(single):
        compare_answers(answer, {name: value[i:i + 1] for name, value in want.items()}, label=f"{entry} one")


@pytest.mark.parametrize("entry", ANN_ENTRIES)
def test_served_ann_recall_against_served_exact(ann_server, real_users, ml100k, entry):
    with RecommendClient(ann_server.grpc_url, model="recommend") as client:
        exact, _ = client.recommend(real_users, k=10)
    with RecommendClient(ann_server.grpc_url, model=entry) as client:
        approximate, _ = client.recommend(real_users, k=10)
    assert recall_at_k(approximate, exact) >= 0.95
    for row, user in enumerate(real_users):
        index = int(np.searchsorted(ml100k.user_ids, user))
        assert not set(ml100k.item_ids[ml100k.items[ml100k.users == index]].tolist()) & set(approximate[row].tolist())


@pytest.mark.parametrize("entry", ANN_ENTRIES)
def test_ann_bad_k_is_invalid_argument_and_the_server_stays_up(ann_server, entry):
    from tritonclient.utils import InferenceServerException

    with RecommendClient(ann_server.grpc_url, model=entry) as client:
        with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT.*K must be between 1 and"):
            client.recommend([1], k=5000)
        ids, _ = client.recommend([1], k=5)
    assert ids.shape == (1, 5) and np.all(ids > 0)
