"""N tritonserver replicas of one repository on distinct fixed ports, restarted when they die.

    with ReplicaSet(Path("model_repository"), 2, work / "replicas") as replicas:
        replicas.http_urls        # ("127.0.0.1:41001", "127.0.0.1:41004")
        replicas.kill(0)          # SIGKILL (a test of the supervisor): restarted on the same ports

Each replica serves its own copy of the repository (``<workdir>/replica-<i>/repository``)
in explicit model-control mode, so a rolling update publishes a version into one replica
at a time (gateway_rollout.py) while the others keep serving the old one; the control API
stays on loopback and the gateway never proxies it. Ports are chosen once: a replica
restarted by the supervisor comes back where nginx already sends traffic, and nginx's
passive health check (max_fails / fail_timeout) routes around it meanwhile. Triton opens
its ports only after every model loaded, so a restarting replica takes no request early.
"""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from recdeploy.serve.server import STUB_GRACE_S, ServerConfig, ServerStartError, TritonServer, pick_free_ports


@dataclass
class ReplicaEvent:
    at: float            # time.monotonic()
    replica: int
    what: str            # "died: <reason>", "restarted", "restart failed: <why>"


class ReplicaSet:
    def __init__(self, repository: Path, count: int, workdir: Path, host: str = "127.0.0.1",
                 model_control_mode: str = "explicit", verify_manifest: bool = True,
                 native_backends: bool = True, poll_s: float = 0.25, max_restarts: int = 5):
        if count < 1:
            raise ValueError(f"replicas={count}: need at least one")
        self.repository, self.count, self.workdir = Path(repository), count, Path(workdir)
        self.host, self.poll_s, self.max_restarts = host, poll_s, max_restarts
        self._mode, self._verify, self._native = model_control_mode, verify_manifest, native_backends
        self.configs: list[ServerConfig] = []
        self.servers: list[TritonServer | None] = []
        self.events: list[ReplicaEvent] = []
        self.restarts = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._watcher: threading.Thread | None = None

    def repository_of(self, index: int) -> Path:
        return self.workdir / f"replica-{index}" / "repository"

    def start(self, progress=print) -> ReplicaSet:
        ports = pick_free_ports(self.host, 3 * self.count)
        try:
            for i in range(self.count):
                copy = self.repository_of(i)
                shutil.rmtree(copy.parent, ignore_errors=True)
                shutil.copytree(self.repository, copy, ignore=shutil.ignore_patterns("__pycache__"))
                http, grpc, metrics = ports[3 * i: 3 * i + 3]
                config = ServerConfig(model_repository=copy, host=self.host, http_port=http, grpc_port=grpc,
                                      metrics_port=metrics, model_control_mode=self._mode,
                                      verify_manifest=self._verify, native_backends=self._native,
                                      log_path=copy.parent / "tritonserver.log")
                self.configs.append(config)
                progress(f"starting replica {i} (HTTP {http}, gRPC {grpc}) ...")
                self.servers.append(TritonServer(config).start())
        except BaseException:
            self.stop()
            raise
        self._watcher = threading.Thread(target=self._watch, name="replica-supervisor", daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self._halt.wait(self.poll_s):
            for i in range(self.count):
                with self._lock:
                    server = self.servers[i]
                    # a stub Triton stops while it loads a new version (a rolling update) looks
                    # dead for an instant: it counts after STUB_GRACE_S; an exited server at once
                    failure = None if server is None else server.failure(stub_grace_s=STUB_GRACE_S)
                if failure is not None and not self._halt.is_set():
                    self._restart(i, failure)

    def _restart(self, index: int, failure: str) -> None:
        self.events.append(ReplicaEvent(time.monotonic(), index, f"died: {failure}"))
        with self._lock:
            old = self.servers[index]
            self.servers[index] = None
        if old is not None:
            old.stop(timeout_s=3)
        if self.restarts >= self.max_restarts:
            self.events.append(ReplicaEvent(time.monotonic(), index, "not restarted: max_restarts reached"))
            return
        self.restarts += 1
        try:
            server = TritonServer(self.configs[index]).start()
        except (ServerStartError, OSError) as error:
            self.events.append(ReplicaEvent(time.monotonic(), index, f"restart failed: {error}"))
            return
        with self._lock:
            if self._halt.is_set():
                server.stop()
                return
            self.servers[index] = server
        self.events.append(ReplicaEvent(time.monotonic(), index, "restarted"))

    def kill(self, index: int) -> None:
        """SIGKILL replica ``index``'s tritonserver (what a crash or the OOM killer does)."""
        server = self.servers[index]
        if server is None or server.pid is None:
            raise ValueError(f"replica {index} is not running")
        os.kill(server.pid, signal.SIGKILL)

    def wait_all_ready(self, timeout_s: float = 240) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(s is not None and s.is_ready() for s in self.servers):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self._halt.set()
        if self._watcher is not None:
            self._watcher.join(timeout=300)
        with self._lock:
            servers, self.servers = self.servers, [None] * len(self.servers)
        for server in servers:
            if server is not None:
                server.stop()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def http_urls(self) -> tuple[str, ...]:
        return tuple(f"{self._connect}:{c.http_port}" for c in self.configs)

    @property
    def grpc_urls(self) -> tuple[str, ...]:
        return tuple(f"{self._connect}:{c.grpc_port}" for c in self.configs)

    @property
    def _connect(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
