"""Against the real tritonserver: served results equal the in-process pipeline."""
import re

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios.retrieval import InProcessRecommender

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def reference(repository):
    return InProcessRecommender(repository)


@pytest.fixture(scope="module")
def real_users(ml100k):
    rng = np.random.default_rng(7)
    return np.sort(rng.choice(ml100k.user_ids, size=50, replace=False))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_top_k_equals_inprocess_one_user_per_request(server, reference, real_users, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with RecommendClient(url, protocol) as client:
        for user in real_users[:20]:
            ids, scores = client.recommend([user], k=10)
            want_ids, want_scores = reference.recommend(np.array([user]), k=10)
            assert ids.tolist() == want_ids.tolist()
            np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_served_batch_of_50_users_equals_inprocess(server, reference, real_users):
    with RecommendClient(server.grpc_url) as client:
        ids, scores = client.recommend(real_users, k=20)
    want_ids, want_scores = reference.recommend(real_users, k=20)
    assert ids.shape == (50, 20)
    assert np.array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)


def test_seen_items_never_come_back(server, ml100k):
    with RecommendClient(server.grpc_url) as client:
        ids, _ = client.recommend([1, 2, 3], k=50)
    for row, user in enumerate([1, 2, 3]):
        index = int(np.searchsorted(ml100k.user_ids, user))
        seen = set(ml100k.item_ids[ml100k.items[ml100k.users == index]].tolist())
        assert not seen & set(ids[row].tolist())


def test_unknown_user_gets_cold_start_popular_items(server, ml100k):
    popular = ml100k.item_ids[np.argsort(-np.bincount(ml100k.items, minlength=ml100k.n_items),
                                         kind="stable")[:10]]
    with RecommendClient(server.grpc_url) as client:
        ids, scores = client.recommend([10 ** 12, -5], k=10)
    assert ids[0].tolist() == popular.tolist() == ids[1].tolist()
    assert scores[0, 0] == 583.0  # Star Wars' rating count: the popularity score


def _assert_still_serving(server, reference):
    assert server.is_ready()
    with RecommendClient(server.grpc_url) as client:
        ids, _ = client.recommend([1], k=5)
    assert ids.tolist() == reference.recommend(np.array([1]), k=5)[0].tolist()


@pytest.mark.parametrize("inputs, message", [
    ({"USER_ID": np.array([[1]], np.int64), "K": np.array([[0]], np.int32)},
     "K must be between 1 and the catalogue size 1682, got 0"),
    ({"USER_ID": np.array([[1]], np.int64), "K": np.array([[5000]], np.int32)}, "got 5000"),
    ({"USER_ID": np.array([[1], [2]], np.int64), "K": np.array([[3], [4]], np.int32)},
     "K must be the same for every row"),
    ({"USER_ID": np.array([[1.0]], np.float32), "K": np.array([[5]], np.int32)}, "(?i)data-type|datatype|expected"),
    ({"USER_ID": np.array([[1, 2]], np.int64), "K": np.array([[5]], np.int32)}, "(?i)shape"),
])
def test_malformed_request_gets_error_and_server_stays_up(server, reference, inputs, message):
    from tritonclient.utils import InferenceServerException

    with RecommendClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException, match=message):
            client.infer(inputs, ["ITEM_IDS", "SCORES"])
    _assert_still_serving(server, reference)


