"""Parts with time budgets and a report written after each: a one-shot device run loses nothing
to one failing or slow part.

    report = BenchReport(out_dir, deadline_s=285)
    run_part(report, "inprocess", 60, lambda: measure(report))     # ok / failed / timed out
    skip_part(report, "tensorrt", "not installed")

A part runs under a SIGALRM timer of min(its budget, the time left before the deadline): a
part that overruns raises PartTimeout where it stands (a subprocess it waits on is killed by
``subprocess.run``; a server's context manager stops it). Its exception is recorded with the
last lines of its traceback, and the summary JSON + Markdown are rewritten after every part.
Parts write their results into ``report.data`` as they go, so a part cut short keeps what it
had measured.
"""
from __future__ import annotations

import json
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SUMMARY = "gpu_summary.json"
REPORT = "gpu_report.md"
# a part is not started with less than this left before the deadline
MIN_PART_S = 5.0


class PartTimeout(BaseException):
    """A part ran past its budget. A BaseException, so the ``except Exception`` that keeps one
    variant's failure from ending a part does not swallow it."""


class BenchReport:
    """The summary of a device run: parts' status, their results, notes; written on every change."""

    def __init__(self, out: Path, deadline_s: float, render: Callable[[dict], str] | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s
        self.render = render or (lambda data: "```json\n" + json.dumps(data, indent=2) + "\n```\n")
        self.data: dict[str, Any] = {"parts": {}, "notes": []}

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.data["notes"].append(text)

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed_s(), 1)
        (self.out / SUMMARY).write_text(json.dumps(self.data, indent=2, default=str))
        (self.out / REPORT).write_text(self.render(self.data))


def _alarm(signum, frame):
    raise PartTimeout()


def run_part(report: BenchReport, name: str, budget_s: float, body: Callable[[], Any]) -> bool:
    """Run ``body`` within min(budget_s, time left); record its status; True when it finished."""
    allowed = min(budget_s, report.left_s())
    if allowed < MIN_PART_S:
        skip_part(report, name, f"out of time ({report.left_s():.0f} s left of the run's deadline)")
        return False
    print(f"[{report.elapsed_s():6.1f} s] part {name} (budget {allowed:.0f} s)", flush=True)
    record: dict[str, Any] = {"status": "running", "budget_s": round(allowed, 1)}
    report.data["parts"][name] = record
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, allowed)
    started = time.monotonic()
    try:
        body()
        record["status"] = "ok"
    except PartTimeout:
        record["status"] = "timed out"
        record["reason"] = f"ran past its {allowed:.0f} s budget; what it measured before is kept"
    except Exception as error:  # one part's failure must not lose the others
        record["status"] = "failed"
        record["reason"] = f"{type(error).__name__}: {error}"[:2000]
        record["traceback"] = traceback.format_exc().splitlines()[-12:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        record["seconds"] = round(time.monotonic() - started, 1)
        print(f"[{report.elapsed_s():6.1f} s] part {name}: {record['status']}"
              + (f" ({record['reason'][:300]})" if "reason" in record else ""), flush=True)
        report.write()
    return record["status"] == "ok"


def skip_part(report: BenchReport, name: str, reason: str) -> None:
    report.data["parts"][name] = {"status": "skipped", "reason": reason}
    print(f"[{report.elapsed_s():6.1f} s] part {name}: skipped ({reason})", flush=True)
    report.write()
