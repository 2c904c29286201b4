"""The gateway's nginx configuration, built by one pure function from a GatewaySpec.

    spec = GatewaySpec(prefix=Path("/tmp/gw"), port=8443, models=("recommend",), token="s3cret",
                       http_upstreams=("127.0.0.1:8000",), grpc_upstreams=("127.0.0.1:8001",))
    (spec.prefix / "nginx.conf").write_text(build_nginx_conf(spec))

What reaches the replicas from outside (everything else answers 404 / 403, a missing or
wrong bearer token 401 - gRPC clients see UNAUTHENTICATED):
- HTTP: GET /v2, /v2/health/{live,ready}, /v2/models/<exposed>[/versions/N][/ready|/config]
  and POST .../infer; inference goes through the validating proxy (gateway_proxy.py) unless
  ``http_inference="off"``;
- gRPC (HTTP/2 on the same TLS port): the read-only and inference methods of GRPC_METHODS.
  nginx sees a gRPC method, not the model name inside the protobuf body: over gRPC every
  loaded model (composing models too) can be asked, the model control, repository,
  shared-memory, trace, logging and (unless ``statistics=True``) statistics methods cannot.
Never reachable: the model control API (load / unload), the repository index, shared memory,
trace and log settings and the metrics port (not proxied at all); statistics only when the
spec turns them on (perf_analyzer needs them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HTTP_INFERENCE_MODES = ("validated", "off")
# read-only and inference methods of inference.GRPCInferenceService a client may call
GRPC_METHODS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata",
                "ModelConfig", "ModelInfer")
_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=\-]{16,256}")  # RFC 6750 b64token, long enough to guess badly
_ADDRESS = re.compile(r"(?:[0-9.]+|localhost):\d{1,5}|unix:/[^\s;{}]+")
_SIZE = re.compile(r"\d+[kKmM]?")


class GatewayConfigError(ValueError):
    """A gateway setting nginx could not use, or one that would open more than intended."""


@dataclass(frozen=True)
class GatewaySpec:
    prefix: Path                       # private folder: conf, pid, logs, temp files, sockets
    port: int                          # TLS: HTTP/1.1, HTTP/2 and gRPC on one port
    models: tuple[str, ...]            # the models clients may reach (a repository's ensembles)
    token: str                         # bearer token clients send (Authorization: Bearer <token>)
    http_upstreams: tuple[str, ...]    # replica HTTP addresses, host:port
    grpc_upstreams: tuple[str, ...]    # replica gRPC addresses, same order
    host: str = "127.0.0.1"            # 0.0.0.0 to accept other machines
    cert: Path | None = None           # None: <prefix>/tls/cert.pem and key.pem
    key: Path | None = None
    # replicas (by index) taken out of rotation: a rolling update drains them
    drained: frozenset[int] = frozenset()
    http_inference: str = "validated"  # "off": inference over gRPC only
    # passive health check: one refused / timed-out / reset attempt takes a replica out for
    # fail_timeout_s; the request is retried on the next one (inference is a pure function
    # of its inputs, so a retry after the request was sent - non_idempotent - is safe)
    max_fails: int = 1
    fail_timeout_s: int = 5
    next_upstream_tries: int = 3
    read_timeout_s: int = 60
    max_body: str = "1m"               # client_max_body_size: larger requests get 413
    rate_per_s: int = 2000             # per client address; over rate + burst: 429
    burst: int = 400
    worker_user: str | None = None     # set when started as root: workers run as that user
    # read-only inference statistics (gRPC ModelStatistics: of every model, nginx cannot see
    # which; HTTP .../stats of the exposed ones). perf_analyzer needs them; off by default
    statistics: bool = False
    # models whose metadata / config / readiness (and statistics) clients may read but not
    # infer on: an ensemble's composing models, which perf_analyzer reads over HTTP (over gRPC
    # nginx cannot tell models apart: ModelConfig answers for any)
    metadata_models: tuple[str, ...] = ()
    extra_upstream_keepalive: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", Path(self.prefix))
        if not 1024 <= self.port <= 65535:
            raise GatewayConfigError(f"port={self.port}: use a non-root port 1024-65535")
        if not self.models:
            raise GatewayConfigError("models is empty: name the ensembles clients may reach")
        bad = [m for m in self.models + self.metadata_models if not _NAME.fullmatch(m)]
        if bad:
            raise GatewayConfigError(f"model names {bad} are not plain Triton names (letters, digits, _ -)")
        if not _TOKEN.fullmatch(self.token):
            raise GatewayConfigError("token must be 16-256 characters of A-Z a-z 0-9 . _ ~ + / = - "
                                     "(generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
        if not self.http_upstreams or len(self.http_upstreams) != len(self.grpc_upstreams):
            raise GatewayConfigError("need one HTTP and one gRPC address per replica, in the same order")
        for address in (*self.http_upstreams, *self.grpc_upstreams):
            if not _ADDRESS.fullmatch(address):
                raise GatewayConfigError(f"upstream {address!r} is not host:port")
        if not set(self.drained) <= set(range(len(self.http_upstreams))):
            raise GatewayConfigError(f"drained={sorted(self.drained)} names replicas that do not exist")
        if len(self.drained) >= len(self.http_upstreams):
            raise GatewayConfigError("cannot drain every replica: nothing would serve")
        if self.http_inference not in HTTP_INFERENCE_MODES:
            raise GatewayConfigError(f"http_inference={self.http_inference!r}; "
                                     f"valid: {', '.join(HTTP_INFERENCE_MODES)}")
        if not _SIZE.fullmatch(self.max_body):
            raise GatewayConfigError(f"max_body={self.max_body!r}: a size like 512k or 1m")
        for name in ("max_fails", "fail_timeout_s", "next_upstream_tries", "read_timeout_s",
                     "rate_per_s", "burst"):
            if getattr(self, name) < 1:
                raise GatewayConfigError(f"{name} must be >= 1")

    @property
    def cert_path(self) -> Path:
        return Path(self.cert or self.prefix / "tls" / "cert.pem")

    @property
    def key_path(self) -> Path:
        return Path(self.key or self.prefix / "tls" / "key.pem")

    @property
    def validator_socket(self) -> Path:
        return self.prefix / "validator.sock"

    @property
    def internal_socket(self) -> Path:
        return self.prefix / "internal.sock"


def _upstream(name: str, addresses: tuple[str, ...], spec: GatewaySpec) -> str:
    lines = [f"    upstream {name} {{"]
    for i, address in enumerate(addresses):
        down = " down" if i in spec.drained else ""
        lines.append(f"        server {address} max_fails={spec.max_fails} fail_timeout={spec.fail_timeout_s}s{down};")
    lines += [f"        keepalive {spec.extra_upstream_keepalive};", "    }"]
    return "\n".join(lines)


def _proxy(target: str, spec: GatewaySpec, indent: str = "            ") -> str:
    return "\n".join(indent + line for line in (
        f"proxy_pass http://{target};",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Authorization \"\";",   # the token stops here
        "proxy_next_upstream error timeout http_502 http_503 non_idempotent;",
        f"proxy_next_upstream_tries {spec.next_upstream_tries};",
        "proxy_connect_timeout 2s;",
        f"proxy_read_timeout {spec.read_timeout_s}s;",
    ))


def _location(match: str, methods: str, body: str) -> str:
    return (f"        location {match} {{\n            limit_except {methods} {{ deny all; }}\n"
            f"{body}\n        }}")


def build_nginx_conf(spec: GatewaySpec) -> str:
    """The whole nginx.conf for ``spec``: pure, so tests read it and a reload rewrites it."""
    prefix = spec.prefix
    model = f"/v2/models/(?:{'|'.join(spec.models)})(?:/versions/[0-9]+)?"
    readable = spec.models + tuple(m for m in spec.metadata_models if m not in spec.models)
    metadata = f"/v2/models/(?:{'|'.join(readable)})(?:/versions/[0-9]+)?"
    methods = GRPC_METHODS + (("ModelStatistics",) if spec.statistics else ())
    grpc = "\n".join(
        f"        location = /inference.GRPCInferenceService/{method} {{\n"
        f"            grpc_pass grpc://triton_grpc;\n"
        f"            grpc_set_header Authorization \"\";\n"
        f"            grpc_next_upstream error timeout non_idempotent;\n"
        f"            grpc_next_upstream_tries {spec.next_upstream_tries};\n"
        f"            grpc_connect_timeout 2s;\n"
        f"            grpc_read_timeout {spec.read_timeout_s}s;\n"
        f"        }}" for method in methods)
    if spec.http_inference == "validated":
        infer = _location(f"~ ^{model}/infer$", "POST", _proxy("infer_validator", spec))
    else:
        infer = (f"        location ~ ^{model}/infer$ {{\n            return 403 '{{\"error\":\"HTTP inference "
                 f"is off on this gateway; use gRPC\"}}\\n';\n        }}")
    user = f"user {spec.worker_user};\n" if spec.worker_user else ""
    return f"""# written by recdeploy (serve/gateway_config.py): `recdeploy gateway` rewrites it on every change
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{
    worker_connections 2048;
}}
http {{
    log_format gateway '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                       '$request_time upstream=$upstream_addr/$upstream_status';
    access_log {prefix}/logs/access.log gateway buffer=64k flush=1s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server_tokens off;
    default_type application/json;
    client_max_body_size {spec.max_body};
    client_body_buffer_size {spec.max_body};
    limit_req_zone $binary_remote_addr zone=per_client:10m rate={spec.rate_per_s}r/s;
    limit_req_status 429;
    map_hash_bucket_size 512;  # room for a 256-character token
    map $http_authorization $recdeploy_authorized {{
        default 0;
        "Bearer {spec.token}" 1;
    }}
{_upstream("triton_http", spec.http_upstreams, spec)}
{_upstream("triton_grpc", spec.grpc_upstreams, spec)}
    upstream infer_validator {{
        server unix:{spec.validator_socket} max_fails=0;
        keepalive 16;
    }}
    # the validating proxy forwards checked requests here; a socket in the private prefix
    server {{
        listen unix:{spec.internal_socket};
        access_log off;
        location / {{
{_proxy("triton_http", spec)}
        }}
    }}
    server {{
        listen {spec.host}:{spec.port} ssl http2;
        ssl_certificate {spec.cert_path};
        ssl_certificate_key {spec.key_path};
        ssl_protocols TLSv1.2 TLSv1.3;
        http2_max_concurrent_streams 256;
        if ($recdeploy_authorized = 0) {{
            return 401 '{{"error":"missing or wrong bearer token (Authorization: Bearer <token>)"}}\\n';
        }}
        limit_req zone=per_client burst={spec.burst} nodelay;
        location / {{
            return 404 '{{"error":"not exposed by the gateway"}}\\n';
        }}
{_location("= /v2", "GET", _proxy("triton_http", spec))}
{_location("~ ^/v2/health/(?:live|ready)$", "GET", _proxy("triton_http", spec))}
{_location("= /v2/models/stats", "GET", _proxy("triton_http", spec)) if spec.statistics else ""}
{_location(f"~ ^{metadata}(?:/ready|/config{'|/stats' if spec.statistics else ''})?$", "GET",
           _proxy("triton_http", spec))}
{infer}
{grpc}
    }}
}}
"""
