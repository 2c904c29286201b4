"""Faults while serving: `recdeploy serve` notices a dead python stub or a dead server and
says so (restart, or exit 1): never a hang, never a silent 'ready' that fails every request."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from recdeploy.clients.triton_client import RecommendClient
from recdeploy.serve.processes import children, find_stubs

pytestmark = pytest.mark.integration


def read_until(process, prefix, lines, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    for line in process.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return line
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError(f"no {prefix!r} line; output:\n{''.join(lines)}")


def server_pid(cli_pid):
    for pid in children(cli_pid):
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if handle.read().split(b"\0")[0].endswith(b"tritonserver"):
                return pid
    raise AssertionError("no tritonserver child")


def test_dead_stub_restarts_the_server_then_a_dead_server_exits_1(repository, reference, tmp_path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "recdeploy.serve", "--repository", str(repository), "--restarts", "1",
         "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines: list[str] = []
    try:
        # start-up self-check: the canary ran before "ready"
        read_until(process, "canary:", lines)
        assert "equals the in-process pipeline" in lines[-1]
        read_until(process, "ready:", lines)
        first = server_pid(process.pid)
        stub = next(s for s in find_stubs(first).values() if s.instance.startswith("feature_lookup"))
        started = time.monotonic()
        os.kill(stub.pid, signal.SIGKILL)
        read_until(process, "ready:", lines)  # restarted: a new server, canary passed again
        assert time.monotonic() - started < 60
        out = "".join(lines)
        assert f"python backend stub process died: {stub.instance} (pid {stub.pid}" in out
        assert "restarting tritonserver (1 of 1)" in out and out.count("canary:") == 2
        grpc = [line.split()[1] for line in lines if line.startswith("gRPC")][-1]
        with RecommendClient(grpc) as client:
            ids, _ = client.recommend([1], k=5)
        assert ids.tolist() == reference.recommend(np.array([1]), k=5)[0].tolist()

        os.kill(server_pid(process.pid), signal.SIGKILL)  # no restarts left: exit 1, said why
        assert process.wait(timeout=60) == 1
        assert process.stdout is not None  # stdout=PIPE
        rest = process.stdout.read()
        assert "tritonserver exited unexpectedly (code -9)" in rest and "Server log tail" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_failure_reports_the_dead_stub_while_triton_still_says_ready(repository):
    from recdeploy.serve.server import ServerConfig, TritonServer

    with TritonServer(ServerConfig(model_repository=repository)) as server:
        assert server.failure() is None
        stub = next(s for s in find_stubs(server.pid).values() if s.instance.startswith("topk"))
        os.kill(stub.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.failure() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.is_ready()  # what Triton itself says ...
        assert "python backend stub process died: topk_0_0" in server.failure()
        from tritonclient.utils import InferenceServerException
        with RecommendClient(server.grpc_url) as client:  # ... and what it does
            with pytest.raises(InferenceServerException, match="Stub process 'topk_0_0' is not healthy"):
                client.recommend([1], k=5)
