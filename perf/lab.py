"""The performance lab: every entry of a repository, served vs in-process, with server-side time.

    recdeploy perf --lab model_repository                       # starts its own server
    recdeploy perf --lab model_repository --batch-size 1,64 --concurrency 1,4,8,16

For each entry (``recommend``, ``recommend_fused``, ``recommend_next``, ``rank``,
``recommend_multistage``, ``<entry>_<variant>``, ...) and client batch size it runs
perf_analyzer over the concurrency sweep on request rows the entry's scenario builds from
real users and items, reads Triton's own statistics for each composing model (queue vs
compute time per execution), measures the entry's in-process reference pipeline on the same
rows at the same batch size, and measures the quality of the served answers, so the report
shows what serving adds and what a variant costs.
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import model_config_pb2 as pb

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.repository import write_manifest
from recdeploy.export.scenarios import Entry, Scenario, entries_of, scenario_named
from recdeploy.export.scenarios.base import in_chunks
from recdeploy.export.triton_config import config_text, parse_config_text
from recdeploy.perf.analyzer import run_sweep
from recdeploy.perf.config import PerfConfig
from recdeploy.perf.inprocess import InProcessResult, measure_inprocess
from recdeploy.perf.input_data import write_rows_input_data
from recdeploy.serve.server import ServerConfig, TritonServer


class LabError(ValueError):
    pass


@dataclass(frozen=True)
class LabConfig:
    repository: Path
    ensembles: tuple[str, ...] = ()          # () = every entry recdeploy.json lists
    batch_sizes: tuple[int, ...] = (1, 64)
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    k: int = 10
    # the client protocol perf_analyzer speaks (docs/performance.md compares the two)
    protocol: str = "grpc"
    measurement_interval_ms: int = 2000
    stability_percentage: float = 25.0
    inprocess_seconds: float = 3.0
    threads: int = 2
    # (dynamic batching max_queue_delay_us, instances per model) settings to sweep; each
    # one rewrites the non-ensemble configs of a copy of the repository and restarts the server
    schedules: tuple[tuple[int, int], ...] = ((0, 1),)
    # extra tritonserver flags (e.g. --http-thread-count=4) and perf_analyzer flags
    # (e.g. --async, --max-threads=2) for every served measurement
    server_args: tuple[str, ...] = ()
    analyzer_args: tuple[str, ...] = ()

    def __post_init__(self):
        if not (Path(self.repository) / "recdeploy.json").is_file():
            raise LabError(f"{self.repository} has no recdeploy.json: export a run first "
                           "(recdeploy export --run RUN --repository DIR)")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise LabError(f"batch sizes must be positive, got {self.batch_sizes}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise LabError(f"concurrency levels must be positive, got {self.concurrency}")
        if self.protocol not in ("grpc", "http"):
            raise LabError(f"protocol must be grpc or http, got {self.protocol!r}")
        if not self.schedules or any(d < 0 or n < 1 for d, n in self.schedules):
            raise LabError(f"schedules are (delay_us >= 0, instances >= 1) pairs, got {self.schedules}")


@dataclass(frozen=True)
class StepTime:
    """Triton's own averages for one composing model over a measurement."""
    model: str
    executions: int
    queue_ms: float
    compute_ms: float      # input + infer + output, per execution

    @property
    def per_execution_ms(self) -> float:
        return self.queue_ms + self.compute_ms


@dataclass(frozen=True)
class LabRow:
    ensemble: str
    batch_size: int
    delay_us: int | None      # None: the repository's own config, not rewritten
    instances: int | None
    served_peak_recs_per_s: float
    served_peak_concurrency: int
    served_p99_ms_at_peak: float
    inprocess: InProcessResult  # the better of the two samples taken beside the served sweep
    steps: tuple[StepTime, ...] = field(default_factory=tuple)
    protocol: str = "grpc"    # how perf_analyzer reached the server
    # in-process recs/s measured just before and just after the served sweep
    inprocess_samples: tuple[float, ...] = ()
    scenario: str = ""        # entries of one scenario answer the same question
    # quality of the served answers (Scenario.quality: agreement with the full model, ...)
    quality: dict[str, float] = field(default_factory=dict)

    @property
    def served_over_inprocess(self) -> float:
        return self.served_peak_recs_per_s / self.inprocess.recommendations_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "served_over_inprocess": self.served_over_inprocess}


