"""Start-up canary: every entry's served answers must equal its in-process reference.

    report = run_canary(Path("model_repository"), "127.0.0.1:8001")   # CanaryError if not
    print(report.summary())

`recdeploy serve` runs it before it prints "ready" on an exported repository (one with
``recdeploy.json``). Each entry's scenario supplies the requests (real ids, a cold start, edge
cases) and the reference pipeline (the repository's own artifacts run in-process). It catches
what a health check cannot: a server that is up and answers, but wrongly (numpy >= 2 in the
stub's environment gives empty tensors; a stub that imports another numpy; a model file
that is not the one the feature arrays were exported with).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.compare import AnswerMismatch
from recdeploy.export.scenarios import entries_of, read_metadata, scenario_named


class CanaryError(ValueError):
    """A served answer differs from the in-process one (the message shows both)."""


@dataclass(frozen=True)
class CanaryReport:
    protocol: str
    requests: dict[str, int]            # entry -> rows checked
    max_abs_score_diff: float

    def summary(self) -> str:
        return (f"canary: over {self.protocol}, each of {len(self.requests)} entries "
                f"({', '.join(self.requests)}; {sum(self.requests.values())} rows incl. cold starts) "
                f"equals the in-process pipeline (max |score diff| {self.max_abs_score_diff:.1e})")


def wants_canary(repo: Path) -> bool:
    return (Path(repo) / "recdeploy.json").is_file()


def run_canary(repo: Path, url: str, protocol: str = "grpc", k: int = 10,
               entries: tuple[str, ...] = ()) -> CanaryReport:
    """Ask the server and the in-process pipeline the same requests, entry by entry."""
    repo = Path(repo)
    read_metadata(repo)  # a clear error for a folder that was never exported
    chosen = {name: entry for name, entry in entries_of(repo).items() if not entries or name in entries}
    checked, worst = {}, 0.0
    for name, entry in chosen.items():
        scenario = scenario_named(entry.scenario)
        reference = scenario.reference(repo, entry)
        rows = 0
        with RecommendClient(url, protocol, model=name) as client:
            for requests in scenario.canary_requests(repo, entry, k):
                want = reference(requests)
                served = client.infer(requests, list(want))
                labels = [f"request row {i} ({_describe(requests, i)})" for i in range(len(want["ITEM_IDS"]))]
                try:
                    worst = max(worst, scenario.compare(served, want, entry, rows=labels))
                except AnswerMismatch as mismatch:
                    raise CanaryError(str(mismatch)) from mismatch
                rows += len(labels)
        checked[name] = rows
    return CanaryReport(protocol, checked, worst)


def _describe(requests: dict[str, np.ndarray], row: int) -> str:
    return ", ".join(f"{name}={np.asarray(value[row]).reshape(-1)[:4].tolist()}"
                     for name, value in requests.items())
