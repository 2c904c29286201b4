"""Which measured variants to serve: compress hands them to export, export writes them.

    variants = servable_variants(Path("runs/demo/compress"), "best")
    # recdeploy export --run runs/demo --variants best   (puts each beside the full model)

Reads a finished ``report.json`` (``recdeploy compress``): ``best`` is the fastest variant
within the quality budget, ``all`` every measured variant, or a comma-separated list of names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from recdeploy.compress.config import CompressionConfigError


@dataclass(frozen=True)
class ServableVariant:
    name: str               # as measured, e.g. "prune-50+rowwise-int8"
    slug: str               # Triton-safe suffix: scorer_<slug>, recommend_<slug>, ...
    onnx_path: Path         # takes the served model's inputs (what the report measured)
    info: dict              # methods and the report's row: size, quality, latency


def read_report(report_dir: Path) -> dict:
    path = Path(report_dir) / "report.json"
    if not path.is_file():
        raise CompressionConfigError(f"{path} does not exist: run recdeploy compress first")
    return json.loads(path.read_text())


def select_variants(saved: dict, which: str) -> list[str]:
    """Names of the variants to serve out of a saved report (never the reference)."""
    candidates = [name for name in saved["variants"] if name != saved["reference"]]
    if which == "all":
        return candidates
    if which == "best":
        if not saved.get("best"):
            raise CompressionConfigError("--variants best needs a report made with --quality-budget and "
                                         "a variant within it; name variants instead, or pass 'all'")
        return [saved["best"]]
    wanted = [w.strip() for w in which.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(candidates))
    if unknown:
        raise CompressionConfigError(f"cannot serve {unknown}: not measured in this report; "
                                     f"measured: {', '.join(candidates)}")
    return [name for name in candidates if name in wanted]


def servable_variants(report_dir: Path, which: str = "best") -> list[ServableVariant]:
    saved = read_report(report_dir)
    rows = {row["variant"]: row for row in saved["rows"]}
    chosen = []
    for name in select_variants(saved, which):
        variant = saved["variants"][name]
        path = Path(variant["onnx"])
        if not path.is_file():
            raise CompressionConfigError(f"variant {name!r}: {path} is gone; rebuild it with recdeploy compress")
        chosen.append(ServableVariant(name=name, slug=path.stem, onnx_path=path,
                                      info={"methods": variant["methods"], **rows[name]}))
    return chosen