def test_recommend_cli_prints_titles(server, repository, capsys):
    from recdeploy.clients.cli import main

    assert main(["--user", "1", "-k", "3", "--url", server.grpc_url, "--repository", str(repository)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("user 1:") and out.count("score") == 3


def test_perf_analyzer_measures_the_ensemble(server, ml100k, tmp_path):
    from recdeploy.perf.analyzer import run_sweep
    from recdeploy.perf.config import PerfConfig
    from recdeploy.perf.input_data import write_input_data
    from recdeploy.perf.report import write_report

    data = write_input_data(tmp_path / "input.json", ml100k.user_ids[:100].tolist(), 10)
    # loose stability: the 2-core CI machine is shared with the server under test
    config = PerfConfig(model_name="recommend", url=server.grpc_url, concurrency=(1, 2), input_data=data,
                        measurement_interval_ms=1000, stability_percentage=50, max_trials=6)
    result = run_sweep(config, tmp_path, progress=False)
    assert [row.concurrency for row in result.rows] == [1, 2]
    for row in result.rows:
        assert row.throughput_infer_per_s > 10
        assert 0 < row.p50_us <= row.p99_us < 1e6
    files = write_report([result], tmp_path / "report", {"dataset": "ml-100k"})
    assert "recommend" in files.markdown.read_text() and files.plot.read_bytes()[:4] == b"\x89PNG"


FUSED = ["recommend_fused", "recommend_fused_libtorch", "recommend_fused_aoti"]


def test_the_libtorch_and_aoti_variants_run_in_the_native_backend(server):
    """libtriton_pytorch.so (built from serve/native) loaded them, not the python backend: the
    TorchScript file with torch::jit::load, the .pt2 package with AOTIModelPackageLoader."""
    log = server.log_path.read_text()
    assert "libtorch backend: fused_retrieval_libtorch loaded" in log
    assert re.search(r"libtorch backend: fused_retrieval_aoti loaded \S*/fused_retrieval_aoti/1/model\.pt2 on cpu",
                     log)


@pytest.mark.parametrize("model", FUSED)
def test_fused_ensemble_equals_three_step_ensemble(server, real_users, model):
    with RecommendClient(server.grpc_url, model="recommend") as three_step, \
            RecommendClient(server.grpc_url, model=model) as fused:
        for users in (real_users[:1], real_users):
            want_ids, want_scores = three_step.recommend(users, k=10)
            ids, scores = fused.recommend(users, k=10)
            assert np.array_equal(ids, want_ids)
            np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        # an unknown user ranks by popularity counts, full of ties: ONNX TopK keeps the lower
        # index first like the reference; torch.topk promises no tie order
        want_ids, want_scores = three_step.recommend([10 ** 12], k=10)
        ids, scores = fused.recommend([10 ** 12], k=10)
        np.testing.assert_array_equal(scores, want_scores)
        if model == "recommend_fused":
            assert np.array_equal(ids, want_ids)


@pytest.mark.parametrize("model", FUSED)
def test_fused_requests_with_different_k_batched_together_keep_their_k(server, real_users, model):
    """Concurrent requests land in one dynamic batch; each must get exactly its own K."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(args):
        user, k = args
        with RecommendClient(server.grpc_url, model=model) as client:
            return client.recommend([user], k=k)[0].shape

    jobs = [(int(u), 3 + (i % 4) * 5) for i, u in enumerate(real_users[:24])]
    with ThreadPoolExecutor(8) as pool:
        shapes = list(pool.map(ask, jobs))
    assert shapes == [(1, k) for _, k in jobs]


@pytest.mark.parametrize("model", FUSED)
def test_fused_bad_k_is_an_error_and_server_stays_up(server, reference, model):
    from tritonclient.utils import InferenceServerException

    with RecommendClient(server.grpc_url, model=model) as client:
        with pytest.raises(InferenceServerException, match="(?i)k"):
            client.recommend([1], k=5000)
        # the failed request's batch-mates and the next requests are answered
        ids, _ = client.recommend([1], k=5)
    assert ids.tolist() == reference.recommend(np.array([1]), k=5)[0].tolist()
    _assert_still_serving(server, reference)


def test_native_backend_reports_triton_statistics(server, real_users):
    """The lab's queue-vs-compute table reads these; a backend that skips them shows zeros."""
    import json
    import urllib.request

    with RecommendClient(server.grpc_url, model="recommend_fused_libtorch") as client:
        client.recommend(real_users[:4], k=10)
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/fused_retrieval_libtorch/stats") as answer:
        stats = json.load(answer)["model_stats"][0]
    assert stats["execution_count"] >= 1 and stats["inference_count"] >= 4
    assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0


def test_lab_compares_served_with_inprocess(repository, tmp_path):
    """The perf lab starts its own server; every ensemble gets a served and an in-process number."""
    from recdeploy.perf.lab import LabConfig, run_lab
    from recdeploy.perf.lab_report import write_lab_report

    config = LabConfig(repository=repository, batch_sizes=(1,), concurrency=(2,), measurement_interval_ms=800,
                       stability_percentage=60, inprocess_seconds=0.5, protocol="http")
    rows, results = run_lab(config, tmp_path, progress=False, log=lambda _: None)
    assert [row.ensemble for row in rows] == ["recommend", "recommend_fused", "recommend_fused_libtorch",
                                              "fused_retrieval_libtorch", "recommend_fused_aoti",
                                              "fused_retrieval_aoti"]
    assert {row.scenario for row in rows} == {"retrieval"}
    # served answers agree with the in-process reference (torch.topk may swap tied items)
    assert rows[0].quality == rows[1].quality == {"overlap@10": 1.0, "ndcg@10_vs_reference": 1.0}
    assert all(row.quality["overlap@10"] >= 0.99 for row in rows)
    for row in rows:
        assert row.served_peak_recs_per_s > 10 and row.inprocess.recommendations_per_s > 10
        # sampled before and after the served sweep; the ratio divides by the better one
        assert len(row.inprocess_samples) == 2
        assert row.inprocess.recommendations_per_s == max(row.inprocess_samples)
    three_step = {step.model for step in rows[0].steps}
    assert three_step == {"feature_lookup", "scorer", "topk"}
    assert {step.model for step in rows[1].steps} == {"fused_retrieval"}
    assert {step.model for step in rows[2].steps} == {"fused_retrieval_libtorch"}
    assert {step.model for step in rows[3].steps} == {"fused_retrieval_libtorch"}
    assert {step.model for step in rows[4].steps} == {step.model for step in rows[5].steps} == {"fused_retrieval_aoti"}
    assert rows[2].steps[0].compute_ms > 0
    report = write_lab_report(rows, results, tmp_path, {}).read_text()
    assert "served / in-process" in report and "| recommend_fused | retrieval | 1 |" in report
    assert "served / fastest in-process" in report and "Fastest in-process (retrieval) at batch 1:" in report
