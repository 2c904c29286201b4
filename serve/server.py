"""Start, health-check and stop the real tritonserver on a model repository.

    from recdeploy.serve.server import ServerConfig, TritonServer
    with TritonServer(ServerConfig(model_repository=Path("model_repository"))) as server:
        print(server.grpc_url)          # "127.0.0.1:<free port>"

``start()`` composes a backend directory (python backend + python-based ``onnxruntime``
backend) in a temporary folder, checks the Python environment the python backend stub will
use, starts tritonserver bound to loopback and waits until ``/v2/health/ready`` answers 200.
A server that exits or never gets ready raises ``ServerStartError`` carrying the tail of
its log, where Triton writes each model's load error.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from recdeploy.export.repository import verify_manifest
from recdeploy.serve.backends import compose_backend_dir, native_backends
from recdeploy.serve.environment import check_stub_environment
from recdeploy.serve.locate import TritonInstall, find_triton_install
from recdeploy.serve.processes import Stub, crashed_stubs, find_stubs, process_state

MODEL_CONTROL_MODES = ("none", "poll", "explicit")
LOG_TAIL_LINES = 60
# a python stub that Triton stops while it loads a new version (a hot swap, a rolling update)
# is a zombie until Triton reaps it, an instant later: watchers count a stub as dead only when
# it stays dead this long (a tritonserver that exits counts at once)
STUB_GRACE_S = 2.0
_ANY_ADDRESS = ("0.0.0.0", "::", "")


class ServerStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with its log tail."""


@dataclass(frozen=True)
class ServerConfig:
    model_repository: Path
    # loopback: tritonserver itself listens on 0.0.0.0 unless told otherwise
    host: str = "127.0.0.1"
    # 0 picks a free port at start(), so tests and parallel runs never collide
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    model_control_mode: str = "none"
    log_verbose: int = 0
    # the first load of a python model starts a stub process per instance; large ONNX files
    # and cold disks make this slow, so be generous
    startup_timeout_s: float = 180.0
    extra_args: tuple[str, ...] = ()
    # the python3 the stub runs (its packages!); None: $TRITON_STUB_VENV/bin if set (the GPU
    # bundle), else the running interpreter's bin folder
    python_bin_dir: Path | None = None
    # None: the log lives in the server's temporary folder and goes away at stop()
    log_path: Path | None = None
    # check every artifact against <repository>/manifest.sha256.json before starting.
    # `recdeploy serve` turns it on (--no-verify turns it off); off here because test and
    # scratch repositories often have no manifest
    verify_manifest: bool = False
    # explicit mode only: the models loaded at start-up ("*": all of them), so turning the
    # model control API on does not also start an empty server
    load_models: tuple[str, ...] = ("*",)
    # serve TorchScript (platform pytorch_libtorch) with the native libtorch backend, built
    # on first use when the repository has such a model; False (or RECDEPLOY_NATIVE_BACKEND=0):
    # the python-based backend serves it
    native_backends: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_repository", Path(self.model_repository))
        if not self.model_repository.is_dir():
            raise ValueError(f"model repository {self.model_repository} is not a directory; "
                             f"write one with `recdeploy export` first")
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name}={port} is out of range; "
                                 f"use 1-65535, or 0 for a free port")
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ValueError(f"model_control_mode={self.model_control_mode!r}; valid: "
                             f"{', '.join(MODEL_CONTROL_MODES)}")
        if self.log_verbose < 0 or self.startup_timeout_s <= 0:
            raise ValueError("log_verbose must be >= 0 and startup_timeout_s > 0")


def default_python_bin_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TRITON_STUB_VENV"):
        return Path(env["TRITON_STUB_VENV"]) / "bin"
    return Path(sys.executable).parent


def build_argv(config: ServerConfig, server_bin: Path, backend_dir: Path,
               ports: tuple[int, int, int]) -> list[str]:
    """The tritonserver command line; ``ports`` is (http, grpc, metrics), already chosen."""
    http, grpc, metrics = ports
    return [
        str(server_bin),
        f"--model-repository={config.model_repository.resolve()}",
        f"--backend-directory={backend_dir}",
        f"--http-address={config.host}", f"--http-port={http}",
        f"--grpc-address={config.host}", f"--grpc-port={grpc}",
        f"--metrics-address={config.host}", f"--metrics-port={metrics}",
        f"--model-control-mode={config.model_control_mode}",
        *([f"--load-model={name}" for name in config.load_models]
          if config.model_control_mode == "explicit" else []),
        # a model that fails to load stops the server at start-up instead of serving a
        # repository with a hole in it; ready means every model is ready
        "--exit-on-error=true", "--strict-readiness=true",
        f"--log-verbose={config.log_verbose}",
        *config.extra_args,
    ]


