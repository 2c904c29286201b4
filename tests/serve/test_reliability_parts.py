"""The numpy / /proc parts of the reliability machinery, without a server: stub discovery,
crash detection, RSS trend, canary comparison, swap refusals."""
from __future__ import annotations

import pytest

from recdeploy.perf.soak import rss_growth
from recdeploy.serve import canary, processes

STUB_ARGV = [b"/tmp/x/backends/python/triton_python_backend_stub", b"/repo/topk/1/model.py",
             b"triton_python_backend_shm_region_1", b"1048576", b"1048576", b"100",
             b"/tmp/x/backends/python", b"336", b"topk_0_0", b"DEFAULT"]


def fake_process(proc, pid, ppid, state, argv, rss_kib=1000):
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "stat").write_text(f"{pid} (triton python) {state} {ppid} 1 1 0")
    (folder / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (folder / "status").write_text(f"Name:\tx\nVmRSS:\t{rss_kib} kB\n")


def test_stub_argv_gives_instance_and_model_file():
    assert processes.parse_stub_cmdline(b"\0".join(STUB_ARGV)) == ("topk_0_0", "/repo/topk/1/model.py")
    assert processes.parse_stub_cmdline(b"/usr/bin/python3\0-c\0x") is None


def test_stubs_are_found_and_a_zombie_stub_is_a_crash(tmp_path):
    fake_process(tmp_path, 100, 1, "S", [b"tritonserver"], rss_kib=2048)
    fake_process(tmp_path, 101, 100, "S", STUB_ARGV)
    fake_process(tmp_path, 102, 100, "S", STUB_ARGV[:8] + [b"feature_lookup_0_0", b"DEFAULT"])
    fake_process(tmp_path, 103, 1, "S", STUB_ARGV)  # someone else's stub
    stubs = processes.find_stubs(100, tmp_path)
    assert sorted(stubs) == [101, 102] and stubs[102].instance == "feature_lookup_0_0"
    assert processes.crashed_stubs(stubs, tmp_path) == []
    assert processes.tree_rss_bytes(100, tmp_path) == (2048 + 1000 + 1000) * 1024
    (tmp_path / "102" / "stat").write_text("102 (triton_python_b) Z 100 1 1 0")
    assert [s.instance for s in processes.crashed_stubs(stubs, tmp_path)] == ["feature_lookup_0_0"]
    # a stub Triton stopped itself (unload) is reaped and gone: not a crash
    import shutil
    shutil.rmtree(tmp_path / "101")
    assert [s.pid for s in processes.crashed_stubs(stubs, tmp_path)] == [102]
    assert processes.rss_bytes(102, tmp_path) == 1000 * 1024 and processes.rss_bytes(999, tmp_path) == 0


def test_rss_growth_is_the_trend_between_first_and_last_fifth():
    assert rss_growth([100, 101, 100, 500, 99, 120, 121, 119, 120, 122]) == 20
    with pytest.raises(ValueError, match="cannot show a trend"):
        rss_growth([1, 2, 3])


def test_canary_runs_only_for_exported_repositories(tmp_path):
    from recdeploy.export.scenarios.base import latest_version_dir

    assert not canary.wants_canary(tmp_path)
    (tmp_path / "recommend").mkdir()
    (tmp_path / "recommend" / "config.pbtxt").write_text("")
    assert not canary.wants_canary(tmp_path)
    (tmp_path / "recdeploy.json").write_text("{}")
    assert canary.wants_canary(tmp_path)
    (tmp_path / "scorer" / "1").mkdir(parents=True)
    (tmp_path / "scorer" / "12").mkdir()
    (tmp_path / "scorer" / ".staging-3").mkdir()
    assert latest_version_dir(tmp_path, "scorer") == tmp_path / "scorer" / "12"


def test_swap_refuses_unsafe_or_impossible_requests(tmp_path):
    from recdeploy.export.repository import write_manifest
    from recdeploy.serve.swap import SwapError, publish_version, rollback

    (tmp_path / "repo" / "scorer" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "scorer" / "config.pbtxt").write_text("name: 'scorer'")
    onnx = tmp_path / "new.onnx"
    onnx.write_bytes(b"x")
    repo, url = tmp_path / "repo", "127.0.0.1:1"
    with pytest.raises(SwapError, match="is not a model of"):
        publish_version(repo, "nope", {"model.onnx": onnx}, url)
    with pytest.raises(SwapError, match="fails its manifest.*manifest.sha256.json is missing"):
        publish_version(repo, "scorer", {"model.onnx": onnx}, url)
    write_manifest(repo)
    with pytest.raises(SwapError, match="version 1 exists already"):
        publish_version(repo, "scorer", {"model.onnx": onnx}, url, version=1)
    with pytest.raises(SwapError, match="must be a plain file name"):
        publish_version(repo, "scorer", {"../x.onnx": onnx}, url)
    with pytest.raises(SwapError, match=r"versions \[1\]: nothing to roll back to"):
        rollback(repo, "scorer", url, retired=tmp_path / "retired")
    (repo / "scorer" / "2").mkdir()
    with pytest.raises(SwapError, match="must be outside the repository"):
        rollback(repo, "scorer", url, retired=repo / "retired")
