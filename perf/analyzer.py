"""Drive perf_analyzer: find it, turn a PerfConfig into its argv, run it, parse its CSV.

    from recdeploy.perf.analyzer import PerfConfig, run_sweep
    result = run_sweep(PerfConfig("recommend", url="127.0.0.1:8001", concurrency=(1, 2, 4),
                                  input_data=path), Path("reports/perf"))
    for row in result.rows: print(row.concurrency, row.throughput_infer_per_s, row.p99_us)

Two ways to sweep concurrency:

* :func:`run_sweep` (what the CLI and the demo use) starts one perf_analyzer process per
  level with ``--concurrency-range C:C:1``. Any increasing list works (1,2,4,8 is not an
  arithmetic range), a progress bar advances per level, each level gets its own timeout,
  and a failure names the level that failed.
* :func:`run` starts a single process with ``--concurrency-range start:end:step`` for a
  config whose levels have a constant step.

perf_analyzer is found by :func:`find_perf_analyzer` (``$PERF_ANALYZER`` wins; else the
``tritonclient[all]`` wheel's binary next to this Python, with the two libraries it lacks
symlinked from nvidia-pytriton's bundled libs). Processes run without a shell.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from recdeploy.perf.config import PerfConfig, PerfConfigError
from recdeploy.perf.results import PerfCsvError, PerfResult, PerfRow, parse_csv

__all__ = [
    "PerfAnalyzerBinary", "PerfAnalyzerNotFoundError", "PerfAnalyzerFailedError", "PerfAnalyzerTimeoutError",
    "PerfConfig", "PerfConfigError", "PerfCsvError", "PerfResult", "PerfRow",
    "find_perf_analyzer", "build_argv", "run", "run_sweep", "run_sweeps", "parse_csv",
]

# The wheel's perf_analyzer links these sonames; nvidia_pytriton.libs/ holds them under
# auditwheel-hashed names (libb64-98cb6333.so.0d, libcudart-09529672.so.12.6.77).
_NEEDED_LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


class PerfAnalyzerNotFoundError(FileNotFoundError):
    """No usable perf_analyzer binary (or the libraries it needs) on this machine."""


class PerfAnalyzerFailedError(RuntimeError):
    """perf_analyzer exited non-zero or wrote no CSV; the message ends with its output tail."""

    def __init__(self, message: str, argv: Sequence[str], returncode: int | None, output_tail: str):
        super().__init__(f"{message}\ncommand: {' '.join(argv)}\n--- perf_analyzer output (tail) ---\n{output_tail}")
        self.argv = list(argv)
        self.returncode = returncode
        self.output_tail = output_tail


class PerfAnalyzerTimeoutError(PerfAnalyzerFailedError):
    """perf_analyzer ran past its timeout and was killed."""


class PerfAnalyzerUnstableError(PerfAnalyzerFailedError):
    """perf_analyzer found no stable measurement within its trials."""


@dataclass(frozen=True)
class PerfAnalyzerBinary:
    """The executable and the full environment to start it with."""

    path: Path
    env: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)


def _cache_dir(env: dict[str, str]) -> Path:
    return Path(env.get("RECDEPLOY_CACHE") or Path.home() / ".cache" / "recdeploy")


def _pytriton_libs() -> Path | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(list(spec.submodule_search_locations)[0]).parent / "nvidia_pytriton.libs"
    return libs if libs.is_dir() else None


def _link_libs(source: Path, target: Path) -> Path:
    """Symlink the hashed libraries under their plain sonames into `target` (idempotent)."""
    target.mkdir(parents=True, exist_ok=True)
    for soname, pattern in _NEEDED_LIBS.items():
        matches = sorted(glob.glob(str(source / pattern)))
        if not matches:
            raise PerfAnalyzerNotFoundError(
                f"perf_analyzer needs {soname} but {source} has no {pattern}; "
                f"reinstall nvidia-pytriton==0.7.0 or set PERF_ANALYZER to a working binary")
        link = target / soname
        if link.is_symlink() and os.readlink(link) == matches[-1]:
            continue
        tmp = target / f".{soname}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(matches[-1])
        os.replace(tmp, link)  # atomic: concurrent callers never see a missing link
    return target


def find_perf_analyzer(environ: Mapping[str, str] | None = None) -> PerfAnalyzerBinary:
    """Locate perf_analyzer and the environment it runs in.

    ``$PERF_ANALYZER`` (set by the GPU bundle's env.sh) is used as is, with the caller's
    environment. Otherwise the binary next to this interpreter (or on PATH) runs with a
    private folder of symlinks to libb64.so.0d / libcudart.so.12 first on LD_LIBRARY_PATH.
    """
    env = dict(os.environ if environ is None else environ)
    override = env.get("PERF_ANALYZER")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise PerfAnalyzerNotFoundError(f"PERF_ANALYZER={override} is not an executable file")
        return PerfAnalyzerBinary(path, env)
    candidates = [Path(sys.executable).parent / "perf_analyzer"]
    on_path = shutil.which("perf_analyzer", path=env.get("PATH"))
    if on_path:
        candidates.append(Path(on_path))
    found = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    if found is None:
        raise PerfAnalyzerNotFoundError(
            "perf_analyzer not found next to this Python or on PATH; install tritonclient[all]==2.51.0 "
            "(its wheel carries the binary) or set PERF_ANALYZER=/path/to/perf_analyzer")
    libs = _pytriton_libs()
    if libs is None:
        raise PerfAnalyzerNotFoundError(
            "perf_analyzer needs libb64.so.0d and libcudart.so.12, taken from nvidia-pytriton's "
            "nvidia_pytriton.libs/; install nvidia-pytriton==0.7.0 or set PERF_ANALYZER")
    private = _link_libs(libs, _cache_dir(env) / "perf_analyzer-libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(private), env.get("LD_LIBRARY_PATH")]))
    return PerfAnalyzerBinary(found, env)


def _num(value: float) -> str:
    return f"{value:g}"


def build_argv(binary: PerfAnalyzerBinary | Path | str, config: PerfConfig, csv_path: Path) -> list[str]:
    """The perf_analyzer command line for `config`, writing its CSV to `csv_path` (pure).

    The config's levels must have a constant step (one level always does); use
    ``config.at_concurrency(level)`` per level otherwise, as run_sweep does.
    """
    step = config.concurrency_step()
    if step is None:
        raise PerfConfigError(
            f"concurrency {config.concurrency} has no constant step, so it is not one "
            f"--concurrency-range start:end:step; use run_sweep (one process per level)")
    path = binary.path if isinstance(binary, PerfAnalyzerBinary) else binary
    argv = [str(path), "-m", config.model_name, "-u", config.url, "-i", config.protocol,
            "-b", str(config.batch_size),
            "--concurrency-range", f"{config.concurrency[0]}:{config.concurrency[-1]}:{step}",
            "--measurement-interval", str(config.measurement_interval_ms),
            "--stability-percentage", _num(config.stability_percentage),
            "--max-trials", str(config.max_trials)]
    if config.percentile is not None:
        argv += ["--percentile", str(config.percentile)]
    if config.input_data is not None:
        argv += ["--input-data", str(config.input_data)]
    if config.shared_memory != "none":
        argv += ["--shared-memory", config.shared_memory]
    if config.metrics_url is not None:
        argv += ["--collect-metrics", "--metrics-url", config.metrics_url]
    argv += ["-f", str(csv_path), *config.extra_args]
    return argv


def _tail(text: str | bytes | None, lines: int = 25) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


def _stem(config: PerfConfig) -> str:
    levels = config.concurrency
    span = f"c{levels[0]}" if len(levels) == 1 else f"c{levels[0]}-{levels[-1]}"
    return f"{config.model_name}-b{config.batch_size}-{span}"


def run(config: PerfConfig, out_dir: Path, binary: PerfAnalyzerBinary | None = None) -> PerfResult:
    """One perf_analyzer process over the config's levels; CSV + log under out_dir/raw/."""
    if config.input_data is not None and not Path(config.input_data).is_file():
        raise PerfConfigError(f"input_data {config.input_data} does not exist; write it with write_input_data")
    binary = binary or find_perf_analyzer()
    raw = Path(out_dir) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    csv_path = raw / f"{_stem(config)}.csv"
    csv_path.unlink(missing_ok=True)  # a stale CSV must not pass for this run's
    argv = build_argv(binary, config, csv_path)
    timeout = config.timeout_for(len(config.concurrency))
    try:
        proc = subprocess.run(argv, env=binary.env or None, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PerfAnalyzerTimeoutError(
            f"perf_analyzer ran longer than {timeout:.0f} s at concurrency {config.concurrency} "
            f"(raise timeout_s, or lower max_trials / measurement_interval_ms)",
            argv, None, _tail(exc.stderr) or _tail(exc.stdout)) from None
    (raw / f"{_stem(config)}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not csv_path.is_file():
        unstable = "stable" in proc.stdout + proc.stderr
        hint = " (no stable measurement: raise measurement_interval_ms or stability_percentage)" if unstable else ""
        what = f"failed with exit code {proc.returncode}" if proc.returncode else "exited 0 but wrote no CSV"
        raise (PerfAnalyzerUnstableError if unstable else PerfAnalyzerFailedError)(
            f"perf_analyzer {what} for model {config.model_name!r} "
            f"at {config.url} ({config.protocol}){hint}",
            argv, proc.returncode, _tail(proc.stderr) or _tail(proc.stdout))
    rows = parse_csv(csv_path)
    return PerfResult(config, tuple(rows), (csv_path,), (tuple(argv),))


def run_level(config: PerfConfig, out_dir: Path, binary: PerfAnalyzerBinary | None = None,
              log=None) -> PerfResult:
    """``run``; once more if perf_analyzer times out (a shorter window) or finds no stable
    measurement (a longer one).

    Why: perf_analyzer (the tritonclient build used here) keeps every request's timestamps
    in one vector, erases the measured ones one element at a time and never drops those
    that ended before the window, while its workers keep sending. At a few thousand
    requests/s that bookkeeping on the main thread can take longer than the window; the
    requests sent meanwhile pile up, so each pass takes longer than the last and the run
    never reports (seen at batch 1, concurrency 32-64: the passes' throughput falls as the
    main thread takes CPU from the workers, and gdb shows it in ValidLatencyMeasurement).
    Half the window holds half the requests: about a quarter of that work (estimated from
    the erases, not measured). The retry's argv is in the result's commands, and the report
    names the level and its window; a second timeout is raised.

    A level with no stable measurement (few, slow requests per window: a ranking request of
    64 users x 100 candidates, say) is retried once with twice the window."""
    try:
        return run(config, out_dir, binary)
    except PerfAnalyzerTimeoutError:
        shorter = config.with_shorter_window()
        if shorter is None:
            raise
        retry, why = shorter, "timed out"
    except PerfAnalyzerUnstableError:
        retry, why = config.with_longer_window(), "found no stable measurement"
    if log is not None:
        log(f"perf_analyzer {why} for {config.model_name} at concurrency {config.concurrency}; "
            f"retrying with {retry.measurement_interval_ms} ms windows, {retry.max_trials} trials")
    return run(retry, out_dir, binary)


def run_sweeps(configs: Sequence[PerfConfig], out_dir: Path, progress: bool = True,
               binary: PerfAnalyzerBinary | None = None, skip_failed_levels: bool = False) -> list[PerfResult]:
    """Every config, one perf_analyzer process per concurrency level, one progress bar.

    skip_failed_levels: a level that stays unstable or times out again after its retry is
    left out (and said so) instead of failing the sweep; a config with no level left fails."""
    from tqdm import tqdm

    binary = binary or find_perf_analyzer()
    steps = [(config, level) for config in configs for level in config.concurrency]
    parts: dict[int, list[PerfResult]] = {index: [] for index in range(len(configs))}
    index_of = {id(config): index for index, config in enumerate(configs)}
    with tqdm(steps, desc="perf_analyzer", unit="level", disable=not progress) as bar:
        for config, level in bar:
            bar.set_postfix_str(f"{config.label} c={level}")
            try:
                parts[index_of[id(config)]].append(
                    run_level(config.at_concurrency(level), out_dir, binary, log=bar.write))
            except (PerfAnalyzerUnstableError, PerfAnalyzerTimeoutError) as error:
                if not skip_failed_levels:
                    raise
                why = "stayed unstable" if isinstance(error, PerfAnalyzerUnstableError) else "timed out again"
                bar.write(f"perf_analyzer: {config.label} at concurrency {level} {why}; left out")
    empty = [config.label for index, config in enumerate(configs) if not parts[index]]
    if empty:
        raise PerfAnalyzerUnstableError(f"no concurrency level of {', '.join(empty)} gave a measurement",
                                        [], None, "")
    return [PerfResult(config,
                       tuple(sorted((row for part in parts[index] for row in part.rows), key=lambda r: r.concurrency)),
                       tuple(path for part in parts[index] for path in part.csv_paths),
                       tuple(cmd for part in parts[index] for cmd in part.commands))
            for index, config in enumerate(configs)]


def run_sweep(config: PerfConfig, out_dir: Path, progress: bool = True,
              binary: PerfAnalyzerBinary | None = None, skip_failed_levels: bool = False) -> PerfResult:
    """Measure `config` level by level (see module docstring); the library entry point."""
    return run_sweeps([config], out_dir, progress=progress, binary=binary, skip_failed_levels=skip_failed_levels)[0]
