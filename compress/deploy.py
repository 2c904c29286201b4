"""Put measured variants beside the full model in an exported Triton repository.

    export_variants(report, ds, family, Path("model_repository"), "best")

Each variant becomes scorer_<slug> + recommend_<slug>, sharing feature_lookup and topk with
the full model, so clients and perf_analyzer compare them on one server.
"""
from __future__ import annotations

import json
from pathlib import Path

from recdeploy.compress.config import CompressionConfigError


def select_variants(report, which: str) -> list:
    candidates = [r for r in report.results if r.name != report.reference]
    if which == "all":
        return candidates
    if which == "best":
        best = report.best()
        if best is None:
            raise CompressionConfigError("--export-variants best needs --quality-budget and a variant "
                                         "within it; name variants instead, or pass 'all'")
        return [r for r in candidates if r.name == best]
    wanted = [w.strip() for w in which.split(",") if w.strip()]
    unknown = set(wanted) - {r.name for r in candidates}
    if unknown:
        raise CompressionConfigError(f"cannot export {sorted(unknown)}: not measured in this run; "
                                     f"measured: {', '.join(r.name for r in candidates)}")
    return [r for r in candidates if r.name in wanted]


def export_variants(report, ds, family, repo: Path, which: str = "best") -> list[str]:
    """Writes the selected variants; returns the Triton model names added."""
    repo = Path(repo)
    meta_path = repo / "recdeploy.json"
    if meta_path.is_file():
        fingerprint = json.loads(meta_path.read_text()).get("dataset_fingerprint")
        if fingerprint not in (None, ds.fingerprint()):
            raise CompressionConfigError(f"{repo} was exported from other data ({fingerprint}); "
                                         f"these variants were built on {ds.name} ({ds.fingerprint()})")
    rows = {row["variant"]: row for row in report.rows()}
    names = []
    for result in select_variants(report, which):
        names += family.write_variant(repo, result.onnx_path, ds, result.slug,
                                      info={"methods": result.methods, **rows[result.name]})
    return names
