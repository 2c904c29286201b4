"""A small client for the ``recommend`` ensemble over gRPC or HTTP (tritonclient).

    with RecommendClient("127.0.0.1:8001", protocol="grpc") as client:
        ids, scores = client.recommend([42, 7], k=10)     # [2, 10] raw item ids, scores
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}


class ClientError(ValueError):
    pass


class RecommendClient:
    def __init__(self, url: str | None = None, protocol: str = "grpc", model: str = "recommend",
                 timeout_s: float = 30.0):
        if protocol not in DEFAULT_URLS:
            raise ClientError(f"unknown protocol {protocol!r}; valid: grpc, http")
        self.protocol, self.model, self.timeout_s = protocol, model, timeout_s
        self.url = url or DEFAULT_URLS[protocol]
        if protocol == "grpc":
            import tritonclient.grpc as api
            self._client = api.InferenceServerClient(self.url)
        else:
            import tritonclient.http as api
            self._client = api.InferenceServerClient(self.url, network_timeout=timeout_s)
        self._api = api

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._client.close()

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:
            return False

    def infer(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Raw inference on any model of the server: name -> array in, name -> array out."""
        return infer_arrays(self._api, self._client, self.model, inputs, outputs, self.protocol, self.timeout_s)

    def recommend(self, user_ids: Sequence[int], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1, 1)
        if users.size == 0:
            raise ClientError("no user ids given")
        ks = np.full((len(users), 1), k, dtype=np.int32)
        out = self.infer({"USER_ID": users, "K": ks}, ["ITEM_IDS", "SCORES"])
        return out["ITEM_IDS"], out["SCORES"]


def infer_arrays(api, client, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str], protocol: str,
                 timeout_s: float, headers: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """One request through a tritonclient ``client`` of module ``api`` (grpc or http): name ->
    array in, name -> array out; ``timeout_s`` bounds a gRPC call (HTTP's is the client's)."""
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for name, array in inputs.items():
        tensor = api.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    requested = [api.InferRequestedOutput(name) for name in outputs]
    kwargs = {"client_timeout": timeout_s} if protocol == "grpc" else {}
    result = client.infer(model, tensors, outputs=requested, headers=headers, **kwargs)
    return {name: result.as_numpy(name) for name in outputs}
