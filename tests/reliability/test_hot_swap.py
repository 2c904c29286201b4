"""Hot swap under load: publish scorer version 2 (another export) and roll back to version 1
through the explicit model control API; no request fails and each answer is checked."""
import pytest

pytestmark = pytest.mark.integration


def test_publish_and_rollback_under_load_fail_no_request(repository, other_scorer_onnx, tmp_path):
    from recdeploy.export.repository import verify_manifest
    from recdeploy.perf.hot_swap import hot_swap

    result = hot_swap(repository, other_scorer_onnx, tmp_path, concurrency=4, duration_s=12, k=10)
    assert result.load_failures == 0 and result.load.ok, result.load.error
    assert result.load_requests > 100
    assert result.probe_errors == [] and result.unexpected_answers == 0
    # the probe saw v1, then v2 (checked against the in-process v2), then v1 again
    assert [label for _, label in result.timeline] == ["v1", "v2", "v1"], result
    assert result.publish_to_first_v2_s is not None and result.publish_to_first_v2_s < 30
    assert result.stale_v1_after_publish == 0 and result.stale_v2_after_rollback == 0
    assert result.passed
    work = tmp_path / "swap_repository"
    assert sorted(p.name for p in (work / "scorer").iterdir()) == ["1", "config.pbtxt"]
    assert (tmp_path / "retired" / "scorer" / "2" / "model.onnx").is_file()
    verify_manifest(work)
