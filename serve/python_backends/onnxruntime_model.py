"""A python-based Triton backend named ``onnxruntime``: serves ``platform: "onnxruntime_onnx"``.

Not imported by recdeploy: ``recdeploy.serve.backends.compose_backend_dir`` copies this file
to ``<backend-dir>/onnxruntime/model.py``. The python backend then loads every model whose
config says ``platform: "onnxruntime_onnx"`` (or ``backend: "onnxruntime"``) through this
class, so the tritonserver from the nvidia-pytriton wheel (which has no native onnxruntime
backend) serves the same repository the stock NGC container serves natively.

It reads ``<model dir>/<version>/<default_model_filename or model.onnx>``, runs it with
onnxruntime in the stub process, and honours the native backend's
``intra_op_thread_count`` / ``inter_op_thread_count`` parameters. The requests of a dynamic
batch are concatenated along dim 0, run once and split back. Needs numpy and onnxruntime in
the stub's environment, nothing else. Registered a second time as the ``pytorch`` backend
(and as ``pytorch_python``, which a config names to get this one beside a native ``pytorch``),
it serves ``platform: "pytorch_libtorch"`` TorchScript ``model.pt`` files with torch
(``KIND_GPU`` instances on cuda), the files the stock container's libtorch backend takes, and
torch.export + AOTInductor packages (``default_model_filename: "model.pt2"``).

A request the model itself refuses answers INVALID_ARGUMENT (HTTP 400): ONNX Runtime's own
InvalidArgument (a shape, dtype or index out of range), or a TorchScript ``raise
ValueError(...)``, the way a scripted module marks a client mistake. Everything else is
INTERNAL (500). ONNX Runtime reports a TopK whose k exceeds the axis as FAIL, not as an
invalid argument, so nothing here could tell it from a broken graph: an export that knows an
input's valid range declares it (``parameters { key: "input_range" value { string_value:
"K=1..1682" } }``) and a value outside it is refused as the client's before the model runs.
The stock onnxruntime backend ignores that parameter.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

DEFAULT_MODEL_FILENAME = "model.onnx"
THREAD_PARAMETERS = {"intra_op_thread_count": "intra_op_num_threads",
                     "inter_op_thread_count": "inter_op_num_threads"}


class ClientInputError(ValueError):
    """The model refused the request's own tensors: the client must change them."""


# ---------------------------------------------------------------- numpy-only helpers

def model_path(args, config, default_filename=DEFAULT_MODEL_FILENAME):
    """The model file of this version: ``<model dir>/<version>/<filename>``."""
    # args["model_repository"] is the model's own folder (<repository>/<model name>) for
    # python-based backends too, not the repository root.
    filename = config.get("default_model_filename") or default_filename
    return os.path.join(args["model_repository"], str(args["model_version"]), filename)


def thread_options(config):
    """{onnxruntime SessionOptions attribute: int} from the config's ``parameters``."""
    options = {}
    for name, value in (config.get("parameters") or {}).items():
        if name in THREAD_PARAMETERS:
            text = value.get("string_value", "") if isinstance(value, dict) else str(value)
            if text.strip():
                options[THREAD_PARAMETERS[name]] = int(text)
    return options


def parameter(config, name, default=""):
    """A string ``parameters`` entry of the model config."""
    value = (config.get("parameters") or {}).get(name, {})
    text = value.get("string_value", "") if isinstance(value, dict) else str(value)
    return text.strip() or default


def input_ranges(config):
    """{input: (low, high)} from the ``input_range`` parameter, e.g. "K=1..1682,X=0..9"."""
    ranges = {}
    for part in parameter(config, "input_range").split(","):
        if part.strip():
            name, _, bounds = part.partition("=")
            low, _, high = bounds.partition("..")
            ranges[name.strip()] = (int(low), int(high))
    return ranges


def check_ranges(feed, ranges):
    """ClientInputError naming the first input with a value outside its declared range."""
    for name, (low, high) in ranges.items():
        value = feed.get(name)
        if value is not None and value.size and (value.min() < low or value.max() > high):
            bad = value.min() if value.min() < low else value.max()
            raise ClientInputError(f"{name} must be between {low} and {high}, got {bad}")