# ------------------------------------------------------------- entries and their steps

def _ensemble_steps(repository: Path, ensemble: str) -> list[dict]:
    path = Path(repository) / ensemble / "config.pbtxt"
    if not path.is_file():
        raise LabError(f"no ensemble or model {ensemble!r} in {repository}")
    config = MessageToDict(parse_config_text(path.read_text()), preserving_proto_field_name=True)
    if "ensemble_scheduling" not in config:
        # a plain model that answers the contract itself (the fused models): its own one step
        return [{"model_name": config.get("name", ensemble)}]
    return config["ensemble_scheduling"].get("step", [])


def ensembles_of(repository: Path) -> tuple[str, ...]:
    """Every entry of the repository (``recdeploy.json``), in the order they were written."""
    return tuple(entries_of(repository))


# ------------------------------------------------------------- server statistics

def model_statistics(http_url: str) -> dict[str, dict]:
    """Triton's cumulative statistics per model (``GET /v2/models/stats``)."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/stats", timeout=10) as response:
        body = json.loads(response.read())
    return {entry["name"]: entry for entry in body.get("model_stats", [])}


def step_times(before: dict[str, dict], after: dict[str, dict], models: list[str]) -> tuple[StepTime, ...]:
    """Per-execution queue and compute time of each model between two statistics snapshots."""
    def total(stats: dict, key: str) -> tuple[int, int]:
        entry = stats.get("inference_stats", {}).get(key, {})
        return int(entry.get("count", 0)), int(entry.get("ns", 0))

    steps = []
    for model in models:
        a, b = before.get(model, {}), after.get(model, {})
        executions = int(b.get("execution_count", 0)) - int(a.get("execution_count", 0))
        if executions <= 0:
            continue
        ns = {key: total(b, key)[1] - total(a, key)[1]
              for key in ("queue", "compute_input", "compute_infer", "compute_output")}
        steps.append(StepTime(model=model, executions=executions,
                              queue_ms=ns["queue"] / executions / 1e6,
                              compute_ms=(ns["compute_input"] + ns["compute_infer"] +
                                          ns["compute_output"]) / executions / 1e6))
    return tuple(steps)


# ------------------------------------------------------------- scheduling variants

def with_schedule(config, delay_us: int, instances: int):
    """A copy of a ModelConfig with this dynamic-batching delay and instance count (pure)."""
    changed = pb.ModelConfig()
    changed.CopyFrom(config)
    if changed.platform == "ensemble":
        return changed
    if changed.max_batch_size > 0:
        changed.dynamic_batching.max_queue_delay_microseconds = delay_us
    for group in changed.instance_group:
        group.count = instances
    return changed


def scheduled_copy(repository: Path, dest: Path, delay_us: int, instances: int) -> Path:
    """Copy the repository (artifacts hard-linked where possible) with rewritten configs."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(repository, dest, copy_function=link_or_copy)
    for path in dest.glob("*/config.pbtxt"):
        path.unlink()  # the hard link shares the original's inode: write a new file
        source = repository / path.parent.name / "config.pbtxt"
        path.write_text(config_text(with_schedule(parse_config_text(source.read_text()),
                                                  delay_us, instances)))
    write_manifest(dest)  # the configs changed: the copy must still verify
    return dest


# ------------------------------------------------------------- the lab

def served_quality(scenario: Scenario, repository: Path, entry: Entry, url: str, protocol: str,
                   k: int) -> dict[str, float]:
    """The scenario's quality measure of the served answers (requests of at most 64 rows)."""
    with RecommendClient(url, protocol, model=entry.name) as client:
        def ask(requests):
            return in_chunks(lambda rows: client.infer(rows, ["ITEM_IDS", "SCORES"]), requests)
        return scenario.quality(repository, entry, ask, k)


