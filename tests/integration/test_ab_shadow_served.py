"""Routed A/B and shadow on one real tritonserver: full scorer vs a perturbed challenger."""
import copy
import shutil

import numpy as np
import pytest
import torch

from recdeploy.clients.router import arm_of
from recdeploy.export.scenarios import scenario_named
from recdeploy.perf.shadow import render_routed, routed_report
from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.onnx_io import export_onnx

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ab_repository(tmp_path_factory, repository, trained_run):
    """The session's retrieval repository plus recommend_noisy: the same model, weights jittered."""
    repo = tmp_path_factory.mktemp("ab") / "repo"
    shutil.copytree(repository, repo)
    model = copy.deepcopy(load_checkpoint(trained_run[0]).model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    scorer = model.retrieval_scorer().eval()
    path = export_onnx(scorer, {"USER_INDEX": np.arange(8).reshape(-1, 1)}, ["SCORES"], repo.parent / "noisy.onnx")
    scenario_named("retrieval").add_variant(repo, path, "noisy", {"what": "weights + 30% noise"})
    return repo


@pytest.fixture(scope="module")
def ab_server(ab_repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=ab_repository)) as running:
        yield running


def test_routed_arms_follow_the_hash_and_the_shadow_measures_the_difference(ab_repository, ab_server):
    report = routed_report(ab_repository, ab_server.grpc_url, "recommend", "recommend_noisy", share=0.3,
                           salt="t", requests=300, concurrency=4)
    users = scenario_named("retrieval").perf_rows(ab_repository, None, 10, n=300)["USER_ID"][:, 0]
    want = arm_of(users.tolist(), "t", 0.3)
    champion, challenger = report["arms"]
    assert (champion["requests"], challenger["requests"]) == (int((want == 0).sum()), int(want.sum()))
    assert champion["p99_ms"] >= champion["p50_ms"] > 0
    shadow = report["shadow"]
    assert shadow["rows"] == 300 and shadow["shadow_errors"] == 0
    assert 0.0 < shadow["overlap_at_k"] < 1.0 and -1.0 <= shadow["spearman"] <= 1.0 and shadow["score_drift"] > 0
    assert report["offline_quality"]["recommend"]["overlap@10"] == 1.0
    # the shadow measured what the offline check measures: the same lists, the same overlap
    assert report["offline_quality"]["recommend_noisy"]["overlap@10"] == pytest.approx(shadow["overlap_at_k"],
                                                                                        abs=0.05)
    assert "| challenger | recommend_noisy |" in render_routed(report)