def can_concatenate(feeds):
    """True when every request feeds the same inputs with equal dtypes and trailing shapes."""
    if len(feeds) < 2:
        return False
    first = feeds[0]
    for feed in feeds[1:]:
        if feed.keys() != first.keys():
            return False
        for name, array in feed.items():
            ref = first[name]
            if array.ndim == 0 or array.dtype != ref.dtype or array.shape[1:] != ref.shape[1:]:
                return False
    return True


def group_indices(feeds, names):
    """Request indices grouped so that requests in a group agree on the values of ``names``.

    A fused top-K graph takes K as an input: requests with different K must not share a
    run (the batch would get the largest K). Order within a group is kept.
    """
    groups = {}
    for index, feed in feeds.items():
        key = tuple(np.unique(feed[name]).tobytes() if name in feed else b"" for name in names)
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def concatenate(feeds):
    """One feed from many along dim 0, and the batch size each request contributed."""
    names = list(feeds[0])
    sizes = [int(feed[names[0]].shape[0]) for feed in feeds]
    merged = {name: np.concatenate([feed[name] for feed in feeds], axis=0) for name in names}
    return merged, sizes


def split(outputs, sizes):
    """Per-request outputs from batched ones; ValueError when dim 0 does not add up."""
    total = sum(sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(f"output {name} has shape {array.shape}, expected dim 0 == {total}")
    bounds = np.cumsum(sizes)[:-1]
    parts = {name: np.split(array, bounds, axis=0) for name, array in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(sizes))]


# ---------------------------------------------------------------- the Triton adapter

def is_torchscript(config):
    """The same file serves ``platform: pytorch_libtorch`` (backend ``pytorch``, or
    ``pytorch_python``) with torch."""
    return config.get("platform") == "pytorch_libtorch" or config.get("backend") in ("pytorch", "pytorch_python")


class OnnxRuntimeRunner:
    def __init__(self, path, config, args):
        import onnxruntime as ort  # a missing onnxruntime fails this model's load, loudly

        options = ort.SessionOptions()
        for attribute, value in thread_options(config).items():
            setattr(options, attribute, value)
        # ORT's pool threads spin while waiting by default; in a server they spin on the cores
        # tritonserver and the other stubs need. Off unless parameters {allow_spinning: "1"}.
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                          "1" if parameter(config, "allow_spinning") == "1" else "0")
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and \
                "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider",
                                 {"device_id": int(args["model_instance_device_id"])}))
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
        self.invalid_argument = InvalidArgument

    def missing_outputs(self, names):
        """Config outputs the graph lacks. ONNX Runtime calls asking for one InvalidArgument,
        which would read as the client's fault: the model refuses to load instead."""
        have = {output.name for output in self.session.get_outputs()}
        return [name for name in names if name not in have]

    def run(self, names, feed):
        try:
            return self.session.run(names, feed)
        except self.invalid_argument as error:
            raise ClientInputError(str(error)) from error


def scripted_value_error(torch):
    """The message of the TorchScript ``raise ValueError(msg)`` just caught, else None.

    torch keeps the scripted exception's class and original message for the thread that
    caught it, what C++ callers read from ``JITException`` (and the native backend uses).
    """
    class_name = getattr(torch._C, "_get_caught_jit_exception_class_name", None)
    message = getattr(torch._C, "_get_caught_jit_exception_original_msg", None)
    if class_name is None or message is None or class_name() != "builtins.ValueError":
        return None
    return message()


def hide_redis_without_ssl():
    """The 2.51 stub's embedded Python has no ``ssl``; there redis-py fails to import with an
    AttributeError (not ImportError), which torch._inductor's optional ``import redis`` (its
    remote cache) does not catch, so loading an AOTInductor package fails wherever redis-py
    is installed. Without ssl, mark redis absent first (the stub never needs redis-py)."""
    import sys
    try:
        import ssl  # noqa: F401
    except ImportError:
        sys.modules.setdefault("redis", None)


