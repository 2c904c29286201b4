"""The served side of the GPU benchmark: a repository of fused models on KIND_GPU / KIND_CPU,
through the native libtorch backend and the python-based one on one server, perf_analyzer on each.

    repo = write_served_repository(root, [ServedModel(...), ...])
    with TritonServer(ServerConfig(model_repository=repo)) as server:
        checks = check_served(server, models, users, k)
        row = measure(server, "gpu_fast", batch=32, concurrency=8, data=..., out=...)

``backend="native"`` models are ``platform: "pytorch_libtorch"`` (recdeploy's native backend:
TorchScript ``model.pt`` or an AOTInductor ``model.pt2``); ``backend="python"`` ones name
``pytorch_python``, the python-based torch backend, so both run on one server for an A/B.
"""
from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.export.fused import fused_ensemble_spec, fused_model_spec
from recdeploy.export.repository import write_manifest, write_model
from recdeploy.export.triton_config import ModelSpec, build_ensemble_config, build_model_config
from recdeploy.perf.analyzer import run_sweep
from recdeploy.perf.config import PerfConfig
from recdeploy.perf.gpu_inprocess import parity


@dataclass
class ServedModel:
    name: str
    file: Path                   # model.pt (TorchScript) or model.pt2 (AOTInductor)
    kind: str = "KIND_GPU"
    backend: str = "native"      # or "python" (backend: pytorch_python)
    threads: int = 1
    ensemble: str = ""           # also serve it behind a one-step ensemble of this name
    max_k: int = 0               # K's range 1..max_k (0: the catalogue; a chunked top-K takes fewer)
    # (users [B,1], k [B,1]) numpy -> (ids, scores): the in-process answer it must give
    reference: Callable | None = None


def model_spec(model: ServedModel, n_items: int, max_queue_delay_us: int) -> ModelSpec:
    spec = fused_model_spec(model.name, platform="pytorch_libtorch", kind=model.kind, instances=1,
                            max_queue_delay_us=max_queue_delay_us, threads=model.threads,
                            n_items=model.max_k or n_items,
                            filename=model.file.name if model.file.suffix == ".pt2" else "")
    if model.backend == "python":
        spec = dataclasses.replace(spec, platform="", backend="pytorch_python")
    return spec


def write_served_repository(repo: Path, models: list[ServedModel], n_items: int,
                            max_queue_delay_us: int = 200) -> Path:
    for model in models:
        spec = model_spec(model, n_items, max_queue_delay_us)
        write_model(repo, build_model_config(spec), {model.file.name: model.file})
        if model.ensemble:
            write_model(repo, build_ensemble_config(fused_ensemble_spec(spec, model.ensemble)), {})
    write_manifest(repo)
    return repo


def check_served(url: str, models: list[ServedModel], users: np.ndarray, k: int) -> dict[str, dict]:
    """Each served model's answers for one batch against its in-process reference."""
    out = {}
    for model in models:
        for name in filter(None, (model.name, model.ensemble)):
            try:
                with RecommendClient(url, model=name, timeout_s=60) as client:
                    ids, scores = client.recommend(users, k)
                if model.reference is not None:
                    want_ids, want_scores = model.reference(users.reshape(-1, 1),
                                                            np.full((len(users), 1), k, np.int32))
                    out[name] = parity(ids, scores, want_ids, want_scores)
            except Exception as error:  # recorded, the next model is checked
                out[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
    return out


def measure(url: str, model: str, batch: int, concurrency: int, data: Path, out: Path,
            interval_ms: int = 1000) -> dict:
    """perf_analyzer at one level: served recs/s and latency of ``model``."""
    perf = PerfConfig(model_name=model, url=url, concurrency=(concurrency,), batch_size=batch,
                      input_data=data, stability_percentage=25, measurement_interval_ms=interval_ms,
                      max_trials=5)
    peak = run_sweep(perf, out / f"{model}-b{batch}", progress=False).peak()
    return {"model": model, "batch": batch, "concurrency": concurrency,
            "served_recs_per_s": peak.throughput_infer_per_s, "p50_ms": peak.p50_us / 1e3,
            "p99_ms": peak.p99_us / 1e3, "server_compute_us": peak.server_compute_us}


def merge_csvs(folder: Path, target: Path) -> Path | None:
    """Every perf_analyzer CSV under ``folder`` in one file, a ``source`` column first."""
    paths = sorted(Path(folder).rglob("*.csv"))
    if not paths:
        return None
    header: list[str] = []
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        for path in paths:
            with open(path, newline="") as source:
                rows = list(csv.reader(source))
            if rows and rows[0] != header:   # a header again only where the columns change
                header = rows[0]
                writer.writerow(["source", *header])
            writer.writerows([path.parent.parent.name, *row] for row in rows[1:])
    return target