def run_lab(config: LabConfig, out_dir: Path, progress: bool = True,
            log: Callable[[str], None] = print) -> tuple[list[LabRow], list]:
    """Measure every (entry, batch size); returns the rows and the raw perf results."""
    repository, out_dir = Path(config.repository), Path(out_dir)
    entries = entries_of(repository)
    names = config.ensembles or tuple(entries)
    unknown = [name for name in names if name not in entries]
    if unknown:
        raise LabError(f"{repository} has no entry {unknown}; it serves: {', '.join(entries)}")
    scenarios = {name: scenario_named(entries[name].scenario) for name in names}
    pipelines = {name: scenarios[name].reference(repository, entries[name], config.threads) for name in names}
    rows_of = {name: scenarios[name].perf_rows(repository, entries[name], config.k) for name in names}

    def inprocess(name: str, batch: int) -> InProcessResult:
        result = measure_inprocess(pipelines[name], rows_of[name], batch, config.inprocess_seconds, label=name)
        log(f"in-process {name} batch {batch}: {result.recommendations_per_s:,.0f} recs/s")
        return result

    rows, results = [], []
    for delay_us, instances in config.schedules:
        served_repo, rewritten = repository, (delay_us, instances) != (0, 1) or len(config.schedules) > 1
        if rewritten:
            served_repo = scheduled_copy(repository, out_dir / "repositories" /
                                         f"delay{delay_us}-x{instances}", delay_us, instances)
        server_config = ServerConfig(model_repository=served_repo, extra_args=config.server_args)
        with TritonServer(server_config) as server:
            url = server.grpc_url if config.protocol == "grpc" else server.http_url
            for name in names:
                models = [step["model_name"] for step in _ensemble_steps(repository, name)]
                quality = served_quality(scenarios[name], repository, entries[name], url, config.protocol,
                                         config.k)
                for batch in config.batch_sizes:
                    data = write_rows_input_data(out_dir / "inputs" / f"{name}-b{batch}.json",
                                                 rows_of[name], batch_size=batch)
                    perf = PerfConfig(model_name=name, url=url, protocol=config.protocol, batch_size=batch,
                                      concurrency=config.concurrency, input_data=data,
                                      measurement_interval_ms=config.measurement_interval_ms,
                                      stability_percentage=config.stability_percentage,
                                      extra_args=config.analyzer_args)
                    # this VM's speed drifts by tens of percent within minutes: the baseline
                    # is sampled on both sides of the sweep (server idle) and the better kept,
                    # so a slow moment can only lower the served/in-process ratio
                    first = inprocess(name, batch)
                    before = model_statistics(server.http_url)
                    result = run_sweep(perf, out_dir / f"delay{delay_us}-x{instances}", progress=progress,
                                       skip_failed_levels=True)
                    after = model_statistics(server.http_url)
                    second = inprocess(name, batch)
                    baseline = max(first, second, key=lambda r: r.recommendations_per_s)
                    results.append(result)
                    peak = result.peak()
                    row = LabRow(ensemble=name, batch_size=batch,
                                 delay_us=delay_us if rewritten else None,
                                 instances=instances if rewritten else None,
                                 served_peak_recs_per_s=peak.throughput_infer_per_s,
                                 served_peak_concurrency=peak.concurrency,
                                 served_p99_ms_at_peak=peak.p99_us / 1e3, inprocess=baseline,
                                 steps=step_times(before, after, models), protocol=config.protocol,
                                 inprocess_samples=(first.recommendations_per_s,
                                                    second.recommendations_per_s),
                                 scenario=entries[name].scenario, quality=quality)
                    rows.append(row)
                    log(f"served {name} batch {batch} (delay {delay_us} us, x{instances}): "
                        f"{row.served_peak_recs_per_s:,.0f} recs/s at c={row.served_peak_concurrency} "
                        f"({row.served_over_inprocess:.0%} of in-process)")
    return rows, results
