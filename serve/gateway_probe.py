"""Requests that tritonserver 2.51 mishandles over HTTP/JSON, and a way to send them through a gateway.

    body = bomb_request(fetch_model_config(replica_http_url, "recommend"))
    status, seconds, answer = send(gateway.url, cert, token, "/v2/models/recommend/infer", body)

NEVER send ``bomb_request`` straight to a tritonserver: ~100 bytes make it allocate what the
declared shape says (~15 GB for [2147483648, 1]) and spend ~30 s before answering 500.
"""
from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

BOMB_ROWS = 2147483648  # 2**31: past int32, what the 2.51 JSON parser sizes its buffer by


def bomb_request(config: dict) -> bytes:
    """One data element per input, each declaring BOMB_ROWS rows (the model's dims after it)."""
    inputs = []
    for item in config.get("input", []):
        datatype = str(item["data_type"]).removeprefix("TYPE_").replace("STRING", "BYTES")
        dims = [1 if int(d) < 0 else int(d) for d in item.get("dims", [])]
        inputs.append({"name": item["name"], "datatype": datatype, "shape": [BOMB_ROWS, *dims],
                       "data": ["x"] if datatype == "BYTES" else [1]})
    return json.dumps({"inputs": inputs}).encode()


def malformed_requests() -> dict[str, bytes]:
    """Client mistakes Triton 2.51 answers with 500 over HTTP/JSON."""
    return {"truncated JSON": b'{"inputs": [', "not JSON": b"\xff\xfe<html>", "no inputs": b'{"outputs": []}',
            "negative shape": b'{"inputs": [{"name": "X", "datatype": "INT64", "shape": [-1, 1], "data": [1]}]}'}


def send(url: str, cert: Path, token: str | None, path: str, body: bytes | None = None,
         timeout_s: float = 60, headers: dict[str, str] | None = None) -> tuple[int, float, bytes]:
    """(HTTP status, seconds, body) of one HTTPS request through the gateway."""
    context = ssl.create_default_context(cafile=str(cert))
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"https://{url}{path}", data=body, headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout_s) as answer:
            return answer.status, time.monotonic() - started, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, time.monotonic() - started, error.read()
