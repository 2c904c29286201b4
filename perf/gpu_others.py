"""The other GPU runtimes of the benchmark: each runs where it can, else says why not.

    text = check_ort_cuda(bench, device)     # a measurement, or the reason it was skipped

ONNX Runtime's CUDA provider needs the onnxruntime-gpu wheel, TensorRT its own libraries,
faiss GPU the faiss-gpu wheel and a CUDA 12 cuBLAS: none is part of the lent machine's image,
and the device run carries at most 64 MB (the Triton bundle takes ~41 MB of it). Wheel sizes
as listed on PyPI when this was written (docs/gpu_h200.md).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from recdeploy.export.fused import export_fused_onnx
from recdeploy.export.tensorrt import TensorRTUnavailable, require_tensorrt
from recdeploy.perf import gpu_inprocess as inproc

WHEELS = {"onnxruntime-gpu": "onnxruntime-gpu 1.31.1: 256 MB",
          "faiss": "faiss-gpu-cu12 1.14.1: 48 MB, plus nvidia-cublas-cu12 (581 MB); no CUDA 13 build on PyPI",
          "tensorrt": "tensorrt-cu13 11.4: an sdist that fetches ~1 GB+ of libraries from NVIDIA's index"}


def check_ort_cuda(bench, device: torch.device) -> str:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if device.type != "cuda" or "CUDAExecutionProvider" not in providers:
        return (f"skipped: onnxruntime {ort.__version__} offers {providers}, no CUDAExecutionProvider "
                f"(the CPU wheel; {WHEELS['onnxruntime-gpu']}, over the 64 MB a device run carries)")
    a = bench.args
    model = bench.models["graph_fp32"].to("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_fused_onnx(model, Path(tmp) / "fused.onnx", bench.users[:8])
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        users = bench.users[:a.served_batch].reshape(-1, 1)
        feed = {"USER_ID": users, "K": np.full_like(users, a.k, dtype=np.int32)}
        timing = inproc.time_call(lambda i: session.run(None, feed), torch.device("cpu"), iters=a.iters)
    bench.models["graph_fp32"].to(device)
    return f"fused ONNX graph on the CUDA provider, batch {a.served_batch}: {timing['us']:.0f} µs a call (host in/out)"


def check_tensorrt() -> str:
    try:
        require_tensorrt()
    except TensorRTUnavailable as why:
        return f"skipped: {why} ({WHEELS['tensorrt']})"
    # Never reached on the machines seen so far; export/tensorrt.py builds FP16/INT8 plans of a
    # scorer ONNX (tests/export/test_tensorrt.py) when a machine has TensorRT.
    return "TensorRT is importable here: run tests/export/test_tensorrt.py for the FP16 / INT8 plans"


def check_faiss_gpu(bench) -> str:
    try:
        import faiss
    except ImportError:
        return f"skipped: faiss is not installed ({WHEELS['faiss']})"
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not gpus:
        return f"skipped: faiss {faiss.__version__} sees no GPU (a CPU build)"
    a, f = bench.args, bench.features
    index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), f.item_vectors.shape[1])
    index.add(f.item_vectors)
    queries = f.user_vectors[:a.served_batch]
    timing = inproc.time_call(lambda i: index.search(queries, a.k), torch.device("cpu"), iters=a.iters)
    return (f"GpuIndexFlatIP exact search, batch {a.served_batch}, top-{a.k}: {timing['us']:.0f} µs a call "
            "(no seen mask)")
