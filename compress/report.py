"""The compression report: one row per variant, in Markdown, JSON and CSV, plus a Pareto plot.

    report.write(Path("runs/demo/compress"))   # report.md, report.json, report.csv, pareto.png
    report.best()                             # fastest variant within the quality budget

Relative quality loss is (reference - variant) / reference on the family's primary metric
(NDCG@10 for retrieval); speed-up and size ratio are reference / variant.
"""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from recdeploy.compress.config import CompressionConfigError


def parse_budget(text: str) -> float:
    """'1%' -> 0.01; '0.005' -> 0.005 (a fraction of the reference metric)."""
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise CompressionConfigError(f"quality budget must look like '1%' or '0.01'; got {text!r}") from None
    if not 0 <= value < 1:
        raise CompressionConfigError(f"quality budget must be in [0%, 100%); got {text!r}")
    return value


@dataclass
class CompressionReport:
    model: str
    dataset: str
    metric: str
    reference: str
    results: list            # VariantResult
    quality_budget: float | None
    threads: int
    batches: tuple[int, ...]
    rounds: int
    spinning: bool = False       # ONNX Runtime's intra-op threads spin-waiting (cpu_session)

    def _ref(self):
        return next(r for r in self.results if r.name == self.reference)

    def rows(self) -> list[dict]:
        ref = self._ref()
        base = ref.quality[self.metric]
        rows = []
        for r in self.results:
            row = {"variant": r.name, "size_mb": round(r.size_bytes / 2**20, 4),
                   "x_smaller": round(ref.size_bytes / r.size_bytes, 2), "parameters": r.parameters,
                   **{k: round(v, 4) for k, v in r.quality.items() if k != "users"},
                   "rel_loss_pct": round(100 * (base - r.quality[self.metric]) / base, 2) if base else 0.0}
            for batch in self.batches:
                t, t_ref = r.latency[batch], ref.latency[batch]
                row[f"b{batch}_ms"] = round(t["ms"], 4)
                row[f"b{batch}_iqr_ms"] = round(t["spread_ms"], 4)
                row[f"b{batch}_rows_per_s"] = round(t["per_s"], 1)
                row[f"b{batch}_min_ms"] = round(t["min_ms"], 4)
                # paired: the median over rounds of (reference / variant) within the same round
                row[f"b{batch}_speedup"] = round(statistics.median(
                    a / b for a, b in zip(t_ref["samples_ms"], t["samples_ms"])), 2)
            row["quantized_ops"] = " ".join(f"{k}:{v}" for k, v in sorted(r.quantized_ops.items()))
            row["notes"] = "; ".join(r.notes)
            rows.append(row)
        return rows

    def within_budget(self) -> list[dict]:
        if self.quality_budget is None:
            return []
        return [row for row in self.rows()
                if row["variant"] != self.reference and row["rel_loss_pct"] <= 100 * self.quality_budget]

    def best(self, batch: int | None = None) -> str | None:
        """The fastest variant (at the largest measured batch) within the quality budget."""
        batch = batch or max(self.batches)
        rows = self.within_budget()
        return max(rows, key=lambda row: row[f"b{batch}_speedup"])["variant"] if rows else None

    def to_dict(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "metric": self.metric,
                "reference": self.reference, "quality_budget": self.quality_budget,
                "threads": self.threads, "spinning": self.spinning, "batches": list(self.batches),
                "rounds": self.rounds, "best": self.best(), "rows": self.rows(),
                "variants": {r.name: {"methods": r.methods, "onnx": str(r.onnx_path), "ops": r.ops,
                                      "quality": r.quality,
                                      "initializer_dtypes": r.initializer_dtypes}
                             for r in self.results}}

    def markdown(self) -> str:
        rows = self.rows()
        extra = [k for k, v in self._ref().quality.items() if k != self.metric and isinstance(v, float)]
        cols = ["variant", "size_mb", "x_smaller", "parameters", self.metric, *extra, "rel_loss_pct"]
        for batch in self.batches:
            cols += [f"b{batch}_ms", f"b{batch}_min_ms", f"b{batch}_speedup", f"b{batch}_rows_per_s"]
        cols += ["quantized_ops", "notes"]
        lines = [f"# Compression report: {self.model} on {self.dataset}", "",
                 f"Quality: {self.metric} on the test split of the model's own evaluation protocol, "
                 f"computed from each ONNX variant's outputs. Latency: ONNX Runtime in-process, {self.threads} threads "
                 f"(spin-waiting {'on' if self.spinning else 'off'}), median of "
                 f"{self.rounds} interleaved rounds (all variants in one run; min = best round); speedup is the "
                 f"median over rounds of the paired ratio reference/variant. Reference: "
                 f"`{self.reference}`; x_smaller is reference / variant.", "",
                 "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(row.get(c, "")) for c in cols) + " |" for row in rows]
        if self.quality_budget is not None:
            best = self.best()
            lines += ["", f"Quality budget {100 * self.quality_budget:g}% relative {self.metric} loss: "
                          + (f"fastest variant within it (batch {max(self.batches)}): **{best}**"
                             if best else "no variant is within it")]
        return "\n".join(lines) + "\n"

    def write(self, out: Path) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(self.markdown())
        (out / "report.json").write_text(json.dumps(self.to_dict(), indent=2))
        rows = self.rows()
        with open(out / "report.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        self.plot(out / "pareto.png")

    def plot(self, path: Path) -> None:
        """Quality vs latency, one panel per batch size; the Pareto front is joined."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        fig, axes = plt.subplots(1, len(self.batches), figsize=(6 * len(self.batches), 4.5), squeeze=False)
        for ax, batch in zip(axes[0], self.batches):
            points = sorted((row[f"b{batch}_ms"], row[self.metric], row["variant"]) for row in rows)
            front, best_q = [], float("-inf")
            for ms, q, _ in points:
                if q > best_q:
                    front.append((ms, q))
                    best_q = q
            ax.plot(*zip(*front), "--", color="grey", label="Pareto front")
            for ms, q, name in points:
                ax.scatter(ms, q, color="C3" if name == self.reference else "C0")
                ax.annotate(name, (ms, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel(f"latency per call at batch {batch} (ms, median)")
            ax.set_ylabel(f"{self.metric} (test)")
            ax.set_title(f"{self.model} / {self.dataset}: batch {batch}")
            ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
