"""Perf results -> perf.csv, summary.json, report.md and throughput_vs_p99.png.

    from recdeploy.perf.report import write_report
    files = write_report([result], Path("reports/perf"), {"dataset": "ml-100k"})

Everything but the PNG is a pure function from results to text (render_*), written by
write_report. Throughput is shown twice: requests/s (what the server handles) and
recommendations/s (= perf_analyzer's inferences/s, which already counts each user row
of a batch; see results.py).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recdeploy.perf.results import PerfResult, PerfRow

CSV_FIELDS = ["model", "batch_size", "protocol", *PerfRow.__dataclass_fields__, "requests_per_s",
              "recommendations_per_s"]


@dataclass(frozen=True)
class ReportFiles:
    csv: Path
    summary: Path
    markdown: Path
    plot: Path


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def render_csv(results: Sequence[PerfResult]) -> str:
    """Every row of every result, with its model and batch size."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        batch = result.config.batch_size
        for row in result.rows:
            writer.writerow({"model": result.config.model_name, "batch_size": batch,
                             "protocol": result.config.protocol, **row.to_dict(),
                             "requests_per_s": f"{row.requests_per_s(batch):g}",
                             "recommendations_per_s": f"{row.throughput_infer_per_s:g}"})
    return out.getvalue()


def summarize(results: Sequence[PerfResult], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-ready summary: metadata, per result its config, rows and peak throughput."""
    entries = []
    for result in results:
        peak = result.peak()
        entry = result.to_dict()
        entry["peak"] = {"concurrency": peak.concurrency,
                         "recommendations_per_s": peak.throughput_infer_per_s,
                         "requests_per_s": peak.requests_per_s(result.config.batch_size),
                         "p99_ms": peak.p99_us / 1000}
        entries.append(entry)
    return {"metadata": dict(metadata or {}), "results": entries}


TABLE_HEADER = ("| concurrency | requests/s | inferences/s (= recs/s) | p50 ms | p90 ms | p99 ms "
                "| server queue ms | server compute ms (input / infer / output) |")


def render_table(result: PerfResult) -> str:
    batch = result.config.batch_size
    lines = [TABLE_HEADER, "|" + "---:|" * 8]
    for row in result.rows:
        compute = " / ".join(_ms(us) for us in (row.server_compute_input_us, row.server_compute_infer_us,
                                                 row.server_compute_output_us))
        lines.append(f"| {row.concurrency} | {row.requests_per_s(batch):.1f} | {row.throughput_infer_per_s:.1f} "
                     f"| {_ms(row.p50_us)} | {_ms(row.p90_us)} | {_ms(row.p99_us)} "
                     f"| {_ms(row.server_queue_us)} | {compute} |")
    return "\n".join(lines)


def render_markdown(results: Sequence[PerfResult], metadata: dict[str, Any] | None = None,
                    plot_name: str = "throughput_vs_p99.png") -> str:
    metadata = dict(metadata or {})
    lines = ["# Serving performance (perf_analyzer)", ""]
    lines += [f"- **{key}**: {value}" for key, value in metadata.items()]
    if metadata:
        lines.append("")
    lines += ["One request carries `batch size` users; perf_analyzer's inferences/s counts users, so it "
              "equals recommendations (top-K lists) per second. Latencies are per request, client side; "
              "the server columns are Triton's averages per request.", ""]
    for result in results:
        config = result.config
        peak = result.peak()
        lines += [f"## {result.label}", "",
                  f"`{config.model_name}` at {config.url} over {config.protocol}, batch size {config.batch_size}, "
                  f"{_windows(result)}. Peak: **{peak.throughput_infer_per_s:.1f} "
                  f"recommendations/s** at concurrency {peak.concurrency} (p99 {_ms(peak.p99_us)} ms).", "",
                  render_table(result), ""]
    lines += [f"![throughput vs p99 latency]({plot_name})", ""]
    return "\n".join(lines)


def _windows(result: PerfResult) -> str:
    """"2000 ms windows", or which levels were re-measured with other ones (analyzer.run_level):
    shorter after a timeout, longer after no stable measurement."""
    planned = result.config.measurement_interval_ms
    retried = []
    for command in result.commands:
        argv = list(command)
        if "--measurement-interval" in argv and "--concurrency-range" in argv:
            interval = int(argv[argv.index("--measurement-interval") + 1])
            if interval != planned:
                level = argv[argv.index("--concurrency-range") + 1].split(":")[0]
                why = "a timeout" if interval < planned else "no stable measurement"
                retried.append(f"concurrency {level} re-measured with {interval} ms windows after {why}")
    return f"{planned} ms windows" + (f" ({'; '.join(retried)})" if retried else "")


def plot_throughput_vs_p99(results: Sequence[PerfResult], path: Path) -> Path:
    """One curve per result: recommendations/s against p99 latency, points labelled by concurrency."""
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for result in results:
        xs = [row.p99_us / 1000 for row in result.rows]
        ys = [row.throughput_infer_per_s for row in result.rows]
        axes.plot(xs, ys, marker="o", label=result.label)
        for row, x, y in zip(result.rows, xs, ys):
            axes.annotate(f"c={row.concurrency}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("p99 latency (ms)")
    axes.set_ylabel("recommendations / s")
    axes.set_title("Throughput vs tail latency")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def write_report(results: Sequence[PerfResult], out_dir: Path, metadata: dict[str, Any] | None = None) -> ReportFiles:
    """Write the four report files into out_dir and return their paths."""
    if not results or any(not result.rows for result in results):
        raise ValueError("write_report needs at least one result, each with at least one row")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / "perf.csv", out_dir / "summary.json", out_dir / "report.md",
                        out_dir / "throughput_vs_p99.png")
    files.csv.write_text(render_csv(results))
    files.summary.write_text(json.dumps(summarize(results, metadata), indent=2) + "\n")
    files.markdown.write_text(render_markdown(results, metadata, files.plot.name))
    plot_throughput_vs_p99(results, files.plot)
    return files
