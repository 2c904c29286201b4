"""The Kubernetes gateway's nginx.conf and start-up line, run by the real nginx (Debian's 1.22)
in front of a stand-in upstream: TLS, the bearer token, the refused APIs."""
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from recdeploy.serve.k8s_gateway import START, TOKEN_MAP, gateway_deployment, nginx_conf
from recdeploy.serve.k8s_manifests import MIB, K8sSpec

SPEC = K8sSpec(model_source="pvc:models", memory_bytes=800 * MIB)
TOKEN = "s3cr3t-Token_1.2~x"
pytestmark = pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("openssl")),
                                reason="needs nginx and openssl (apt-get install nginx)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    """Stands in for Triton: answers 200 and says whether a token reached it."""
    def do_GET(self):
        body = f"upstream saw authorization={self.headers.get('Authorization')!r}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_gateway(tmp_path, token: str):
    """The pod's start-up line and nginx.conf with the pod's paths and ports moved into tmp_path."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    for sub in ("tls", "auth", "logs"):
        (tmp_path / sub).mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=gw",
                    "-keyout", tmp_path / "tls" / "tls.key", "-out", tmp_path / "tls" / "tls.crt"],
                   check=True, capture_output=True)
    conf = (nginx_conf(SPEC).replace("/etc/nginx/", f"{tmp_path}/").replace("/tmp/nginx.pid", f"{tmp_path}/nginx.pid")
            .replace(f"{SPEC.triton}.{SPEC.namespace}.svc.cluster.local:8000", f"127.0.0.1:{upstream.server_port}")
            .replace(f"{SPEC.triton}.{SPEC.namespace}.svc.cluster.local:8001", f"127.0.0.1:{upstream.server_port}")
            .replace("listen 8443", f"listen 127.0.0.1:{port}"))
    (tmp_path / "nginx.conf").write_text(conf)
    start = (START.replace(TOKEN_MAP, f"{tmp_path}/auth/token.conf")
             .replace('exec nginx -g', f'exec nginx -p {tmp_path} -c {tmp_path}/nginx.conf -e {tmp_path}/error.log -g'))
    env = {"GATEWAY_TOKEN": token, "PATH": "/usr/sbin:/usr/bin:/bin"}
    process = subprocess.Popen(["/bin/sh", "-c", start], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    return process, upstream, port


def get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_gateway_wants_the_token_hides_the_control_apis_and_strips_the_header(tmp_path):
    process, upstream, port = start_gateway(tmp_path, TOKEN)
    try:
        for _ in range(100):                              # nginx up within 10 s
            try:
                if get(port, "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"gateway did not start: {process.poll()} {(tmp_path / 'error.log').read_text()}")
        assert get(port, "/v2/health/ready") == (401, "")
        assert get(port, "/v2/health/ready", token="wrong") == (401, "")
        assert get(port, "/v2/health/ready", token=TOKEN) == (200, "upstream saw authorization=None")
        assert get(port, "/v2/repository/index", token=TOKEN)[0] == 403
        assert get(port, "/v2/systemsharedmemory/status", token=TOKEN)[0] == 403
    finally:
        process.terminate()
        process.wait(timeout=10)
        upstream.shutdown()


def test_gateway_refuses_a_token_it_cannot_write_safely(tmp_path):
    process, upstream, _ = start_gateway(tmp_path, 'abc" 1; default 1; "x')
    try:
        assert process.wait(timeout=10) == 1
        assert "characters outside" in process.stderr.read()
        assert not (tmp_path / "auth" / "token.conf").exists()
    finally:
        upstream.shutdown()


def test_the_token_comes_from_the_secret_not_the_config_map():
    container = gateway_deployment(SPEC)["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "GATEWAY_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "recdeploy-gateway-token", "key": "token"}}}]
    assert TOKEN not in nginx_conf(SPEC) and "Bearer" not in nginx_conf(SPEC)
