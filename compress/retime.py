"""Re-measure the latency of variants already built, without rebuilding or re-evaluating them.

    recdeploy compress --run runs/demo --retime --rounds 41

Latency medians on a shared 2-core machine move with whatever else runs; quality and size
do not. This reads ``<out>/report.json``, opens every variant's ONNX file again, times them
all interleaved (same requests, same rounds) and rewrites the report with the new latency,
keeping each variant's measured quality, size and graph summary.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from recdeploy.compress.config import CompressionConfigError
from recdeploy.compress.families import family_named
from recdeploy.compress.measure import file_size, interleaved_latency
from recdeploy.compress.pipeline import VariantResult
from recdeploy.compress.report import CompressionReport
from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.data import load_dataset
from recdeploy.train.onnx_io import cpu_session


def _results_from_report(saved: dict) -> list:
    results = []
    skip = {"variant", "size_mb", "x_smaller", "parameters", "rel_loss_pct", "quantized_ops", "notes"}
    for row in saved["rows"]:
        name = row["variant"]
        variant = saved["variants"][name]
        path = Path(variant["onnx"])
        if not path.is_file():
            raise CompressionConfigError(f"variant {name!r}: {path} is gone; rebuild with recdeploy compress")
        # full precision where the report kept it (the rows are rounded)
        quality = variant.get("quality") or {k: v for k, v in row.items()
                                             if k not in skip and not re.match(r"b\d+_", k)}
        results.append(VariantResult(
            name=name, slug=path.stem, methods=variant["methods"], onnx_path=path,
            size_bytes=file_size(path), parameters=int(row["parameters"]), ops=variant["ops"],
            initializer_dtypes=variant["initializer_dtypes"], quality=quality,
            notes=[n for n in str(row.get("notes", "")).split("; ") if n]))
    return results


def retime(out: Path, run_dir: Path, rounds: int = 41, threads: int = 2, data_path: Path | None = None,
           progress: bool = True, spinning: bool = False):
    """Rewrite ``out``'s report with freshly measured, interleaved latency; returns the report."""
    report_json = Path(out) / "report.json"
    if not report_json.is_file():
        raise CompressionConfigError(f"{report_json} does not exist: run recdeploy compress first")
    saved = json.loads(report_json.read_text())
    results = _results_from_report(saved)
    checkpoint = load_checkpoint(run_dir)
    family = family_named(checkpoint.config.model)
    ds = load_dataset(checkpoint.config.dataset, path=data_path)
    batches = tuple(saved["batches"])
    requests = {batch: [family.example_requests(ds, batch, seed=100 + i) for i in range(8)]
                for batch in batches}
    sessions = {r.name: cpu_session(r.onnx_path, threads, spinning) for r in results}
    timings = interleaved_latency(sessions, requests, rounds=rounds, progress=progress)
    for result in results:
        result.latency = timings[result.name]
    report = CompressionReport(model=saved["model"], dataset=saved["dataset"], metric=saved["metric"],
                               reference=saved["reference"], results=results,
                               quality_budget=saved["quality_budget"], threads=threads,
                               batches=batches, rounds=rounds, spinning=spinning)
    report.write(Path(out))
    return report
