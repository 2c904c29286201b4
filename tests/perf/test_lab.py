import numpy as np
import pytest

from recdeploy.export.scenarios.base import user_requests
from recdeploy.perf.inprocess import measure_inprocess
from recdeploy.perf.lab import LabConfig, LabError, StepTime, step_times
from recdeploy.perf.lab_report import render_lab_markdown
from recdeploy.perf.scale import ScaleRow, render_scale_markdown


def _stats(executions, queue_ns, infer_ns):
    return {"execution_count": executions, "inference_stats": {
        "queue": {"count": executions, "ns": queue_ns}, "compute_input": {"count": executions, "ns": 0},
        "compute_infer": {"count": executions, "ns": infer_ns}, "compute_output": {"count": executions, "ns": 0}}}


def test_step_times_are_per_execution_deltas():
    before = {"scorer": _stats(10, 1_000_000, 5_000_000)}
    after = {"scorer": _stats(110, 21_000_000, 105_000_000), "idle": _stats(0, 0, 0)}
    (step,) = step_times(before, after, ["scorer", "idle", "missing"])
    assert step == StepTime(model="scorer", executions=100, queue_ms=0.2, compute_ms=1.0)
    assert step.per_execution_ms == pytest.approx(1.2)


def test_measure_inprocess_counts_users_not_requests():
    calls = []
    rows = user_requests(np.arange(100), 5)
    result = measure_inprocess(lambda requests: calls.append(requests["USER_ID"].shape), rows, batch_size=8,
                               seconds=0.05, warmup=2)
    assert calls[0] == (8, 1) and result.batch_size == 8
    assert result.recommendations_per_s > 0 and result.requests == len(calls) - 2
    with pytest.raises(ValueError, match="need at least batch_size=8 request rows, got 3"):
        measure_inprocess(lambda requests: None, user_requests(np.arange(3), 5), batch_size=8)


def test_lab_config_refuses_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(LabError, match="has no recdeploy.json: export a run first"):
        LabConfig(repository=tmp_path)


def test_lab_config_refuses_an_unknown_protocol(repository):
    with pytest.raises(LabError, match="protocol must be grpc or http, got 'udp'"):
        LabConfig(repository=repository, protocol="udp")


def test_scale_markdown_states_ratio_to_roofline():
    text = render_scale_markdown([ScaleRow(items=1_000_000, batch=64, fused_ms=150.0, gemm_ms=100.0,
                                           recs_per_s=426.7)])
    assert "| 1,000,000 | 64 | 150.0 | 100.0 | 1.50x | 427 |" in text


def test_with_schedule_rewrites_batching_and_instances_but_not_ensembles():
    from recdeploy.export.fused import fused_ensemble_spec, fused_model_spec
    from recdeploy.export.triton_config import build_ensemble_config, build_model_config
    from recdeploy.perf.lab import with_schedule

    model = build_model_config(fused_model_spec())
    changed = with_schedule(model, 100, 3)
    assert changed.dynamic_batching.max_queue_delay_microseconds == 100
    assert changed.instance_group[0].count == 3
    assert model.instance_group[0].count == 2  # the input is left alone
    ensemble = build_ensemble_config(fused_ensemble_spec(fused_model_spec()))
    assert with_schedule(ensemble, 500, 2) == ensemble


def test_lab_markdown_names_the_protocol_it_measured():
    from recdeploy.perf.inprocess import InProcessResult
    from recdeploy.perf.lab import LabRow
    inprocess = InProcessResult(label="recommend_fused", batch_size=64, requests=10,
                                recommendations_per_s=1000.0, p50_ms=1.0, p99_ms=2.0)
    row = LabRow(ensemble="recommend_fused", batch_size=64, delay_us=None, instances=None,
                 served_peak_recs_per_s=850.0, served_peak_concurrency=8, served_p99_ms_at_peak=3.0,
                 inprocess=inprocess, protocol="http")
    text = render_lab_markdown([row])
    assert "(HTTP, one client machine" in text and "gRPC" not in text and "| 85% |" in text


def test_lab_markdown_shows_both_inprocess_samples_and_divides_by_the_better():
    from recdeploy.perf.inprocess import InProcessResult
    from recdeploy.perf.lab import LabRow
    best = InProcessResult(label="recommend_fused", batch_size=1, requests=10,
                           recommendations_per_s=8000.0, p50_ms=0.1, p99_ms=0.2)
    row = LabRow(ensemble="recommend_fused", batch_size=1, delay_us=0, instances=2,
                 served_peak_recs_per_s=4000.0, served_peak_concurrency=32, served_p99_ms_at_peak=9.0,
                 inprocess=best, protocol="http", inprocess_samples=(6500.0, 8000.0))
    assert row.served_over_inprocess == 0.5
    assert "| 8,000 (6,500 / 8,000) | 50% |" in render_lab_markdown([row])


def test_lab_config_takes_server_and_analyzer_flags_from_the_cli(tmp_path, monkeypatch):
    import recdeploy.perf.lab as lab
    from recdeploy.perf.cli import main
    seen = {}

    def fake_run_lab(config, out_dir, progress=True):
        seen["config"] = config
        raise lab.LabError("stop here")

    monkeypatch.setattr(lab, "run_lab", fake_run_lab)
    (tmp_path / "recdeploy.json").write_text("{}")
    assert main(["--lab", str(tmp_path), "--server-args=--http-thread-count=4",
                 "--analyzer-args=--async --max-threads=2"]) == 2
    assert seen["config"].server_args == ("--http-thread-count=4",)
    assert seen["config"].analyzer_args == ("--async", "--max-threads=2")


def test_lab_divides_every_variant_by_the_fastest_inprocess_pipeline_too():
    """A TorchScript variant is slower in-process than ONNX Runtime; its served number is
    also held to the fastest in-process pipeline of the run, batch size by batch size."""
    from recdeploy.perf.inprocess import InProcessResult
    from recdeploy.perf.lab import LabRow
    from recdeploy.perf.lab_report import fastest_inprocess

    def row(ensemble, batch, served, inprocess):
        result = InProcessResult(label=ensemble, batch_size=batch, requests=10,
                                 recommendations_per_s=inprocess, p50_ms=0.1, p99_ms=0.2)
        return LabRow(ensemble=ensemble, batch_size=batch, delay_us=None, instances=None,
                      served_peak_recs_per_s=served, served_peak_concurrency=32,
                      served_p99_ms_at_peak=9.0, inprocess=result, protocol="http")

    rows = [row("recommend_fused", 1, 3000.0, 8000.0), row("recommend_fused_libtorch", 1, 4400.0, 3300.0),
            row("recommend_fused", 64, 30000.0, 29000.0)]
    fastest = fastest_inprocess(rows)
    assert fastest[1].label == "recommend_fused" and fastest[64].recommendations_per_s == 29000.0
    text = render_lab_markdown(rows)
    assert "| 3,300 | 133% | 55% |" in text          # own pipeline vs the fastest one
    assert "| 8,000 | 38% | 38% |" in text
    assert "Fastest in-process at batch 1: recommend_fused (8,000 recs/s)." in text
