"""build_argv (exact command lines), binary discovery, and run() failure paths."""
import os
import stat
from pathlib import Path

import pytest

from recdeploy.perf.analyzer import (
    PerfAnalyzerBinary,
    PerfAnalyzerFailedError,
    PerfAnalyzerNotFoundError,
    PerfAnalyzerTimeoutError,
    build_argv,
    find_perf_analyzer,
    run,
    run_sweep,
)
from recdeploy.perf.config import PerfConfig, PerfConfigError

BIN = PerfAnalyzerBinary(Path("/opt/pa/perf_analyzer"), {})


def test_argv_single_level_grpc():
    config = PerfConfig("recommend", url="127.0.0.1:8001", concurrency=(4,), batch_size=8,
                        input_data=Path("/r/input_data.json"))
    assert build_argv(BIN, config, Path("/r/raw/x.csv")) == [
        "/opt/pa/perf_analyzer", "-m", "recommend", "-u", "127.0.0.1:8001", "-i", "grpc", "-b", "8",
        "--concurrency-range", "4:4:1", "--measurement-interval", "2000", "--stability-percentage", "10",
        "--max-trials", "10", "--input-data", "/r/input_data.json", "-f", "/r/raw/x.csv"]


def test_argv_range_and_every_option():
    config = PerfConfig("recommend_int8", url="localhost:8000", protocol="http", concurrency=(2, 4, 6, 8),
                        measurement_interval_ms=5000, stability_percentage=12.5, max_trials=5, percentile=95,
                        shared_memory="system", metrics_url="localhost:8002/metrics",
                        extra_args=("--verbose-csv",))
    assert build_argv("perf_analyzer", config, Path("out.csv")) == [
        "perf_analyzer", "-m", "recommend_int8", "-u", "localhost:8000", "-i", "http", "-b", "1",
        "--concurrency-range", "2:8:2", "--measurement-interval", "5000", "--stability-percentage", "12.5",
        "--max-trials", "5", "--percentile", "95", "--shared-memory", "system",
        "--collect-metrics", "--metrics-url", "localhost:8002/metrics", "-f", "out.csv", "--verbose-csv"]


def test_argv_refuses_levels_without_constant_step():
    with pytest.raises(PerfConfigError, match=r"\(1, 2, 4\) has no constant step.*use run_sweep"):
        build_argv(BIN, PerfConfig("recommend", concurrency=(1, 2, 4)), Path("x.csv"))


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_env_override_wins(tmp_path):
    fake = _script(tmp_path / "pa", "exit 0\n")
    binary = find_perf_analyzer({"PERF_ANALYZER": str(fake), "PATH": "/usr/bin"})
    assert binary.path == fake and binary.env["PERF_ANALYZER"] == str(fake)
    with pytest.raises(PerfAnalyzerNotFoundError, match=r"PERF_ANALYZER=/nonexistent/pa is not an executable"):
        find_perf_analyzer({"PERF_ANALYZER": "/nonexistent/pa"})


def test_wheel_binary_gets_private_lib_folder(tmp_path):
    env = {"PATH": "/usr/bin", "RECDEPLOY_CACHE": str(tmp_path), "LD_LIBRARY_PATH": "/keep"}
    try:
        binary = find_perf_analyzer(env)
    except PerfAnalyzerNotFoundError as exc:
        pytest.skip(f"no perf_analyzer here: {exc}")
    private = tmp_path / "perf_analyzer-libs"
    assert binary.env["LD_LIBRARY_PATH"] == f"{private}{os.pathsep}/keep"
    assert sorted(p.name for p in private.iterdir()) == ["libb64.so.0d", "libcudart.so.12"]
    assert all(p.resolve().is_file() for p in private.iterdir())


def test_failure_carries_exit_code_and_stderr_tail(tmp_path):
    fake = _script(tmp_path / "pa", "echo 'error: failed to get model metadata: unknown model' >&2\nexit 99\n")
    with pytest.raises(PerfAnalyzerFailedError, match=r"exit code 99 for model 'nope'(.|\n)*unknown model") as info:
        run(PerfConfig("nope"), tmp_path / "out", PerfAnalyzerBinary(fake, dict(os.environ)))
    assert info.value.returncode == 99 and info.value.argv[:3] == [str(fake), "-m", "nope"]


def test_unstable_measurement_gets_a_hint(tmp_path):
    fake = _script(tmp_path / "pa", "echo 'Failed to obtain stable measurement.'\nexit 2\n")
    with pytest.raises(PerfAnalyzerFailedError, match=r"raise measurement_interval_ms or stability_percentage"):
        run(PerfConfig("m"), tmp_path / "out", PerfAnalyzerBinary(fake, dict(os.environ)))


def test_timeout(tmp_path):
    fake = _script(tmp_path / "pa", "sleep 5\n")
    with pytest.raises(PerfAnalyzerTimeoutError, match=r"ran longer than 0 s"):
        run(PerfConfig("m", timeout_s=0.2), tmp_path / "out", PerfAnalyzerBinary(fake, dict(os.environ)))


def test_missing_input_data_is_a_config_error(tmp_path):
    with pytest.raises(PerfConfigError, match=r"input_data .*missing.json does not exist"):
        run(PerfConfig("m", input_data=tmp_path / "missing.json"), tmp_path, BIN)


FIXTURES = Path(__file__).parent / "fixtures"


