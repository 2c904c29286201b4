"""tritonclient clients for a gateway: TLS with its certificate, the bearer token on every call.

    client = GatewayClient("127.0.0.1:8443", cert=Path("cert.pem"), token=token, protocol="grpc")
    ids = client.infer("recommend", {"USER_ID": users, "K": ks}, ["ITEM_IDS"])["ITEM_IDS"]

and the perf_analyzer flags that do the same (``perf_analyzer_args``).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recdeploy.clients.triton_client import infer_arrays


def perf_analyzer_args(cert: Path, token: str, protocol: str = "grpc") -> tuple[str, ...]:
    """perf_analyzer options for a gateway (gRPC over TLS, or HTTPS), token as a header."""
    tls: tuple[str, ...]
    if protocol == "grpc":
        tls = ("--ssl-grpc-use-ssl", f"--ssl-grpc-root-certifications-file={cert}")
    else:
        tls = ("--ssl-https-verify-peer=1", "--ssl-https-verify-host=2", f"--ssl-https-ca-certificates-file={cert}")
    return (*tls, "-H", f"authorization:Bearer {token}")


class GatewayClient:
    def __init__(self, url: str, cert: Path, token: str, protocol: str = "grpc", timeout_s: float = 30.0):
        self.protocol, self.timeout_s = protocol, timeout_s
        self.headers = {"authorization": f"Bearer {token}"}
        if protocol == "grpc":
            import tritonclient.grpc as api
            self._client = api.InferenceServerClient(url, ssl=True, root_certificates=str(cert))
        elif protocol == "http":
            import gevent.ssl
            import tritonclient.http as api
            factory = functools.partial(gevent.ssl.create_default_context, cafile=str(cert))
            self._client = api.InferenceServerClient(url, ssl=True, ssl_context_factory=factory,
                                                     network_timeout=timeout_s)
        else:
            raise ValueError(f"protocol {protocol!r}; valid: grpc, http")
        self._api = api

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def is_ready(self, model: str) -> bool:
        return bool(self._client.is_server_ready(headers=self.headers)
                    and self._client.is_model_ready(model, headers=self.headers))

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        return infer_arrays(self._api, self._client, model, inputs, outputs, self.protocol, self.timeout_s,
                            headers=self.headers)

    @property
    def raw(self):
        """The tritonclient client, for calls this class does not wrap (pass ``headers``)."""
        return self._client
