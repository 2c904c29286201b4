"""Checks an HTTP/JSON inference request against the model's config before Triton sees it.

    limits = limits_from_config(config_json)              # GET /v2/models/<m>/config
    check_infer_request(limits, body, header_length)      # InferRequestError (-> HTTP 400)

Why: tritonserver 2.51 trusts the shape a JSON request declares. ~100 bytes declaring
``"shape": [2147483648, 1]`` with one data element make it allocate ~15 GB and spend ~30 s
before answering 500; malformed JSON, a missing ``inputs`` or a negative shape are 500s, not
400s (docs/gateway.md). Here the declared shape must agree with the model (names, datatypes,
dims, max_batch_size) and with what the body really carries: the element count of the JSON
``data``, or the byte count of the binary tensor extension's payload. A request that passes
cannot make Triton allocate more than a small multiple of its own size, and the body size is
capped by nginx (client_max_body_size).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# bytes per element of Triton's fixed-size datatypes; BYTES is length-prefixed (>= 4 each)
ITEM_SIZE = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2,
             "INT32": 4, "INT64": 8, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8}
BYTES_MIN_SIZE = 4


class InferRequestError(ValueError):
    """The request is the client's mistake; the message says what is wrong (HTTP 400)."""


@dataclass(frozen=True)
class TensorLimit:
    datatype: str                 # "INT64", ...
    dims: tuple[int, ...]         # without the batch dimension; -1: any size
    optional: bool = False


@dataclass(frozen=True)
class ModelLimits:
    name: str
    max_batch_size: int           # 0: the model does not batch; shapes are the dims as-is
    inputs: dict[str, TensorLimit]
    outputs: frozenset[str]


def limits_from_config(config: dict[str, Any]) -> ModelLimits:
    """ModelLimits from Triton's JSON model config (GET /v2/models/<model>/config)."""
    def tensor(item: dict[str, Any]) -> TensorLimit:
        datatype = str(item.get("data_type", "")).removeprefix("TYPE_")
        datatype = "BYTES" if datatype == "STRING" else datatype
        return TensorLimit(datatype, tuple(int(d) for d in item.get("dims", [])), bool(item.get("optional", False)))
    return ModelLimits(str(config["name"]), int(config.get("max_batch_size", 0)),
                       {str(item["name"]): tensor(item) for item in config.get("input", [])},
                       frozenset(str(item["name"]) for item in config.get("output", [])))


def _count(data: Any) -> int:
    """Elements in a (possibly nested) JSON data list; scalars count one."""
    if isinstance(data, list):
        return sum(_count(item) for item in data)
    return 1


def _check_shape(limits: ModelLimits, name: str, shape: Any, want: TensorLimit) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InferRequestError(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise InferRequestError(f"input {name!r}: shape {shape} has a negative dimension")
    dims = want.dims
    if limits.max_batch_size > 0:
        if len(shape) != len(dims) + 1:
            raise InferRequestError(f"input {name!r}: shape {shape} must be [batch, {', '.join(map(str, dims))}]")
        if not 1 <= shape[0] <= limits.max_batch_size:
            raise InferRequestError(f"input {name!r}: batch size {shape[0]} is outside 1..{limits.max_batch_size} "
                                    f"(max_batch_size of {limits.name!r})")
        rest = shape[1:]
    else:
        rest = shape
    if len(rest) != len(dims) or any(w not in (-1, d) for w, d in zip(dims, rest)):
        raise InferRequestError(f"input {name!r}: shape {shape} does not match the model's dims {list(dims)}"
                                + (" after the batch dimension" if limits.max_batch_size > 0 else ""))
    return tuple(shape)


def check_infer_request(limits: ModelLimits, body: bytes, header_length: int | None = None) -> dict[str, Any]:
    """The parsed JSON header of a valid request; InferRequestError for anything else.

    ``header_length``: the Inference-Header-Content-Length header (binary tensor extension),
    None for a pure JSON body.
    """
    if header_length is not None and not 0 < header_length <= len(body):
        raise InferRequestError(f"Inference-Header-Content-Length {header_length} is outside the "
                                f"body's {len(body)} bytes")
    head, binary = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
    try:
        request = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InferRequestError(f"the request is not valid JSON: {error}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InferRequestError("the request must be a JSON object with a non-empty 'inputs' list")
    seen: set[str] = set()
    binary_total = 0
    for item in request["inputs"]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InferRequestError("every input must be an object with a 'name'")
        name = item["name"]
        want = limits.inputs.get(name)
        if want is None:
            raise InferRequestError(f"{limits.name!r} has no input {name!r}; inputs: {sorted(limits.inputs)}")
        if name in seen:
            raise InferRequestError(f"input {name!r} is given twice")
        seen.add(name)
        if item.get("datatype") != want.datatype:
            raise InferRequestError(f"input {name!r}: datatype {item.get('datatype')!r}, "
                                    f"the model takes {want.datatype}")
        shape = _check_shape(limits, name, item.get("shape"), want)
        elements = math.prod(shape)
        parameters = item.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InferRequestError(f"input {name!r}: 'parameters' must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if "data" in item or not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InferRequestError(f"input {name!r}: binary_data_size must be a byte count, with no 'data'")
            expected = elements * ITEM_SIZE[want.datatype] if want.datatype in ITEM_SIZE else None
            if expected is not None and size != expected:
                raise InferRequestError(f"input {name!r}: shape {list(shape)} of {want.datatype} is {expected} bytes, "
                                        f"binary_data_size says {size}")
            if expected is None and elements * BYTES_MIN_SIZE > size:
                raise InferRequestError(f"input {name!r}: {elements} BYTES elements cannot fit in {size} bytes")
            binary_total += size
        elif "data" in item:
            count = _count(item["data"])
            if count != elements:
                raise InferRequestError(f"input {name!r}: shape {list(shape)} declares {elements} elements, "
                                        f"'data' holds {count}")
        else:
            raise InferRequestError(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    missing = sorted(n for n, t in limits.inputs.items() if not t.optional and n not in seen)
    if missing:
        raise InferRequestError(f"{limits.name!r} needs inputs {missing}")
    if binary_total != len(binary):
        raise InferRequestError(f"binary_data_size values add up to {binary_total} bytes, the body carries "
                                f"{len(binary)} after the JSON header")
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InferRequestError("'outputs' must be a list of objects")
    unknown = sorted(str(o.get("name")) for o in outputs if o.get("name") not in limits.outputs)
    if unknown:
        raise InferRequestError(f"{limits.name!r} has no outputs {unknown}; outputs: {sorted(limits.outputs)}")
    return request
