"""GPU benchmark of the fused retrieval model, in parts with time budgets, in one device run.

    bash perf/gpu_bench.sh                                      # on a lent GPU machine (see there)
    python -m recdeploy.perf.gpu_bench --no-gpu --out /tmp/gb   # CPU smoke run of every part

Over a synthetic catalogue (10^6 items x 64 by default; speed does not depend on what vectors
learned), at top-100, each part within its budget and the whole before ``--deadline-s``:
- ``inprocess``: the served graph (FusedRetrieval.graph_forward, FP32 and FP16 catalogue) and
  the GPU-shaped one (export/fused_gpu.py, one- and two-stage top-K, eager and as a CUDA graph,
  plus the Triton chunk-max kernel where triton runs) timed with CUDA events at every batch
  size, against the bandwidth floor (one read of the FP16 catalogue), answers checked against FP32;
- ``profile``: torch.profiler's kernel table of the served graph and of the fastest variant;
- ``aoti_triton``: the three-kernel Triton form (export/fused_triton.py) as an AOTInductor
  package, its kernels compiled in (served as gpu_triton_aoti by the native backend);
- ``aoti``: the GPU-shaped model as a torch.export + AOTInductor package compiled on the device;
- ``served``: tritonserver with the native libtorch backend (built here, linking libtorch_cuda)
  and the python-based one on KIND_GPU, the native one on KIND_CPU for the GPU/CPU ratio,
  answers checked against in-process, perf_analyzer per model;
- ``compile``: torch.compile (reduce-overhead) of the GPU-shaped model;
- ``ort_cuda``, ``tensorrt``, ``faiss_gpu``: run where they can, else the reason is recorded.
Writes gpu_summary.json, gpu_report.md (rewritten after every part), gpu_kernels.txt,
gpu_perf.csv and the native build log if it failed, under --out ($OUT on the device).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recdeploy.export.fused import FusedExportError, FusedRetrieval, export_fused_torchscript, module_runner
from recdeploy.export.fused_aoti import aoti_runner, export_fused_aoti, load_aoti
from recdeploy.export.fused_gpu import GpuRetrieval
from recdeploy.export.fused_triton import TritonFusedRank, TritonRetrieval, export_triton_program
from recdeploy.perf import gpu_inprocess as inproc
from recdeploy.perf.gpu_harness import BenchReport, run_part, skip_part
from recdeploy.perf.gpu_others import check_faiss_gpu, check_ort_cuda, check_tensorrt
from recdeploy.perf.gpu_render import ratios, render
from recdeploy.perf.gpu_served import ServedModel, check_served, measure, merge_csvs, write_served_repository
from recdeploy.perf.gpu_settings import parse_args
from recdeploy.perf.input_data import write_input_data
from recdeploy.perf.synthetic_catalogue import synthetic_features
from recdeploy.serve.native_build import NativeBuildUnavailable, native_backend
from recdeploy.serve.server import ServerConfig, ServerStartError, TritonServer

NOMINAL_HBM_TB_S = 4.8   # H200 datasheet; the floor: 128 MB / 4.8 TB/s


class Bench:
    """State shared by the parts: settings, device, models, the report."""

    def __init__(self, args: argparse.Namespace, report: BenchReport):
        self.args, self.report = args, report
        self.device = torch.device("cpu" if args.no_gpu else "cuda")
        self.kind = "KIND_CPU" if args.no_gpu else "KIND_GPU"
        self.models: dict[str, Any] = {}
        self.features: Any = None
        self.users = np.empty(0, np.int64)
        self.best = "gpu_fp16"
        self.aoti_path: Path | None = None
        self.triton_aoti_path: Path | None = None
        self.work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
        self.native: dict = {}
        self.variants: dict[str, inproc.Variant] = {}

    # ------------------------------------------------------------------ parts

    def setup(self) -> None:
        a = self.args
        f = synthetic_features(a.items, a.users, a.dim)
        self.features = f
        parts = (f.user_vectors, f.item_vectors, f.item_bias, f.popularity, f.user_ids, f.seen_indptr,
                 f.seen_items, f.item_ids)
        self.users = f.user_ids[np.random.default_rng(1).permutation(len(f.user_ids))]
        # the CPU copy serves KIND_CPU; the device ones are timed and served on KIND_GPU
        self.models["cpu_fp32"] = FusedRetrieval(*parts).eval()
        self.models["graph_fp32"] = FusedRetrieval(*parts).eval().to(self.device)
        self.models["graph_fp16"] = FusedRetrieval(*parts, half=True).eval().to(self.device)
        self.models["gpu_fp16"] = GpuRetrieval(*parts).eval().to(self.device)
        for name, chunk, groups in (("gpu_fp16_chunk", a.chunk, 0), ("gpu_fp16_cascade", a.chunk, a.groups),
                                    ("triton_base", a.triton_chunk, a.triton_groups)):
            try:   # a chunked top-K needs enough chunks for K + L + margin; without, it is left out
                if chunk and (name != "gpu_fp16_cascade" or groups > 1):
                    self.models[name] = GpuRetrieval(*parts, chunk=chunk, groups=groups).eval().to(self.device)
            except FusedExportError as why:
                self.report.note(f"{name} left out: {why}")
        self.report.data["settings"] |= {"history": self.models["gpu_fp16"].history}

    def availability(self) -> None:
        found = self.report.data.setdefault("availability", {})
        for name, check in (("onnxruntime CUDA", lambda: check_ort_cuda(self, self.device)),
                            ("TensorRT", check_tensorrt), ("faiss GPU", lambda: check_faiss_gpu(self))):
            found[name] = check()
            self.report.write()

    def bandwidth(self) -> None:
        a = self.args
        catalogue = a.items * a.dim * 2
        floor = {"catalogue_mb": catalogue / 1e6, "nominal_tb_s": NOMINAL_HBM_TB_S,
                 "floor_us_nominal": inproc.floor_us(a.items, a.dim, NOMINAL_HBM_TB_S * 1e12)}
        self.report.data["floor"] = floor
        measured = inproc.copy_bandwidth(self.device, 2.0 if self.device.type == "cuda" else 0.2)
        floor |= {"measured_tb_s": measured / 1e12, "floor_us_measured": inproc.floor_us(a.items, a.dim, measured)}

    def inprocess(self) -> None:
        a, data = self.args, self.report.data
        variants = inproc.build_variants(self.models, self.device, a.k)
        self._add_triton(variants)
        self.variants = variants
        data["variants"] = {name: variant.what for name, variant in variants.items()}
        reference = inproc.graph_of(self.models["graph_fp32"])(a.served_batch)
        data["parity"] = inproc.check_variants(variants, reference, self.users[:a.served_batch], a.k, self.device)
        self.report.write()
        rows = data.setdefault("inprocess", [])

        def keep(row):
            rows.append(row)
            print(f"    {row['variant']:<22} b{row['batch']:<4} " +
                  (f"{row['us']:9.1f} us {row['recs_per_s']:>12,.0f} recs/s" if "us" in row else row["error"]),
                  flush=True)
            self.report.write()
        with torch.inference_mode():
            inproc.time_variants(variants, self.users, a.batches, a.k, self.device, a.iters, keep)
        # the faster GPU-shaped model at the served batch is the one exported and served
        eager = [r for r in rows if r["batch"] == a.served_batch and "us" in r
                 and r["variant"] in inproc.GPU_SHAPED]
        if eager:
            self.best = min(eager, key=lambda r: r["us"])["variant"]
        self._end_to_end()

    def _add_triton(self, variants) -> None:
        for base, name in (("triton_base", "triton_chunkmax"),):
            if base not in self.models:
                continue
            try:
                from recdeploy.perf.gpu_triton import triton_variants
                variants |= triton_variants(self.models[base], self.args.triton_chunk, self.args.k, self.device, name)
            except Exception as error:  # no triton, or no CUDA: said, not fatal
                self.report.note(f"{name} left out: {type(error).__name__}: {error}"[:300])

    def _end_to_end(self) -> None:
        """numpy in, numpy out (host copies and syncs included): what a backend pays per batch."""
        out = self.report.data.setdefault("end_to_end", [])
        for name in ("graph_fp16", self.best):
            run = module_runner(self.models[name], self.device)
            for batch in (1, self.args.served_batch):
                users = self.users[:batch].reshape(-1, 1)
                ks = np.full((batch, 1), self.args.k, np.int32)
                timing = inproc.time_call(_fixed(run, users, ks), torch.device("cpu"), iters=self.args.iters)
                out.append({"variant": name, "batch": batch, **timing, "recs_per_s": batch / (timing["us"] * 1e-6)})
                self.report.write()

    def profile(self) -> None:
        a = self.args
        users = torch.as_tensor(self.users[:a.served_batch].reshape(-1, 1), device=self.device)
        ks = torch.full_like(users, a.k, dtype=torch.int32)
        tables = []
        for name in dict.fromkeys([*a.profile, self.best]):
            if name not in self.variants:
                continue
            with torch.inference_mode():
                call = self.variants[name].prepare(a.served_batch)
                table, top = inproc.profile_table(functools.partial(call, users, ks), self.device)
            self.report.data.setdefault("profile", {})[f"{name} b{a.served_batch}"] = top
            tables.append(f"==== {name}, batch {a.served_batch}, top-{a.k} ====\n{table}\n")
            (self.report.out / "gpu_kernels.txt").write_text("\n".join(tables))
            self.report.write()

    def aoti(self) -> None:
        model = self.models[self.best]
        started = time.monotonic()
        path = export_fused_aoti(model, model.max_k, self.work / "aoti" / "model.pt2", self.users[:8],
                                 device=str(self.device))
        self.aoti_path = path
        self._check_package(path, "aoti", "aoti_package", f"{self.best} as an AOTInductor package",
                            module_runner(model, self.device), time.monotonic() - started, self.best)

    def aoti_triton(self) -> None:
        """The three-kernel form (export/fused_triton.py) as an AOTInductor package: its Triton
        kernels compiled into the package, so the native backend serves them with no Python."""
        module = TritonRetrieval(TritonFusedRank(self.models["triton_base"]), self.args.k)
        path = self.work / "aoti_triton" / "model.pt2"
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with torch.no_grad():
            program = export_triton_program(module, torch.as_tensor(self.users[:8], device=self.device))
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
        self.triton_aoti_path = path
        self._check_package(path, "aoti_triton", "triton_aoti_package", "triton_fused as an AOTInductor package",
                            module_runner(module, self.device), time.monotonic() - started, "triton_fused")

    def _check_package(self, path: Path, part: str, variant_name: str, what: str, eager, compile_s: float,
                       model_name: str) -> None:
        """A compiled package's answers against eager and the FP32 graph, its time with host copies
        (batch 1 and the served batch), then timed like the other variants (CUDA events)."""
        info = self.report.data.setdefault(part, {})
        info |= {"model": model_name, "compile_s": round(compile_s, 1),
                 "package_mb": round(path.stat().st_size / 1e6, 1)}
        run = aoti_runner(path, str(self.device))
        users = self.users[:self.args.served_batch].reshape(-1, 1)
        ks = np.full_like(users, self.args.k, dtype=np.int32)
        got = run(users, ks)
        info["parity_vs_eager"] = inproc.parity(*got, *eager(users, ks))
        fp32 = module_runner(self.models["graph_fp32"], self.device)
        info["parity_vs_graph_fp32"] = inproc.parity(*got, *fp32(users, ks))
        for batch in (1, self.args.served_batch):
            timing = inproc.time_call(_fixed(run, users[:batch], ks[:batch]), torch.device("cpu"),
                                      iters=self.args.iters)
            info[f"end_to_end_b{batch}_us"] = round(timing["us"], 1)
        self.report.write()
        package = load_aoti(path, str(self.device))
        variant = inproc.Variant(variant_name, what, lambda batch: (lambda users_t, k_t: package(users_t, k_t)))
        self.report.data.setdefault("variants", {})[variant_name] = variant.what
        rows = self.report.data.setdefault("inprocess", [])

        def keep(row: dict) -> None:
            rows.append(row)
            self.report.write()
        with torch.inference_mode():
            inproc.time_variants({variant_name: variant}, self.users, sorted({1, self.args.served_batch,
                                 max(self.args.batches)}), self.args.k, self.device, self.args.iters, keep)

    def served(self) -> None:
        served = self.report.data.setdefault("served", {"rows": []})
        native = self._wait_native(served)
        models = self._served_models(native)
        try:
            self._serve(models, "repo")
        except ServerStartError as error:
            if not native:
                raise
            # a native backend that does not load (a library it cannot find, say) stops the
            # whole server (--exit-on-error): measure the python-based backend alone then
            served["native_failure"] = str(error)[-3000:]
            self.report.note("the server with the native backend did not start (served.native_failure); "
                             "serving the python-based models alone")
            self._serve([m for m in models if m.backend == "python"], "repo-python")

    def _served_models(self, native: bool) -> list[ServedModel]:
        files = self._served_files()
        fast = module_runner(self.models[self.best], self.device)
        graph = module_runner(self.models["graph_fp16"], self.device)
        max_k = self.models[self.best].max_k
        models = []
        if native:
            models += [ServedModel("gpu_fast", files["fast"], self.kind, ensemble="recommend_gpu_fast",
                                   reference=fast, max_k=max_k),
                       ServedModel("gpu_graph_fp16", files["graph_fp16"], self.kind, reference=graph),
                       ServedModel("cpu_fp32", files["cpu_fp32"], "KIND_CPU", threads=self.args.cpu_threads,
                                   reference=module_runner(self.models["cpu_fp32"], "cpu"))]
            if self.triton_aoti_path is not None:
                models.append(ServedModel("gpu_triton_aoti", self.triton_aoti_path, self.kind, max_k=self.args.k,
                                          reference=aoti_runner(self.triton_aoti_path, str(self.device))))
            if self.aoti_path is not None:
                models.append(ServedModel("gpu_aoti", self.aoti_path, self.kind, max_k=max_k,
                                          reference=aoti_runner(self.aoti_path, str(self.device))))
        return models + [ServedModel("gpu_fast_py", files["fast"], self.kind, backend="python", reference=fast,
                                     max_k=max_k),
                         ServedModel("gpu_graph_fp16_py", files["graph_fp16"], self.kind, backend="python",
                                     ensemble="recommend_gpu_graph_fp16_py", reference=graph)]

    def _serve(self, models: list[ServedModel], folder: str) -> None:
        a, served = self.args, self.report.data["served"]
        repo = write_served_repository(self.work / folder, models, a.items, a.max_queue_delay_us)
        data_path = write_input_data(self.work / "input.json", self.users[:2048].tolist(), a.k)
        log = self.work / f"tritonserver-{folder}.log"
        # capped, so a start that hangs leaves time for the python-based retry
        config = ServerConfig(model_repository=repo, startup_timeout_s=min(120.0, max(30.0, self.report.left_s() - 10)),
                              native_backends=any(m.backend == "native" for m in models), log_path=log)
        started = time.monotonic()
        try:
            with TritonServer(config) as server:
                served["start_s"] = round(time.monotonic() - started, 1)
                served["checks"] = check_served(server.grpc_url, models, self.users[:a.served_batch], a.k)
                self.report.write()
                names = {m.name for m in models} | {m.ensemble for m in models if m.ensemble}
                for model, batch in self._plan():
                    if model not in names:
                        continue
                    if self.report.left_s() < 15:
                        self.report.note(f"served: out of time before {model} at batch {batch}")
                        break
                    try:
                        row = measure(server.grpc_url, model, batch, a.concurrency, data_path, self.work / "perf",
                                      a.measurement_interval_ms)
                    except Exception as error:  # the next run may still work
                        row = {"model": model, "batch": batch, "error": f"{type(error).__name__}: {error}"[:400]}
                    served["rows"].append(row)
                    print(f"    served {row}", flush=True)
                    self.report.write()
        finally:
            self._keep_log(log, "gpu_server_log_tail.txt")
            merge_csvs(self.work / "perf", self.report.out / "gpu_perf.csv")

    def compile(self) -> None:
        a = self.args
        model = self.models[self.best]
        variants = {"compiled": inproc.Variant("compiled", "torch.compile(rank_static, mode=reduce-overhead)",
                                               inproc.compiled(model, a.k, "reduce-overhead"))}
        rows = self.report.data.setdefault("inprocess", [])

        def keep(row: dict) -> None:
            rows.append(row)
            self.report.write()
        with torch.inference_mode():
            inproc.time_variants(variants, self.users, [a.served_batch, max(a.batches)], a.k, self.device,
                                 a.iters, keep)

    # ------------------------------------------------------------------ helpers

    def start_native_build(self) -> None:
        def build():
            try:
                self.native["library"] = native_backend(verbose=True)
            except NativeBuildUnavailable as error:
                self.native["error"] = str(error)
        self.native["thread"] = threading.Thread(target=build, daemon=True)
        self.native["thread"].start()

    def _wait_native(self, served: dict) -> bool:
        self.native["thread"].join(timeout=max(1.0, self.report.left_s() - 60))
        if "library" in self.native:
            served["native_backend"] = str(self.native["library"])
            return True
        why = self.native.get("error", "its build did not finish in time")
        served["native_backend"] = f"unavailable: {why}"[:2000]
        (self.report.out / "gpu_native_build.log").write_text(why)
        self.report.note("native backend unavailable; only the python-based backend is served")
        return False

    def _served_files(self) -> dict[str, Path]:
        files = {}
        for key, name in (("fast", self.best), ("graph_fp16", "graph_fp16"), ("cpu_fp32", "cpu_fp32")):
            model = self.models[name]
            files[key] = export_fused_torchscript(model, self.work / "files" / key / "model.pt")
        return files

    def _plan(self) -> list[tuple[str, int]]:
        """perf_analyzer runs, most telling first (a run out of time drops the tail)."""
        b = self.args.served_batch
        return [("gpu_triton_aoti", b), ("gpu_fast", b), ("cpu_fp32", b), ("gpu_triton_aoti", 1),
                ("gpu_triton_aoti", max(self.args.batches)), ("recommend_gpu_graph_fp16_py", b), ("gpu_graph_fp16", b),
                ("gpu_aoti", b), ("gpu_fast", 1), ("gpu_fast_py", b), ("gpu_fast_py", 1),
                ("recommend_gpu_fast", b), ("gpu_fast", max(self.args.batches))]

    def _keep_log(self, path: Path, name: str, lines: int = 300) -> None:
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            (self.report.out / name).write_text("\n".join(tail) + "\n")


def _fixed(run, users: np.ndarray, ks: np.ndarray):
    """A timed call on fixed numpy inputs (the host copies are part of what is timed)."""
    return lambda i: run(users, ks)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__ or "")
    if not args.no_gpu and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device visible to torch; --no-gpu runs every part on the CPU", file=sys.stderr)
        return 2
    report = BenchReport(args.out, args.deadline_s, render)
    gpu = "CPU only (smoke run)" if args.no_gpu else torch.cuda.get_device_name(0)
    report.data |= {"machine": f"{gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
                    "settings": {key: value for key, value in vars(args).items() if key not in ("out", "skip")}}
    torch.set_num_threads(args.cpu_threads)
    bench = Bench(args, report)
    bench.start_native_build()      # compiles on one core while the GPU parts run
    budgets = [("setup", 60, bench.setup), ("availability", 20, bench.availability),
               ("bandwidth", 15, bench.bandwidth), ("inprocess", 70, bench.inprocess),
               ("profile", 25, bench.profile), ("aoti_triton", 90, bench.aoti_triton),
               ("aoti", args.aoti_budget_s, bench.aoti), ("served", 130, bench.served), ("compile", 45, bench.compile)]
    skip_part(report, "sasrec", "not in this run: SASRec's long ML-1M schedule takes minutes of GPU time and the "
              "ML-1M wheel would have to be carried (docs/gpu_h200.md has the earlier card)")
    for name, budget, body in budgets:
        if name in args.skip:
            skip_part(report, name, "--skip")
        elif name == "aoti_triton" and args.no_gpu:
            skip_part(report, name, "its Triton kernels compile for a CUDA device only")
        elif name != "setup" and report.data["parts"].get("setup", {}).get("status") != "ok":
            skip_part(report, name, "setup failed")
        else:
            run_part(report, name, budget, body)
    report.data["ratios"] = ratios(report.data, args.served_batch, bench.best)
    report.write()
    print(render(report.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
