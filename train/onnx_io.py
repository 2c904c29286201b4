"""The one torch -> ONNX export, its self-check, and ONNX Runtime CPU sessions.

    path = export_onnx(scorer, {"USER_INDEX": users}, ["SCORES"], out / "model.onnx")
    report = check_parity(scorer, path, {"USER_INDEX": users}, ["SCORES"])   # OnnxParityError
    session = cpu_session(path, threads=2)

Every ONNX file of the project comes from ``export_onnx``: the served scorers, the fused
retrieval graph, the ranker, SASRec and the compressed variants. It lives with the models
(train) because compression, which comes before export, measures its variants as ONNX.
A difference beyond tolerance raises OnnxParityError carrying the measured difference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_OPSET = 17
# protobuf cannot serialize a message past 2 GiB: larger graphs keep their weights beside
EXTERNAL_DATA_BYTES = 2 << 30


class OnnxParityError(ValueError):
    """ONNX Runtime's output differs from PyTorch's by more than the tolerance."""

    def __init__(self, output: str, max_abs_diff: float, atol: float, rtol: float):
        self.output, self.max_abs_diff = output, max_abs_diff
        super().__init__(f"ONNX output {output!r} differs from PyTorch by {max_abs_diff:.3g} "
                         f"(max |diff|), beyond atol={atol:g} + rtol={rtol:g}*|torch|")


@dataclass(frozen=True)
class ParityReport:
    max_abs_diff: dict[str, float]
    n_rows: int


def batch_axes(names) -> dict[str, dict[int, str]]:
    """Dimension 0 of every named tensor is the dynamic batch."""
    return {name: {0: "batch"} for name in names}


def _state_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def export_onnx(module: torch.nn.Module, inputs: dict[str, np.ndarray], output_names: list[str],
                path: Path, *, dynamic_axes: dict[str, dict[int, str]] | None = None,
                constant_folding: bool = True, opset: int = DEFAULT_OPSET,
                external_data: bool | None = None) -> Path:
    """Export ``module`` called on ``inputs`` (name -> example array, in argument order).

    dynamic_axes: name -> {axis: label}; default: the batch axis (0) of every input and output.
    constant_folding=False keeps constant subgraphs as they are (a row-wise int8 table and
    its Cast would otherwise be folded into an FP32 initializer, undoing the compression).
    external_data: write the weights to ``<file>.data`` beside the graph (a Triton version
    folder then needs both files); None = only when the weights pass protobuf's 2 GiB limit.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    tensors = tuple(torch.from_numpy(np.asarray(v)) for v in inputs.values())
    axes = dynamic_axes if dynamic_axes is not None else batch_axes([*inputs, *output_names])
    # The TorchScript-based exporter writes one self-contained file with exactly the dynamic
    # axes asked for; the dynamo exporter may split weights into <name>.onnx.data on its own.
    torch.onnx.export(module, tensors, str(path), input_names=list(inputs),
                      output_names=list(output_names), dynamic_axes=axes, opset_version=opset,
                      do_constant_folding=constant_folding, dynamo=False)
    if external_data is None:
        external_data = _state_bytes(module) >= EXTERNAL_DATA_BYTES
    if external_data and not path.with_name(path.name + ".data").is_file():
        move_weights_outside(path)
    return path


def move_weights_outside(path: Path) -> Path:
    """Rewrite ``path`` with every initializer in one ``<file>.data`` file beside it."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


def onnx_files(path: Path, name: str = "model.onnx") -> dict[str, Path]:
    """The files to copy to serve ``path`` as ``name`` (a Triton version folder's file): the
    graph, and its external data, which the graph finds by the file name it was saved with."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if not data.is_file():
        return {name: path}
    if path.name != name:
        raise ValueError(f"{path} keeps its weights in {data.name}: export it as {name} to serve it "
                         f"(the graph names its data file)")
    return {name: path, data.name: data}


def cpu_session(path: Path, threads: int = 2, spinning: bool = True):
    """An ONNX Runtime session on the CPU provider with ``threads`` intra-op threads (one
    inter-op thread: the graphs here run sequentially).

    spinning=False stops idle intra-op threads from spin-waiting for work: on a machine whose
    cores are shared (a VM, or a benchmark whose client runs beside it) a spinning thread
    holds a core another thread needs (docs/performance.md has the measurement)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(module: torch.nn.Module, path: Path, inputs: dict[str, np.ndarray],
                 output_names: list[str], atol: float = 1e-4, rtol: float = 1e-4) -> ParityReport:
    """Run both on the same real inputs; raise OnnxParityError past atol + rtol*|reference|."""
    got = cpu_session(path, threads=2).run(output_names, inputs)
    with torch.no_grad():
        expected = module(*(torch.from_numpy(np.asarray(v)) for v in inputs.values()))
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    diffs = {}
    for name, ours, ref in zip(output_names, got, expected):
        ref = ref.numpy()
        if ours.shape != ref.shape:
            raise OnnxParityError(name, float("inf"), atol, rtol)
        diff = np.abs(ours.astype(np.float64) - ref)
        diffs[name] = float(diff.max()) if diff.size else 0.0
        if np.any(diff > atol + rtol * np.abs(ref)):
            raise OnnxParityError(name, diffs[name], atol, rtol)
    return ParityReport(max_abs_diff=diffs, n_rows=len(next(iter(inputs.values()))))
