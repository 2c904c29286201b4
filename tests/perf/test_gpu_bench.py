"""The GPU benchmark's parts, budgets, report and served repository, checked on a CPU; its one
device run cannot be repeated, so the whole script also runs here as a smoke run (integration)."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recdeploy.export.triton_config import parse_config_text
from recdeploy.perf import gpu_harness
from recdeploy.perf.gpu_harness import BenchReport, run_part, skip_part
from recdeploy.perf.gpu_inprocess import copy_bandwidth, floor_us, overlap, parity, time_call
from recdeploy.perf.gpu_others import check_faiss_gpu, check_ort_cuda, check_tensorrt
from recdeploy.perf.gpu_render import ratios, render
from recdeploy.perf.gpu_served import ServedModel, merge_csvs, write_served_repository

ROOT = Path(__file__).resolve().parents[2]


def test_parts_record_ok_failed_timed_out_and_skipped_and_the_report_is_rewritten_each_time(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_harness, "MIN_PART_S", 0.1)
    report = BenchReport(tmp_path, deadline_s=60, render=render)

    def measured_then_slow():
        report.data["kept"] = 1
        time.sleep(5)

    assert run_part(report, "fine", 10, lambda: report.data.update(fine=True))
    assert not run_part(report, "broken", 10, lambda: 1 / 0)
    assert not run_part(report, "slow", 0.5, measured_then_slow)
    skip_part(report, "absent", "not installed")
    parts = json.loads((tmp_path / "gpu_summary.json").read_text())["parts"]
    assert [parts[name]["status"] for name in ("fine", "broken", "slow", "absent")] == \
        ["ok", "failed", "timed out", "skipped"]
    assert "ZeroDivisionError" in parts["broken"]["reason"] and parts["broken"]["traceback"]
    assert parts["slow"]["seconds"] < 2 and report.data["kept"] == 1       # cut short, measurement kept
    assert "| absent | skipped |" in (tmp_path / "gpu_report.md").read_text()


def test_a_part_is_not_started_without_time_left_and_a_variant_error_cannot_swallow_the_timeout(tmp_path):
    report = BenchReport(tmp_path, deadline_s=2)
    assert not run_part(report, "late", 100, lambda: None)
    late = report.data["parts"]["late"]
    assert late["status"] == "skipped" and "out of time" in late["reason"]
    assert not issubclass(gpu_harness.PartTimeout, Exception)


def test_timing_floor_and_parity_helpers():
    timing = time_call(lambda i: sum(range(100)), torch.device("cpu"), iters=5, warmup=1)
    assert 0 < timing["p10_us"] <= timing["us"] <= timing["p90_us"] and timing["iters"] == 5
    assert floor_us(1_000_000, 64, 4.8e12) == pytest.approx(26.67, abs=0.01)     # the 27 µs
    assert copy_bandwidth(torch.device("cpu"), 0.01) > 1e8
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    assert overlap(np.array([[2, 1, 9], [4, 5, 6]]), ids) == pytest.approx((2 / 3 + 1) / 2)
    checked = parity(ids, np.array([[3.0, 2, 1], [1, 0, -np.inf]]), ids, np.array([[3.0, 2.5, 1], [1, 0, -np.inf]]))
    assert checked == {"overlap": 1.0, "max_score_diff": 0.5, "same_lists": 1.0}


def test_ratios_and_render_read_what_was_measured():
    data = {"floor": {"floor_us_nominal": 26.7, "catalogue_mb": 128, "nominal_tb_s": 4.8},
            "inprocess": [{"variant": "graph_fp16", "batch": 32, "us": 1300.0, "p10_us": 1, "p90_us": 2,
                           "recs_per_s": 24_615},
                          {"variant": "gpu_fp16", "batch": 32, "us": 106.8, "p10_us": 1, "p90_us": 2,
                           "recs_per_s": 299_625},
                          {"variant": "gpu_fp16", "batch": 256, "error": "RuntimeError: out of memory"}],
            "served": {"rows": [{"model": "gpu_fast", "batch": 32, "concurrency": 8, "served_recs_per_s": 150_000.0,
                                 "p50_ms": 1.0, "p99_ms": 2.0, "server_compute_us": 150.0},
                                {"model": "cpu_fp32", "batch": 32, "concurrency": 8, "served_recs_per_s": 1_500.0,
                                 "p50_ms": 100.0, "p99_ms": 200.0, "server_compute_us": 9000.0}]},
            "parts": {"served": {"status": "ok", "seconds": 90}}, "notes": ["a note"]}
    found = ratios(data, 32, "gpu_fp16")
    assert found["in-process best at batch 32"].startswith("gpu_fp16 106.8 µs = 4.0× the floor")
    assert found["served GPU / CPU at batch 32"].startswith("100.0×")
    assert found["served gpu_fast / its in-process gpu_fp16 at batch 32"].startswith("0.50")
    text = render({**data, "ratios": found, "settings": {"items": 10 ** 6, "dim": 64, "k": 100}})
    assert "| gpu_fp16 | 32 | 106.8 |" in text and "| gpu_fast | 32 | 8 | 150,000 |" in text
    assert "gpu_fp16 at batch 256: RuntimeError: out of memory" in text and "- a note" in text


def test_served_repository_puts_native_and_python_based_models_side_by_side(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"torchscript")
    pt2 = tmp_path / "model.pt2"
    pt2.write_bytes(b"package")
    repo = write_served_repository(tmp_path / "repo", [
        ServedModel("gpu_fast", pt, ensemble="recommend_gpu_fast", max_k=500),
        ServedModel("gpu_aoti", pt2),
        ServedModel("gpu_fast_py", pt, backend="python"),
        ServedModel("cpu_fp32", pt, "KIND_CPU", threads=16)], n_items=1000)
    configs = {p.parent.name: parse_config_text(p.read_text()) for p in repo.glob("*/config.pbtxt")}
    assert set(configs) == {"gpu_fast", "recommend_gpu_fast", "gpu_aoti", "gpu_fast_py", "cpu_fp32"}
    assert configs["gpu_fast"].platform == "pytorch_libtorch" and configs["gpu_fast"].instance_group[0].kind == 1
    assert configs["gpu_fast"].parameters["input_range"].string_value == "K=1..500"
    assert configs["gpu_aoti"].default_model_filename == "model.pt2" and (repo / "gpu_aoti/1/model.pt2").is_file()
    assert configs["gpu_fast_py"].backend == "pytorch_python" and not configs["gpu_fast_py"].platform
    assert configs["cpu_fp32"].parameters["intra_op_thread_count"].string_value == "16"
    assert (repo / "manifest.sha256.json").is_file()


def test_perf_csvs_merge_into_one_file_with_their_source(tmp_path):
    for name, value in (("gpu_fast-b32", "100"), ("cpu_fp32-b32", "7")):
        raw = tmp_path / "perf" / name / "raw"
        raw.mkdir(parents=True)
        (raw / "x.csv").write_text(f"Concurrency,Inferences/Second\n8,{value}\n")
    merged = merge_csvs(tmp_path / "perf", tmp_path / "all.csv").read_text().splitlines()
    assert merged == ["source,Concurrency,Inferences/Second", "cpu_fp32-b32,8,7", "gpu_fast-b32,8,100"]
    assert merge_csvs(tmp_path / "nothing", tmp_path / "none.csv") is None


def test_runtimes_that_cannot_run_here_say_why():
    bench = type("B", (), {})()
    assert re.match(r"skipped: onnxruntime \S+ offers .*no CUDAExecutionProvider",
                    check_ort_cuda(bench, torch.device("cpu")))
    assert check_tensorrt().startswith("skipped: TensorRT is not installed")
    assert check_faiss_gpu(bench).startswith("skipped: faiss")


@pytest.mark.integration
def test_the_device_script_runs_every_part_on_a_cpu(tmp_path):
    """The one-shot device run, shrunk: every part ends ok, served answers equal in-process,
    and what lands in $OUT fits what a device run brings back (<= 8 plain files)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "recdeploy.perf.gpu_bench", "--no-gpu", "--out", str(tmp_path),
                           "--items", "3000", "--users", "400", "--batches", "1,32", "--iters", "3",
                           "--deadline-s", "500", "--measurement-interval-ms", "500", "--skip", "compile"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_summary.json").read_text())
    statuses = {name: part["status"] for name, part in summary["parts"].items()}
    assert statuses == {"sasrec": "skipped", "setup": "ok", "availability": "ok", "bandwidth": "ok",
                        "inprocess": "ok", "profile": "ok", "aoti_triton": "skipped", "aoti": "ok", "served": "ok",
                        "compile": "skipped"}
    assert all(c.get("overlap") == 1.0 for c in summary["served"]["checks"].values()), summary["served"]["checks"]
    assert summary["parity"]["gpu_fp16"]["overlap"] == 1.0 and summary["aoti"]["parity_vs_eager"]["overlap"] == 1.0
    # every planned perf_analyzer run has a row: a measurement, or (a level perf_analyzer could
    # not stabilise on this loaded box, say) the error
    rows = summary["served"]["rows"]
    assert len(rows) == 10 and all("served_recs_per_s" in row or row["error"] for row in rows)
    assert sum("served_recs_per_s" in row for row in rows) >= 7
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and p.parent == tmp_path for p in files)
