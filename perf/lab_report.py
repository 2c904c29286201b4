"""The lab's report: served vs in-process per entry, served quality, Triton's per-step time.

    path = write_lab_report(rows, results, Path("reports/bench"), {"dataset": "ml-100k"})

Writes ``report.md`` (with perf_analyzer's own tables and plot) and ``lab.json`` (one record
per row: what docs/performance.md is generated from).
"""
from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

from recdeploy.perf.inprocess import InProcessResult
from recdeploy.perf.lab import LabRow
from recdeploy.perf.report import write_report


def fastest_inprocess(rows: list[LabRow]) -> dict[int, InProcessResult]:
    """Per batch size, the fastest in-process pipeline among ``rows``.

    Entries of one scenario answer the same question (a user's top-K, say), so the fastest way
    to answer it without a server is the fair bar for each of them: a variant served by a
    slower runtime (TorchScript) must not look good against its own slow in-process number.
    Pass the rows of one scenario (``by_scenario``).
    """
    best: dict[int, InProcessResult] = {}
    for row in rows:
        held = best.get(row.batch_size)
        if held is None or row.inprocess.recommendations_per_s > held.recommendations_per_s:
            best[row.batch_size] = row.inprocess
    return best


def by_scenario(rows: list[LabRow]) -> dict[str, list[LabRow]]:
    ordered = sorted(rows, key=lambda row: row.scenario)
    return {scenario: list(group) for scenario, group in groupby(ordered, key=lambda row: row.scenario)}


def served_over_fastest(row: LabRow, fastest: dict[int, InProcessResult]) -> float:
    return row.served_peak_recs_per_s / fastest[row.batch_size].recommendations_per_s


def _setting(value: int | None) -> str:
    return "as exported" if value is None else str(value)


def _quality(row: LabRow) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in row.quality.items()) or "–"


def render_lab_markdown(rows: list[LabRow]) -> str:
    protocols = "/".join(sorted({row.protocol for row in rows})).replace("grpc", "gRPC").replace("http", "HTTP")
    lines = ["## Served vs in-process", "",
             f"Served: perf_analyzer's peak over the concurrency sweep ({protocols or 'gRPC'}, one client machine "
             "shared with the server). In-process: the same pipeline and artifacts called back to "
             "back by one thread, no server, sampled just before and just after the served sweep "
             "(both shown); the ratio takes the better sample. The last column divides by the "
             "fastest in-process pipeline of the same scenario at that batch size (named below the "
             "table). Quality: the scenario's measure of the served answers (agreement with the "
             "full model's top-K on real requests; 1.0 for an exact entry).", "",
             "| entry | scenario | batch | queue delay us | instances | served recs/s (peak) | at concurrency "
             "| p99 ms | in-process recs/s (before / after) | served / in-process | served / fastest in-process "
             "| served quality |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    groups = by_scenario(rows)
    fastest = {scenario: fastest_inprocess(group) for scenario, group in groups.items()}
    for row in rows:
        samples = " / ".join(f"{value:,.0f}" for value in row.inprocess_samples)
        lines.append(f"| {row.ensemble} | {row.scenario or '–'} | {row.batch_size} | {_setting(row.delay_us)} | "
                     f"{_setting(row.instances)} | {row.served_peak_recs_per_s:,.0f} | "
                     f"{row.served_peak_concurrency} | {row.served_p99_ms_at_peak:.2f} | "
                     f"{row.inprocess.recommendations_per_s:,.0f}"
                     f"{f' ({samples})' if samples else ''} | {row.served_over_inprocess:.0%} | "
                     f"{served_over_fastest(row, fastest[row.scenario]):.0%} | {_quality(row)} |")
    lines.append("")
    for scenario, best in fastest.items():
        lines += [f"Fastest in-process{f' ({scenario})' if scenario else ''} at batch {batch}: {result.label} "
                  f"({result.recommendations_per_s:,.0f} recs/s)." for batch, result in sorted(best.items())]
    lines += ["", "## Where the server's time goes (Triton statistics, per execution)", "",
              "| entry | batch | delay us | instances | step | executions | queue ms | compute ms |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        for step in row.steps:
            lines.append(f"| {row.ensemble} | {row.batch_size} | {_setting(row.delay_us)} | "
                         f"{_setting(row.instances)} | {step.model} | {step.executions:,} | "
                         f"{step.queue_ms:.3f} | {step.compute_ms:.3f} |")
    return "\n".join(lines) + "\n"


def lab_records(rows: list[LabRow]) -> list[dict]:
    fastest = {scenario: fastest_inprocess(group) for scenario, group in by_scenario(rows).items()}
    return [{**row.to_dict(), "served_over_fastest_inprocess": served_over_fastest(row, fastest[row.scenario])}
            for row in rows]


def write_lab_report(rows: list[LabRow], results: list, out_dir: Path, metadata: dict) -> Path:
    files = write_report(results, out_dir, metadata)
    text = files.markdown.read_text()
    files.markdown.write_text(text.replace("\n## ", "\n" + render_lab_markdown(rows) + "\n## ", 1)
                              if "\n## " in text else text + "\n" + render_lab_markdown(rows))
    (Path(out_dir) / "lab.json").write_text(json.dumps({"metadata": metadata, "rows": lab_records(rows)},
                                                       indent=2))
    return files.markdown
