"""Run nginx (and the validating proxy) as the TLS gateway in front of tritonserver replicas.

    spec = GatewaySpec(prefix=work / "gateway", port=8443, models=("recommend",), token=token,
                       http_upstreams=replicas.http_urls, grpc_upstreams=replicas.grpc_urls)
    with Gateway(spec, model_configs) as gateway:
        gateway.drain({0})          # rewrite nginx.conf with replica 0 `down`, reload gracefully
        gateway.drain(set())        # every replica back in rotation

nginx runs from Debian's package (`apt-get install nginx`; `make setup` says what is missing)
with a private prefix: its conf, pid, logs, temp files and unix sockets live under
``spec.prefix``, it listens on a non-root port, and a reload is a SIGHUP after ``nginx -t``
accepted the new file (old workers finish their requests). The TLS certificate is
self-signed for localhost / 127.0.0.1 unless the spec names one (``self_signed_cert``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from recdeploy.serve.gateway_config import GatewaySpec, build_nginx_conf
from recdeploy.serve.processes import children

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class GatewayError(RuntimeError):
    """nginx or the validating proxy could not start / reload; the message carries why."""


def find_nginx() -> Path:
    """The nginx binary (PATH, then where distributions put it: /usr/sbin is not on a user's PATH)."""
    found = shutil.which("nginx")
    for candidate in ([found] if found else []) + list(NGINX_CANDIDATES):
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise GatewayError("nginx is not installed: `sudo apt-get install -y nginx` (Debian/Ubuntu), "
                       "or run `make setup` as root")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def worker_user() -> str | None:
    """Started as root, nginx workers would drop to 'nobody' and lose the private prefix: keep
    them as the user who started recdeploy (as anyone else, nginx ignores the directive)."""
    return pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None


def self_signed_cert(cert: Path, key: Path, days: int = 30) -> None:
    """A P-256 certificate for localhost and 127.0.0.1 (openssl CLI): for tests and local use;
    give a real one with --cert/--key."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
            "-subj", "/CN=recdeploy-gateway", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise GatewayError(f"openssl could not make a certificate: {done.stderr.strip()}")
    key.chmod(0o600)


class Gateway:
    """nginx + the validating proxy for one GatewaySpec; ``start()`` returns once TLS answers."""

    def __init__(self, spec: GatewaySpec, model_configs: list[dict], nginx: Path | None = None):
        self.spec = spec
        self.model_configs = model_configs
        self.nginx = nginx or find_nginx()
        self._nginx: subprocess.Popen | None = None
        self._proxy: subprocess.Popen | None = None
        self.proxy_restarts = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Gateway:
        prefix = self.spec.prefix
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        prefix.chmod(0o700)  # the conf holds the token
        if not self.spec.cert_path.is_file():
            self_signed_cert(self.spec.cert_path, self.spec.key_path)
        (prefix / "limits.json").write_text(json.dumps(self.model_configs))
        try:
            if self.spec.http_inference == "validated":
                self._start_proxy()
            self._write_conf(self.spec)
            self.spec.internal_socket.unlink(missing_ok=True)  # left by an nginx that was killed
            with open(prefix / "logs" / "nginx.stderr", "ab") as stderr:  # a pipe nobody reads could fill
                self._nginx = subprocess.Popen(
                    [str(self.nginx), "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                     "-e", str(prefix / "logs" / "error.log"), "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
            self._wait_tls()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_proxy(self) -> None:
        self.spec.validator_socket.unlink(missing_ok=True)
        log = open(self.spec.prefix / "logs" / "validator.log", "ab")
        self._proxy = subprocess.Popen(
            [sys.executable, "-m", "recdeploy.serve.gateway_proxy", "--listen", str(self.spec.validator_socket),
             "--upstream", str(self.spec.internal_socket), "--limits", str(self.spec.prefix / "limits.json")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while not self.spec.validator_socket.exists():
            if self._proxy.poll() is not None or time.monotonic() > deadline:
                raise GatewayError(f"the validating proxy did not start:\n{self._tail('validator.log')}")
            time.sleep(0.05)

    def _write_conf(self, spec: GatewaySpec) -> None:
        conf = spec.prefix / "nginx.conf"
        staged = spec.prefix / "nginx.conf.new"
        staged.write_text(build_nginx_conf(spec))
        staged.chmod(0o600)
        check = subprocess.run([str(self.nginx), "-t", "-q", "-p", str(spec.prefix), "-c", str(staged),
                                "-e", str(spec.prefix / "logs" / "error.log")], capture_output=True, text=True)
        if check.returncode != 0:
            raise GatewayError(f"nginx refused the generated configuration:\n{check.stderr.strip()}")
        staged.replace(conf)

    def _wait_tls(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        context = ssl.create_default_context(cafile=str(self.spec.cert_path))
        host = "127.0.0.1" if self.spec.host in ("0.0.0.0", "") else self.spec.host
        while True:
            assert self._nginx is not None
            if self._nginx.poll() is not None:
                raise GatewayError(f"nginx exited with code {self._nginx.returncode}:\n{self._tail('nginx.stderr')}\n"
                                   f"{self._tail('error.log')}")
            try:
                with socket.create_connection((host, self.spec.port), timeout=1) as raw:
                    with context.wrap_socket(raw, server_hostname=host):
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise GatewayError(f"nginx did not answer TLS on {host}:{self.spec.port}:\n"
                                       f"{self._tail('error.log')}") from None
                time.sleep(0.05)

    def reconfigure(self, spec: GatewaySpec, timeout_s: float = 30) -> None:
        """Write ``spec``'s conf, check it, reload; returns when only new workers remain
        (requests in flight on the old ones have finished)."""
        if self._nginx is None or self._nginx.poll() is not None:
            raise GatewayError("nginx is not running")
        fixed = ("prefix", "port", "host", "token", "http_upstreams", "grpc_upstreams", "http_inference")
        if any(getattr(spec, name) != getattr(self.spec, name) for name in fixed):
            raise GatewayError(f"a reload can change drained replicas and limits, not {', '.join(fixed)}")
        self._write_conf(spec)
        before = set(children(self._nginx.pid))
        self._nginx.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while True:
            now = set(children(self._nginx.pid))
            if now and not now & before:
                break
            if time.monotonic() > deadline:
                raise GatewayError(f"nginx workers {sorted(now & before)} still finish old requests "
                                   f"after {timeout_s:.0f} s")
            time.sleep(0.05)
        self.spec = spec

    def drain(self, replicas: set[int] | frozenset[int]) -> None:
        """Take exactly ``replicas`` (indices) out of rotation; every other replica is in."""
        self.reconfigure(dataclasses.replace(self.spec, drained=frozenset(replicas)))

    def check(self) -> str | None:
        """None while healthy; restarts a dead validating proxy; a dead nginx is reported."""
        if self._nginx is None or self._nginx.poll() is not None:
            return f"nginx exited (code {None if self._nginx is None else self._nginx.returncode})"
        if self._proxy is not None and self._proxy.poll() is not None:
            self.proxy_restarts += 1
            self._start_proxy()
        return None

    def stop(self) -> None:
        if self._nginx is not None and self._nginx.poll() is None:
            self._nginx.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                self._nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._nginx.pid, signal.SIGKILL)
                self._nginx.wait(timeout=5)
        if self._proxy is not None and self._proxy.poll() is None:
            self._proxy.terminate()
            try:
                self._proxy.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proxy.kill()
                self._proxy.wait(timeout=5)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.spec.host in ("0.0.0.0", "") else self.spec.host
        return f"{host}:{self.spec.port}"

    @property
    def nginx_pid(self) -> int | None:
        return None if self._nginx is None else self._nginx.pid

    @property
    def proxy_pid(self) -> int | None:
        return None if self._proxy is None else self._proxy.pid

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.spec.prefix / "logs" / name
        text = path.read_text(errors="replace").splitlines() if path.is_file() else ["(no log)"]
        return "\n".join(text[-lines:])
