"""perf_analyzer's CSV (``-f``) as data: :func:`parse_csv` -> list of :class:`PerfRow`.

    rows = parse_csv(Path("reports/perf/raw/recommend-b1-c4.csv"))
    rows[0].throughput_infer_per_s, rows[0].p99_us

Columns are matched by header name, so the extra columns of ``--verbose-csv`` and
``--collect-metrics`` (and newer perf_analyzer versions) parse too. All times are in
microseconds, as perf_analyzer writes them.

Throughput units: perf_analyzer's "Inferences/Second" counts every row of a batch (its
summary shows "Inference count" = batch size x "Execution count"). With one user per row,
inferences/s IS recommendations/s; requests/s is inferences/s / batch size.
"""
from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recdeploy.perf.config import PerfConfig


class PerfCsvError(ValueError):
    """A file is not a perf_analyzer concurrency CSV."""


# CSV header -> PerfRow field. Required: present in every concurrency-mode CSV of 2.51.
REQUIRED_COLUMNS = {
    "Concurrency": "concurrency",
    "Inferences/Second": "throughput_infer_per_s",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_server_send_recv_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
}
# Optional: --verbose-csv, --collect-metrics (empty cells on a machine without a GPU).
OPTIONAL_COLUMNS = {
    "Avg latency": "avg_latency_us",
    "request/response": "request_response_us",
    "response wait": "response_wait_us",
    "Avg GPU Utilization": "gpu_utilization",
    "Avg GPU Power Usage": "gpu_power_usage",
    "Max GPU Memory Usage": "gpu_memory_used",
    "Total GPU Memory": "gpu_memory_total",
}


@dataclass(frozen=True)
class PerfRow:
    """One concurrency level as perf_analyzer measured it (times in µs)."""

    concurrency: int
    throughput_infer_per_s: float
    client_send_us: float
    network_server_send_recv_us: float
    server_queue_us: float
    server_compute_input_us: float
    server_compute_infer_us: float
    server_compute_output_us: float
    client_recv_us: float
    p50_us: float
    p90_us: float
    p95_us: float
    p99_us: float
    avg_latency_us: float | None = None
    request_response_us: float | None = None
    response_wait_us: float | None = None
    gpu_utilization: float | None = None
    gpu_power_usage: float | None = None
    gpu_memory_used: float | None = None
    gpu_memory_total: float | None = None

    @property
    def server_compute_us(self) -> float:
        return self.server_compute_input_us + self.server_compute_infer_us + self.server_compute_output_us

    def requests_per_s(self, batch_size: int) -> float:
        return self.throughput_infer_per_s / batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _number(text: str, column: str, path: Path) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise PerfCsvError(f"{path}: column {column!r} holds {text!r}, not a number") from None


def parse_csv(path: Path) -> list[PerfRow]:
    """Rows of a perf_analyzer ``-f`` CSV, one per concurrency level, by ascending concurrency.

    perf_analyzer writes a --concurrency-range sweep sorted by throughput, not by level.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    if not lines:
        raise PerfCsvError(f"{path}: empty file; expected perf_analyzer's CSV header")
    header = [name.strip() for name in lines[0]]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise PerfCsvError(
            f"{path}: not a perf_analyzer concurrency CSV; missing columns {missing} "
            f"(found {header}). Request-rate mode CSVs are not supported.")
    columns = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    rows = []
    for cells in lines[1:]:
        if not any(cell.strip() for cell in cells):
            break  # perf_analyzer may append other sections after a blank line
        values: dict[str, Any] = {}
        for name, cell in zip(header, cells):
            if name in columns:
                values[columns[name]] = _number(cell, name, path)
        if any(values.get(field) is None for field in REQUIRED_COLUMNS.values()):
            raise PerfCsvError(f"{path}: row {cells} lacks a value for a required column")
        values["concurrency"] = int(values["concurrency"])
        rows.append(PerfRow(**values))
    if not rows:
        raise PerfCsvError(f"{path}: header only, no measurements")
    return sorted(rows, key=lambda row: row.concurrency)


@dataclass(frozen=True)
class PerfResult:
    """What one config measured: its rows (ascending concurrency) and where they came from."""

    config: PerfConfig
    rows: tuple[PerfRow, ...]
    csv_paths: tuple[Path, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()

    @property
    def label(self) -> str:
        return self.config.label

    def peak(self) -> PerfRow:
        """The row with the highest throughput."""
        return max(self.rows, key=lambda row: row.throughput_infer_per_s)

    def to_dict(self) -> dict[str, Any]:
        batch = self.config.batch_size
        return {
            "label": self.label,
            "config": self.config.to_dict(),
            "rows": [{**row.to_dict(), "requests_per_s": row.requests_per_s(batch),
                      "recommendations_per_s": row.throughput_infer_per_s} for row in self.rows],
            "csv_paths": [str(path) for path in self.csv_paths],
            "commands": [list(command) for command in self.commands],
        }