def test_run_sweep_one_process_per_level(tmp_path):
    """A stand-in binary copies a recorded one-row CSV to -f: checks the per-level loop and the merge."""
    source = FIXTURES / "grpc_b1_c1-4.csv"
    lines = source.read_text().splitlines()
    for level, line in enumerate(lines[1:], start=1):
        (tmp_path / f"c{level}.csv").write_text(f"{lines[0]}\n{line}\n")
    # argv[-1] is the CSV path; argv[10] the concurrency range ($10 in sh) "C:C:1"
    fake = _script(tmp_path / "pa", f'for a; do last="$a"; done\nc=$(echo "${{10}}" | cut -d: -f1)\n'
                                    f'cp {tmp_path}/c$c.csv "$last"\n')
    result = run_sweep(PerfConfig("recommend", concurrency=(1, 2, 4)), tmp_path / "out", progress=False,
                       binary=PerfAnalyzerBinary(fake, dict(os.environ)))
    assert [row.concurrency for row in result.rows] == [1, 2, 4]
    assert [cmd[10] for cmd in result.commands] == ["1:1:1", "2:2:1", "4:4:1"]
    assert [p.name for p in result.csv_paths] == [f"recommend-b1-c{c}.csv" for c in (1, 2, 4)]


def test_a_level_that_times_out_is_retried_once_with_a_shorter_window(tmp_path):
    """perf_analyzer's own bookkeeping can run away at high request rates (analyzer.run_level):
    the stand-in hangs with 2000 ms windows and answers with 1000 ms ones."""
    from recdeploy.perf.analyzer import run_level
    from recdeploy.perf.report import render_markdown

    lines = (FIXTURES / "grpc_b1_c1-4.csv").read_text().splitlines()
    (tmp_path / "one.csv").write_text(f"{lines[0]}\n{lines[1]}\n")
    fake = _script(tmp_path / "pa", 'for a; do last="$a"; done\n'
                                    'case "$*" in *"--measurement-interval 2000 "*) sleep 5;; esac\n'
                                    f'cp {tmp_path}/one.csv "$last"\n')
    binary = PerfAnalyzerBinary(fake, dict(os.environ))
    said = []
    config = PerfConfig("recommend", concurrency=(1,), timeout_s=0.5)
    retried = run_level(config, tmp_path / "out", binary, log=said.append)
    argv = list(retried.commands[0])
    assert argv[argv.index("--measurement-interval") + 1] == "1000"
    assert argv[argv.index("--max-trials") + 1] == "5"
    assert "retrying with 1000 ms windows, 5 trials" in said[0]
    # through the sweep, the report names the level and its window
    result = run_sweep(config, tmp_path / "sweep", progress=False, binary=binary)
    assert [row.concurrency for row in result.rows] == [1]
    report = render_markdown([result])
    assert "2000 ms windows (concurrency 1 re-measured with 1000 ms windows after a timeout)" in report


def test_an_unstable_level_is_retried_with_a_longer_window_then_left_out_of_a_lab_sweep(tmp_path):
    """Few, slow requests per window (a 64-user ranking request): perf_analyzer finds no stable
    measurement. The stand-in is unstable at concurrency 2 with 2000 ms windows, stable with
    4000 ms ones, and never stable at concurrency 4."""
    from recdeploy.perf.analyzer import PerfAnalyzerUnstableError, run_level
    from recdeploy.perf.report import render_markdown

    lines = (FIXTURES / "grpc_b1_c1-4.csv").read_text().splitlines()
    for level, line in enumerate(lines[1:], start=1):
        (tmp_path / f"c{level}.csv").write_text(f"{lines[0]}\n{line}\n")
    fake = _script(tmp_path / "pa", 'for a; do last="$a"; done\nc=$(echo "${10}" | cut -d: -f1)\n'
                                    'case "$c $*" in "4 "*|"2 "*"--measurement-interval 2000 "*) '
                                    'echo "Failed to obtain stable measurement"; exit 2;; esac\n'
                                    f'cp {tmp_path}/c$c.csv "$last"\n')
    binary = PerfAnalyzerBinary(fake, dict(os.environ))
    said = []
    retried = run_level(PerfConfig("rank", concurrency=(2,)), tmp_path / "out", binary, log=said.append)
    argv = list(retried.commands[0])
    assert argv[argv.index("--measurement-interval") + 1] == "4000"
    assert "found no stable measurement" in said[0] and "retrying with 4000 ms windows" in said[0]
    config = PerfConfig("rank", concurrency=(1, 2, 4))
    with pytest.raises(PerfAnalyzerUnstableError, match="no stable measurement"):
        run_sweep(config, tmp_path / "strict", progress=False, binary=binary)
    result = run_sweep(config, tmp_path / "lab", progress=False, binary=binary, skip_failed_levels=True)
    assert [cmd[10] for cmd in result.commands] == ["1:1:1", "2:2:1"] and len(result.rows) == 2
    assert "concurrency 2 re-measured with 4000 ms windows after no stable measurement" in render_markdown([result])
    with pytest.raises(PerfAnalyzerUnstableError, match="no concurrency level of rank"):
        run_sweep(PerfConfig("rank", concurrency=(4,)), tmp_path / "none", progress=False, binary=binary,
                  skip_failed_levels=True)


def test_a_second_timeout_is_raised(tmp_path):
    from recdeploy.perf.analyzer import PerfAnalyzerUnstableError, run_level

    fake = _script(tmp_path / "pa", "sleep 5\n")
    config = PerfConfig("m", measurement_interval_ms=500, max_trials=3, timeout_s=0.2)
    assert config.with_shorter_window() is None
    with pytest.raises(PerfAnalyzerTimeoutError):
        run_level(config, tmp_path / "out", PerfAnalyzerBinary(fake, dict(os.environ)))
    # a lab sweep leaves such a level out; with none left it fails
    with pytest.raises(PerfAnalyzerUnstableError, match="no concurrency level of m gave a measurement"):
        run_sweep(config, tmp_path / "lab", progress=False, binary=PerfAnalyzerBinary(fake, dict(os.environ)),
                  skip_failed_levels=True)
