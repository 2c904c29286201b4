"""Hot swap under load: publish version 2 of an entry's scoring model, then roll back.

    result = hot_swap(Path("model_repository"), Path("other/model.onnx"), Path("reports/soak"))

A copy of the repository is served in explicit model-control mode (see ``recdeploy soak``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.scenarios import Entry, Requests, scenario_named
from recdeploy.perf.soak import OUTPUTS, LoadOutcome, chosen_entry, entry_rows, row
from recdeploy.serve.server import ServerConfig, TritonServer
from recdeploy.serve.swap import publish_version, rollback, versions


def served_name(new_file: Path) -> str:
    """The file name Triton loads for this kind of model: model.onnx, model.pt, model.plan."""
    return "model" + Path(new_file).suffix


@dataclass
class SwapResult:
    entry: str
    model: str
    concurrency: int
    duration_s: float
    load: LoadOutcome
    load_requests: int
    load_failures: int
    probe_answers: int
    probe_errors: list[str]
    unexpected_answers: int          # neither version 1's nor version 2's answer
    publish_call_s: float
    publish_to_first_v2_s: float | None
    stale_v1_after_publish: int      # v1 answers to requests sent after the publish call returned
    rollback_call_s: float
    rollback_to_first_v1_s: float | None
    stale_v2_after_rollback: int
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.load.ok and not self.probe_errors and self.unexpected_answers == 0
                and self.publish_to_first_v2_s is not None and self.rollback_to_first_v1_s is not None
                and self.stale_v1_after_publish == 0 and self.stale_v2_after_rollback == 0)


class ClientLoad:
    """``concurrency`` threads, each sending one-row requests back to back over gRPC."""

    def __init__(self, url: str, entry: str, rows: Requests, concurrency: int):
        self.url, self.entry, self.rows = url, entry, rows
        self.latencies_s: list[float] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(concurrency)]

    def _run(self, offset: int) -> None:
        with RecommendClient(self.url, model=self.entry) as client:
            i = offset
            while not self._halt.is_set():
                started = time.monotonic()
                try:
                    client.infer(row(self.rows, i), OUTPUTS)
                    self.latencies_s.append(time.monotonic() - started)
                except Exception as error:  # a failed request is the thing measured
                    self.errors.append(f"{started:.3f}: {error}")
                i += len(self._threads)

    def start(self) -> None:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> LoadOutcome:
        self._halt.set()
        for thread in self._threads:
            thread.join()
        elapsed = time.monotonic() - self._started
        ms = np.array(self.latencies_s or [0.0]) * 1000
        return LoadOutcome(not self.errors, len(self.latencies_s) / elapsed,
                           float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                           "; ".join(self.errors[:5]))


class Probe(threading.Thread):
    """One client sending the same request in a loop; labels each answer v1 / v2 / other."""

    def __init__(self, url: str, entry: str, request: Requests, expected: dict[str, list[int]],
                 period_s: float = 0.02):
        super().__init__(daemon=True)
        self.url, self.entry, self.request, self.expected = url, entry, request, expected
        self.period_s = period_s
        self.log: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with RecommendClient(self.url, model=self.entry) as client:
            while not self._halt.is_set():
                sent = time.monotonic()  # by send time: an answer in flight during the
                try:                     # switch may rightly still come from the old version
                    ids = client.infer(self.request, OUTPUTS)["ITEM_IDS"][0].tolist()
                    label = next((name for name, want in self.expected.items() if want == ids), "other")
                    self.log.append((sent, label))
                except Exception as error:  # a failed request is the thing measured
                    self.errors.append(f"{time.monotonic():.3f}: {error}")
                self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def expected_answers(repo: Path, entry: Entry, model: str, new_file: Path, request: Requests) -> dict[str, list[int]]:
    """The probe's answer from version 1 (the repository) and version 2 (a linked preview copy
    with the new file as the model's next version), both from the in-process reference."""
    scenario = scenario_named(entry.scenario)
    v1 = scenario.reference(repo, entry)(request)["ITEM_IDS"][0].tolist()
    with tempfile.TemporaryDirectory() as tmp:
        preview = Path(tmp) / "repository"
        shutil.copytree(repo, preview, copy_function=os.link, ignore=shutil.ignore_patterns("__pycache__"))
        version = preview / model / str(max(versions(preview / model)) + 1)
        version.mkdir()
        shutil.copyfile(new_file, version / served_name(new_file))
        v2 = scenario.reference(preview, entry)(request)["ITEM_IDS"][0].tolist()
    if v1 == v2:
        raise ValueError(f"{new_file} gives the probe request the same answer as version 1; the "
                         f"switch would be invisible: use a different export")
    return {"v1": v1, "v2": v2}


def _first(log, label, after):
    return next((t - after for t, name in log if t >= after and name == label), None)


def hot_swap(repo: Path, new_file: Path, out_dir: Path, concurrency: int = 16, duration_s: float = 30,
             k: int = 10, entry_name: str | None = None, model: str | None = None) -> SwapResult:
    work = out_dir / "swap_repository"  # the caller's repository is never modified
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(repo, work, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(out_dir / "retired", ignore_errors=True)
    entry = chosen_entry(work, entry_name)
    model = model or scenario_named(entry.scenario).swappable_model(entry)
    rows = entry_rows(work, entry, k)
    probe_request = row(rows, 0)
    expected = expected_answers(work, entry, model, Path(new_file), probe_request)
    config = ServerConfig(model_repository=work, model_control_mode="explicit", verify_manifest=True)
    with TritonServer(config) as server:
        loader = ClientLoad(server.grpc_url, entry.name, rows, concurrency)
        probe = Probe(server.grpc_url, entry.name, probe_request, expected)
        start = time.monotonic()
        loader.start()
        probe.start()
        try:
            time.sleep(duration_s * 0.3)
            t_publish = time.monotonic()
            publish_version(work, model, {served_name(new_file): Path(new_file)}, server.grpc_url)
            t_published = time.monotonic()
            time.sleep(max(0.0, start + duration_s * 0.65 - time.monotonic()))
            # on a loaded machine the switch can take longer than planned: roll back only
            # once version 2 was seen serving (or after another 30 s, which then fails)
            deadline = time.monotonic() + 30
            while _first(probe.log, "v2", t_publish) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            t_rollback = time.monotonic()
            rollback(work, model, server.grpc_url, retired=out_dir / "retired")
            t_rolled = time.monotonic()
            time.sleep(max(0.0, start + duration_s - time.monotonic()))
        finally:
            probe.stop()
            load = loader.stop()
    log = probe.log
    return SwapResult(
        entry.name, model, concurrency, duration_s, load, len(loader.latencies_s), len(loader.errors),
        len(log), probe.errors[:20], sum(1 for _, name in log if name == "other"),
        t_published - t_publish, _first(log, "v2", t_publish),
        sum(1 for t, name in log if t_published <= t < t_rollback and name == "v1"),
        t_rolled - t_rollback, _first(log, "v1", t_rollback),
        sum(1 for t, name in log if t >= t_rolled and name == "v2"),
        _compress_timeline([(round(t - start, 2), name) for t, name in log]))


def _compress_timeline(log: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Only the answers whose label differs from the previous one (the switch points)."""
    return [entry for i, entry in enumerate(log) if i == 0 or entry[1] != log[i - 1][1]]


