"""The validating proxy's check: a declared shape must match the model and what the body carries."""
import json

import numpy as np
import pytest

from recdeploy.serve.gateway_validate import InferRequestError, check_infer_request, limits_from_config

# what GET /v2/models/recommend/config answers for the retrieval ensemble (int64 dims as strings)
CONFIG = {"name": "recommend", "platform": "ensemble", "max_batch_size": 64,
          "input": [{"name": "USER_ID", "data_type": "TYPE_INT64", "dims": ["1"]},
                    {"name": "K", "data_type": "TYPE_INT32", "dims": ["1"]}],
          "output": [{"name": "ITEM_IDS", "data_type": "TYPE_INT64", "dims": ["-1"]},
                     {"name": "SCORES", "data_type": "TYPE_FP32", "dims": ["-1"]}]}
LIMITS = limits_from_config(CONFIG)


def body(**changes) -> bytes:
    request = {"inputs": [{"name": "USER_ID", "datatype": "INT64", "shape": [2, 1], "data": [[1], [2]]},
                          {"name": "K", "datatype": "INT32", "shape": [2, 1], "data": [10, 10]}],
               "outputs": [{"name": "ITEM_IDS"}]}
    request.update(changes)
    return json.dumps(request).encode()


def test_limits_read_from_the_json_config():
    assert LIMITS.max_batch_size == 64 and LIMITS.inputs["USER_ID"].dims == (1,)
    assert LIMITS.inputs["K"].datatype == "INT32" and LIMITS.outputs == {"ITEM_IDS", "SCORES"}


def test_a_well_formed_json_request_passes():
    assert check_infer_request(LIMITS, body())["inputs"][0]["name"] == "USER_ID"


def test_the_declared_shape_bomb_is_refused():
    bomb = body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [2147483648, 1], "data": [1]},
                        {"name": "K", "datatype": "INT32", "shape": [1, 1], "data": [10]}])
    assert len(bomb) < 200
    with pytest.raises(InferRequestError, match=r"batch size 2147483648 is outside 1..64"):
        check_infer_request(LIMITS, bomb)
    no_batching = limits_from_config({**CONFIG, "max_batch_size": 0,
                                      "input": [{"name": "USER_ID", "data_type": "TYPE_INT64", "dims": ["-1", "1"]}]})
    loose = json.dumps({"inputs": [{"name": "USER_ID", "datatype": "INT64", "shape": [2147483648, 1],
                                    "data": [1]}]}).encode()
    with pytest.raises(InferRequestError, match=r"declares 2147483648 elements, 'data' holds 1"):
        check_infer_request(no_batching, loose)


def binary_request(users: np.ndarray, declared_size: int | None = None) -> tuple[bytes, int]:
    k = np.full_like(users, 10, dtype=np.int32)
    header = json.dumps({"inputs": [
        {"name": "USER_ID", "datatype": "INT64", "shape": list(users.shape),
         "parameters": {"binary_data_size": declared_size or users.nbytes}},
        {"name": "K", "datatype": "INT32", "shape": list(k.shape), "parameters": {"binary_data_size": k.nbytes}}],
        "outputs": [{"name": "ITEM_IDS", "parameters": {"binary_data": True}}]}).encode()
    return header + users.tobytes() + k.tobytes(), len(header)


def test_the_binary_extension_is_checked_by_byte_count():
    users = np.arange(3, dtype=np.int64).reshape(-1, 1)
    raw, length = binary_request(users)
    check_infer_request(LIMITS, raw, length)
    with pytest.raises(InferRequestError, match="is 24 bytes, binary_data_size says 16"):
        check_infer_request(LIMITS, *binary_request(users, declared_size=16))
    with pytest.raises(InferRequestError, match="the body carries"):
        check_infer_request(LIMITS, raw[:-4], length)
    with pytest.raises(InferRequestError, match="Inference-Header-Content-Length"):
        check_infer_request(LIMITS, raw, len(raw) + 1)


@pytest.mark.parametrize("raw, message", [
    (b'{"inputs": [', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "non-empty 'inputs' list"),
    (b'{"outputs": []}', "non-empty 'inputs' list"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [-1, 1], "data": [1]}]), "negative dimension"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": "2,1", "data": [1]}]), "list of integers"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [True, 1], "data": [1]}]), "list of integers"),
    (body(inputs=[{"name": "USER", "datatype": "INT64", "shape": [1, 1], "data": [1]}]), "has no input 'USER'"),
    (body(inputs=[{"name": "USER_ID", "datatype": "FP32", "shape": [1, 1], "data": [1]}]), "datatype 'FP32'"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]}]),
     r"does not match the model's dims \[1\]"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [1], "data": [1]}]), r"must be \[batch, 1\]"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [0, 1], "data": []}]), "outside 1..64"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [1, 1]}]), "neither 'data' nor"),
    (body(inputs=[{"name": "USER_ID", "datatype": "INT64", "shape": [1, 1], "data": [1]}]), r"needs inputs \['K'\]"),
    (body(outputs=[{"name": "SECRET"}]), "has no outputs"),
])
def test_malformed_requests_are_the_clients_mistake(raw, message):
    with pytest.raises(InferRequestError, match=message):
        check_infer_request(LIMITS, raw)
