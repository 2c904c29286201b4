"""Build and measure compressed variants of a trained run, side by side.

    report = compress_run(Path("runs/demo"), parse_methods("prune-50,int8-dynamic"),
                          out=Path("runs/demo/compress"), quality_budget=0.01)

Every variant becomes an ONNX file that takes the served model's inputs, so quality
(the family's own protocol, computed from the ONNX scores), size and latency are measured
on exactly what Triton would serve. The FP32 export of the full model is the reference row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from recdeploy.compress.api import MissingDataError, TaskData, compress
from recdeploy.compress.config import RowwiseConfig, Variant
from recdeploy.compress.families import ModelFamily, family_named
from recdeploy.compress.measure import (
    QUANTIZED_OPS,
    Timing,
    file_size,
    graph_summary,
    interleaved_latency,
    session_scorer,
)
from recdeploy.compress.report import CompressionReport
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.data import load_dataset
from recdeploy.train.onnx_io import check_parity, cpu_session, export_onnx

REFERENCE = "fp32"


@dataclass
class VariantResult:
    name: str
    slug: str
    methods: list[dict]
    onnx_path: Path
    size_bytes: int
    parameters: int
    ops: dict[str, int]
    initializer_dtypes: dict[str, int]
    quality: dict[str, float]
    latency: dict[int, Timing] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def quantized_ops(self) -> dict[str, int]:
        return {op: n for op, n in self.ops.items() if op in QUANTIZED_OPS}


def logical_parameters(module) -> int:
    """Weights the module represents: a row-wise table counts rows x dim, however it is stored."""
    tables = [m for m in module.modules() if isinstance(m, RowwiseTable)]
    inside = {id(t) for m in tables for t in (*m.parameters(), *m.buffers())}
    rest = sum(t.numel() for t in (*module.parameters(), *module.buffers()) if id(t) not in inside)
    return rest + sum(m.codes.shape[0] * m.dim for m in tables)


def build_variant_onnx(model, family: ModelFamily, variant: Variant | None, data: TaskData,
                       example: dict, out_dir: Path, cache: dict | None = None) -> tuple[Path, list[str], int]:
    """Apply the variant's chain and export; returns (ONNX path, notes, logical parameters)."""
    notes, served = [], None
    configs = variant.configs if variant else ()
    done: tuple = ()
    for config in (c for c in configs if c.stage == "model"):
        done += (config,)
        if isinstance(config, RowwiseConfig):
            served = compress(model, config, data=data)
        elif cache is not None and done in cache:
            model = cache[done]          # prune-50 and prune-50+int8-dynamic share one fine-tune
        else:
            model = compress(model, config, data=data)
            if cache is not None:
                cache[done] = model
            if hasattr(model, "dim"):
                notes.append(f"pruned to dim {model.dim}")
    served = served if served is not None else family.served_module(model)
    slug = variant.slug if variant else REFERENCE
    path = out_dir / f"{slug}.model-stage.onnx"
    # folding would turn the int8/int4 tables and their Cast into FP32 initializers
    folding = not any(isinstance(m, RowwiseTable) for m in served.modules())
    export_onnx(served, example, list(family.output_names), path, constant_folding=folding)
    check_parity(served, path, example, list(family.output_names))
    onnx_configs = [c for c in configs if c.stage == "onnx"]
    final = out_dir / f"{slug}.onnx"
    if onnx_configs:
        compress(path, onnx_configs[0], data=data, out=final)
        path.unlink()
    else:
        path.rename(final)
    return final, notes, logical_parameters(served)


def measure_variants(files: dict[str, tuple[Path, list[dict], list[str], int]], family: ModelFamily,
                     data: TaskData, requests: dict[int, list[dict]], rounds: int = 15,
                     threads: int = 2, progress: bool = True, spinning: bool = False) -> list[VariantResult]:
    """files: {name: (onnx path, method dicts, notes, parameters)}; quality, then interleaved latency."""
    if data.evaluate is None:
        raise MissingDataError(f"{family.name}: measuring quality needs task data with evaluate")
    sessions, results = {}, []
    for name, (path, methods, notes, params) in tqdm(files.items(), desc="quality", disable=not progress,
                                             unit="variant"):
        session = cpu_session(path, threads, spinning)
        sessions[name] = session
        _, ops, dtypes = graph_summary(path)
        quality = data.evaluate(session_scorer(session, family.output_names[0]))
        slug = name if name == REFERENCE else "".join(ch if ch.isalnum() else "_" for ch in name).lower()
        results.append(VariantResult(name=name, slug=slug, methods=methods, onnx_path=path,
                                     size_bytes=file_size(path), parameters=params, ops=dict(ops),
                                     initializer_dtypes=dtypes, quality=quality, notes=list(notes)))
    timings = interleaved_latency(sessions, requests, rounds=rounds, progress=progress)
    for result in results:
        result.latency = timings[result.name]
    return results


def compress_run(run_dir: Path, variants: list[Variant], out: Path, quality_budget: float | None = None,
                 rounds: int = 15, batches: tuple[int, ...] = (1, 256), threads: int = 2,
                 data_path: Path | None = None, progress: bool = True, spinning: bool = False):
    """Build every variant from run_dir's checkpoint, measure them all, write the report.

    spinning: let ONNX Runtime's idle threads spin-wait while timing (off by default: on a
    machine with shared cores it makes the medians swing, see cpu_session)."""
    checkpoint = load_checkpoint(run_dir)
    ds = load_dataset(checkpoint.config.dataset, path=data_path)
    family = family_named(checkpoint.config.model)
    # the run's task and seed: quality is measured under the run's own protocol, and a random
    # split (DCN-v2's or two-tower's 8:1:1) is redrawn the same
    data = family.task_data(checkpoint.model, ds, seed=checkpoint.config.seed,
                            weight_decay=checkpoint.config.weight_decay,
                            task=checkpoint.config.resolved_task, lr=checkpoint.config.lr)
    example = family.example_requests(ds, 64, seed=1)
    out = Path(out)
    onnx_dir = out / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)

    files: dict[str, tuple[Path, list[dict], list[str], int]] = {}
    cache: dict[tuple, object] = {}
    bar = tqdm([None, *variants], desc="build variants", disable=not progress, unit="variant")
    for variant in bar:
        name = variant.name if variant else REFERENCE
        bar.set_postfix_str(name)
        path, notes, params = build_variant_onnx(checkpoint.model, family, variant, data, example, onnx_dir, cache)
        files[name] = (path, variant.to_dict()["configs"] if variant else [], notes, params)

    requests = {batch: [family.example_requests(ds, batch, seed=100 + i) for i in range(8)]
                for batch in batches}
    results = measure_variants(files, family, data, requests, rounds, threads, progress, spinning)
    report = CompressionReport(model=checkpoint.config.model, dataset=ds.name,
                               metric=family.primary_metric, reference=REFERENCE,
                               results=results, quality_budget=quality_budget, threads=threads,
                               batches=tuple(batches), rounds=rounds, spinning=spinning)
    report.write(out)
    return report, ds, family