class TorchScriptRunner:
    """TorchScript ``model.pt`` (or an AOTInductor ``model.pt2``) on the instance's device
    (``KIND_GPU`` -> cuda:<device id>)."""

    def __init__(self, path, config, args):
        import torch

        self.torch = torch
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{int(args['model_instance_device_id'])}" if gpu else "cpu")
        threads = thread_options(config).get("intra_op_num_threads")
        if threads and not gpu:
            torch.set_num_threads(threads)
        if path.endswith(".pt2"):  # torch.export + AOTInductor, compiled for this device kind
            hide_redis_without_ssl()
            from torch._inductor import aoti_load_package
            self.module = aoti_load_package(path, device_index=self.device.index if gpu else -1)
        else:
            self.module = torch.jit.load(path, map_location=self.device).eval()
        self.input_names = [i["name"] for i in config.get("input", [])]

    def run(self, names, feed):
        torch = self.torch
        with torch.inference_mode():
            inputs = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device)
                      for name in self.input_names if name in feed]
            try:
                outputs = self.module(*inputs)
            except torch.jit.Error as error:
                client_error = scripted_value_error(torch)
                if client_error is None:
                    raise
                raise ClientInputError(client_error) from error
            outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            return [output.cpu().numpy() for output in outputs][:len(names)]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        torchscript = is_torchscript(config)
        path = model_path(args, config, "model.pt" if torchscript else DEFAULT_MODEL_FILENAME)
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"python-based backend: model file {path} does not exist "
                f"(set default_model_filename or name it {os.path.basename(path)})")
        runner = TorchScriptRunner if torchscript else OnnxRuntimeRunner
        try:
            self.session = runner(path, config, args)
        except Exception as error:  # truncated / corrupted file: say which one
            raise pb_utils.TritonModelException(
                f"python-based backend: cannot load {path} "
                f"({os.path.getsize(path)} bytes; corrupted or truncated?): "
                f"{type(error).__name__}: {error}") from error
        self.input_names = [i["name"] for i in config.get("input", [])]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"]))
                        for o in config.get("output", [])]
        missing = [] if torchscript else self.session.missing_outputs([n for n, _ in self.outputs])
        if missing:
            raise pb_utils.TritonModelException(
                f"python-based backend: {path} has no output {', '.join(missing)} (the config names it)")
        self.batched = int(config.get("max_batch_size", 0)) > 0
        # parameters { key: "batch_group_inputs" value { string_value: "K" } }
        self.group_inputs = [name.strip() for name in parameter(config, "batch_group_inputs").split(",")
                             if name.strip()]
        self.ranges = input_ranges(config)

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds = {}
        for i, request in enumerate(requests):
            try:
                feeds[i] = self._feed(request)
            except Exception as error:  # one bad request must not fail its batch-mates
                responses[i] = _error_response(error)
        for indices in group_indices(feeds, self.group_inputs):
            if self.batched and can_concatenate([feeds[i] for i in indices]):
                try:
                    merged, sizes = concatenate([feeds[i] for i in indices])
                    for i, outputs in zip(indices, split(self._run(merged), sizes)):
                        responses[i] = self._response(outputs)
                    continue
                except Exception:
                    pass  # run them one by one below, so each request gets its own answer
            for i in indices:
                try:
                    responses[i] = self._response(self._run(feeds[i]))
                except Exception as error:
                    responses[i] = _error_response(error)
        return responses

    def _feed(self, request):
        feed = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:  # optional inputs may be absent
                feed[name] = tensor.as_numpy()
        check_ranges(feed, self.ranges)
        return feed

    def _run(self, feed):
        names = [name for name, _ in self.outputs]
        return dict(zip(names, self.session.run(names, feed)))

    def _response(self, outputs):
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(outputs[name], dtype=dtype))
                   for name, dtype in self.outputs]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self):
        self.session = None


def _error_response(error):
    message = f"onnxruntime: {type(error).__name__}: {error}"
    code = pb_utils.TritonError.INVALID_ARG if isinstance(error, ClientInputError) \
        else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
