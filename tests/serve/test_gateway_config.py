"""The gateway's nginx.conf is a pure function of its spec: what it exposes, limits and balances."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from recdeploy.serve.gateway_config import GRPC_METHODS, GatewayConfigError, GatewaySpec, build_nginx_conf

TOKEN = "tok-" + "x" * 252  # the longest a spec takes: nginx must still hash it


def spec(tmp_path: Path, **changes) -> GatewaySpec:
    fields: dict = dict(prefix=tmp_path, port=18443, models=("recommend", "recommend_int8"), token=TOKEN,
                  http_upstreams=("127.0.0.1:9000", "127.0.0.1:9003"),
                  grpc_upstreams=("127.0.0.1:9001", "127.0.0.1:9004"))
    fields.update(changes)
    return GatewaySpec(**fields)


def locations(conf: str) -> list[str]:
    return re.findall(r"location (\S+(?: \S+)?) \{", conf)


def test_only_health_metadata_and_the_ensembles_are_exposed(tmp_path):
    conf = build_nginx_conf(spec(tmp_path))
    assert locations(conf) == (
        ["/", "/", "= /v2", "~ ^/v2/health/(?:live|ready)$",
         "~ ^/v2/models/(?:recommend|recommend_int8)(?:/versions/[0-9]+)?(?:/ready|/config)?$",
         "~ ^/v2/models/(?:recommend|recommend_int8)(?:/versions/[0-9]+)?/infer$"]
        + [f"= /inference.GRPCInferenceService/{m}" for m in GRPC_METHODS])
    for hidden in ("repository", "load", "unload", "sharedmemory", "trace", "logging", "stats", "metrics",
                   "RepositoryIndex", "RepositoryModelLoad", "SharedMemory", "TraceSetting", "LogSettings",
                   "ModelStatistics"):
        assert not any(hidden in location for location in locations(conf)), hidden
    assert "return 404" in conf.split("location / {", 2)[2]  # the catch-all of the public server


def test_regexes_accept_the_public_paths_and_nothing_else(tmp_path):
    conf = build_nginx_conf(spec(tmp_path))
    patterns = [re.compile(loc[2:]) for loc in locations(conf) if loc.startswith("~ ")]

    def exposed(path):
        return any(p.search(path) for p in patterns)
    assert exposed("/v2/models/recommend/infer") and exposed("/v2/models/recommend_int8/versions/2/infer")
    assert exposed("/v2/models/recommend/config") and exposed("/v2/health/ready")
    for path in ("/v2/models/scorer/infer", "/v2/models/recommend/stats", "/v2/repository/index",
                 "/v2/repository/models/recommend/load", "/v2/models/recommend_x/infer",
                 "/v2/models/recommend/infer/x", "/v2/systemsharedmemory/status", "/v2/logging"):
        assert not exposed(path), path


def test_token_tls_limits_and_passive_health_checks(tmp_path):
    conf = build_nginx_conf(spec(tmp_path, max_body="256k", rate_per_s=50, burst=10, fail_timeout_s=7))
    assert f'"Bearer {TOKEN}" 1;' in conf and "if ($recdeploy_authorized = 0)" in conf
    assert "listen 127.0.0.1:18443 ssl http2;" in conf
    assert f"ssl_certificate {tmp_path}/tls/cert.pem;" in conf
    assert "client_max_body_size 256k;" in conf and "rate=50r/s" in conf and "burst=10 nodelay" in conf
    assert conf.count("max_fails=1 fail_timeout=7s;") == 4
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
    assert conf.count("grpc_next_upstream error timeout non_idempotent;") == len(GRPC_METHODS)
    assert conf.count('proxy_set_header Authorization "";') >= 3  # the token never reaches a replica
    assert f"pid {tmp_path}/nginx.pid;" in conf and "user " not in conf.split("\n")[1]


def test_a_drained_replica_is_marked_down_in_both_upstreams(tmp_path):
    conf = build_nginx_conf(spec(tmp_path, drained=frozenset({1})))
    assert "server 127.0.0.1:9003 max_fails=1 fail_timeout=5s down;" in conf
    assert "server 127.0.0.1:9004 max_fails=1 fail_timeout=5s down;" in conf
    assert "server 127.0.0.1:9000 max_fails=1 fail_timeout=5s;" in conf


def test_http_inference_off_refuses_it(tmp_path):
    conf = build_nginx_conf(spec(tmp_path, http_inference="off"))
    assert "HTTP inference is off" in conf and "infer_validator;" not in conf.split("server {", 2)[2]


@pytest.mark.parametrize("changes, message", [
    (dict(port=443), "non-root port"),
    (dict(models=()), "models is empty"),
    (dict(models=("a;b",)), "not plain Triton names"),
    (dict(token="short"), "token must be"),
    (dict(token="x" * 20 + '"; allow'), "token must be"),
    (dict(grpc_upstreams=("127.0.0.1:9001",)), "one HTTP and one gRPC"),
    (dict(http_upstreams=("127.0.0.1:9000; evil", "127.0.0.1:9003")), "is not host:port"),
    (dict(drained=frozenset({0, 1})), "cannot drain every replica"),
    (dict(drained=frozenset({5})), "do not exist"),
    (dict(http_inference="raw"), "http_inference"),
    (dict(max_body="1 GB"), "max_body"),
    (dict(rate_per_s=0), "rate_per_s"),
])
def test_bad_settings_are_refused_with_a_reason(tmp_path, changes, message):
    with pytest.raises(GatewayConfigError, match=message):
        spec(tmp_path, **changes)


@pytest.mark.skipif(not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="nginx not installed")
def test_nginx_accepts_the_generated_file(tmp_path):
    from recdeploy.serve.gateway import find_nginx, self_signed_cert, worker_user
    s = spec(tmp_path, worker_user=worker_user())
    self_signed_cert(s.cert_path, s.key_path)
    for sub in ("logs", "tmp"):
        (tmp_path / sub).mkdir()
    (tmp_path / "nginx.conf").write_text(build_nginx_conf(s))
    done = subprocess.run([str(find_nginx()), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                           "-e", str(tmp_path / "logs" / "error.log")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