def build_env(base: dict[str, str], python_bin_dir: Path, libs_dir: Path | None) -> dict[str, str]:
    """The server's environment: the stub's python3 first on PATH, the bundled libs found."""
    env = dict(base)
    # the stub ignores PYTHONPATH and takes its packages from the first python3 on PATH
    rest = [base["PATH"]] if base.get("PATH") else []
    env["PATH"] = os.pathsep.join([str(python_bin_dir)] + rest)
    if libs_dir is not None:
        # the composed backend dir holds copies of the stub and libtriton_python.so, whose
        # $ORIGIN-relative rpath no longer reaches nvidia_pytriton.libs/
        old = base.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = os.pathsep.join([str(libs_dir)] + ([old] if old else []))
    return env


def uses_torchscript(repository: Path) -> bool:
    """True when a model config of the repository asks for the pytorch backend."""
    for config in Path(repository).glob("*/config.pbtxt"):
        text = config.read_text(errors="replace")
        if "pytorch_libtorch" in text or re.search(r'backend:\s*"pytorch"', text):
            return True
    return False


def pick_free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports the OS reports free on ``host`` (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` of the server log, without its wide option/model tables."""
    if path is None or not Path(path).is_file():
        return "(no server log)"
    text = Path(path).read_text(errors="replace").splitlines()
    kept = [line for line in text if line.strip() and not line.startswith(("|", "+"))]
    return "\n".join(kept[-lines:])


def load_errors(path: Path | None) -> list[str]:
    """Triton's one-line "failed to load '<model>' version N: <why>" records, decoded."""
    if path is None or not Path(path).is_file():
        return []
    found = _LOAD_ERROR.findall(Path(path).read_text(errors="replace"))
    return [message.replace("\\n", "\n").rstrip() for message in found]


_LOAD_ERROR = re.compile(r'"(failed to load \'[^\']+\' version \S+: .*)"\s*$', re.MULTILINE)


class TritonServer:
    """One tritonserver process. ``start()`` returns once it is ready; ``stop()`` is idempotent."""

    def __init__(self, config: ServerConfig, install: TritonInstall | None = None) -> None:
        self.config = config
        self._install = install
        self._process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self._log_path: Path | None = None
        self._ports: tuple[int, int, int] | None = None
        self._stubs: dict[int, Stub] = {}
        self._stub_died = False
        self._stubs_dead_since: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> TritonServer:
        if self._process is not None:
            raise RuntimeError("this TritonServer was already started; make a new one")
        if self.config.verify_manifest:
            verify_manifest(self.config.model_repository)  # ManifestError names the files
        install = self._install or find_triton_install()
        python_bin_dir = Path(self.config.python_bin_dir or default_python_bin_dir())
        found = check_stub_environment(python_bin_dir)
        # the stub must be built for the Python it embeds, which need not be ours
        stub_python = _version_tuple(found.get("python")) or sys.version_info[:2]
        self._workdir = Path(tempfile.mkdtemp(prefix="recdeploy-triton-"))
        try:
            native = {}
            if self.config.native_backends and uses_torchscript(self.config.model_repository):
                native = native_backends(log=lambda message: print(message, file=sys.stderr))
            backend_dir = compose_backend_dir(self._workdir / "backends", install, stub_python,
                                              native=native)
            self._ports = self._choose_ports()
            self._log_path = Path(self.config.log_path or self._workdir / "tritonserver.log")
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            argv = build_argv(self.config, install.server_bin, backend_dir, self._ports)
            env = build_env(dict(os.environ), python_bin_dir, install.libs_dir)
            with open(self._log_path, "wb") as log:
                # own session: Ctrl-C in the terminal reaches us, and we stop the server
                self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                                 stderr=subprocess.STDOUT, env=env,
                                                 cwd=self._workdir, start_new_session=True)
        except BaseException:
            self.stop()
            raise
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Poll ``/v2/health/ready`` until 200; ServerStartError (with log tail) otherwise."""
        if self._process is None:
            raise RuntimeError("start() the server first")
        deadline = time.monotonic() + (timeout_s or self.config.startup_timeout_s)
        url = f"http://{self.http_url}/v2/health/ready"
        while True:
            code = self._process.poll()
            if code is not None:
                raise ServerStartError(self._failure(f"tritonserver exited with code {code} "
                                                     f"before it was ready"))
            if _http_ok(url):
                self._stubs = find_stubs(self._process.pid)
                return
            if time.monotonic() > deadline:
                raise ServerStartError(self._failure(
                    f"tritonserver was not ready after "
                    f"{timeout_s or self.config.startup_timeout_s:.0f} s"))
            time.sleep(0.2)

    def _failure(self, headline: str) -> str:
        parts = [headline + "."]
        errors = load_errors(self._log_path)
        if errors:
            parts.append("Model load errors:\n" + "\n".join(f"  {e}" for e in errors))
        # without config.log_path the log goes away with the temporary folder at stop()
        where = (f" ({self._log_path})" if self.config.log_path
                 else " (keep it with log_path / --log)")
        parts.append(f"Server log tail{where}:\n{log_tail(self._log_path)}")
        return "\n".join(parts)

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def is_ready(self) -> bool:
        return self.is_alive() and _http_ok(f"http://{self.http_url}/v2/health/ready")

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def failure(self, stub_grace_s: float = 0.0) -> str | None:
        """None while the server can serve; else what broke: the server exited, or a python
        backend stub died (Triton then still reports ready but fails every request to that
        model: "Stub process '<instance>' is not healthy"). A dead stub counts only once it has
        looked dead for ``stub_grace_s`` (see STUB_GRACE_S)."""
        if self._process is None:
            return "tritonserver was never started"
        code = self._process.poll()
        if code is not None:
            return f"tritonserver exited unexpectedly (code {code})"
        # stubs come and go with model (re)loads in poll / explicit mode; keep up with them
        self._stubs = {pid: stub for pid, stub in self._stubs.items()
                       if process_state(pid) is not None}
        self._stubs.update(find_stubs(self._process.pid))
        dead = crashed_stubs(self._stubs)
        if not dead:
            self._stubs_dead_since = None
            return None
        now = time.monotonic()
        if self._stubs_dead_since is None:
            self._stubs_dead_since = now
        if now - self._stubs_dead_since < stub_grace_s:
            return None
        self._stub_died = True
        names = ", ".join(f"{stub.instance} (pid {stub.pid}, {stub.model_file})" for stub in dead)
        return (f"python backend stub process died: {names}; tritonserver does not restart "
                f"it and still reports ready, but every request to that model now fails "
                f"with \"Stub process ... is not healthy\"")

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; removes the temporary folder.

        Triton drains in-flight requests for up to 30 s (its --exit-timeout-secs) and an
        idle server with python models still takes a few seconds to unload them.
        """
        process = self._process
        if self._stub_died:
            # unloading a model whose stub is dead waits out Triton's own timeouts (~30 s)
            # for nothing: the server is broken anyway
            timeout_s = min(timeout_s, 3.0)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                # the whole process group: tritonserver and its python backend stubs
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            try:  # stubs a crashed (kill -9) tritonserver left behind
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self._log_path, lines)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def http_url(self) -> str:
        return f"{self._connect_host}:{self._port(0)}"

    @property
    def grpc_url(self) -> str:
        return f"{self._connect_host}:{self._port(1)}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._connect_host}:{self._port(2)}/metrics"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def _connect_host(self) -> str:
        # a server bound to every address is reached through loopback
        return "127.0.0.1" if self.config.host in _ANY_ADDRESS else self.config.host

    def _port(self, index: int) -> int:
        if self._ports is None:
            raise RuntimeError("ports are known once start() has run")
        return self._ports[index]

    def _choose_ports(self) -> tuple[int, int, int]:
        wanted = [self.config.http_port, self.config.grpc_port, self.config.metrics_port]
        free = iter(pick_free_ports(self._connect_host, wanted.count(0)))
        http, grpc, metrics = (port or next(free) for port in wanted)
        return http, grpc, metrics


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _version_tuple(text: str | None) -> tuple[int, int] | None:
    parts = (text or "").split(".")
    if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        return None
    return int(parts[0]), int(parts[1])
