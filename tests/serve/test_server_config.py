"""ServerConfig validation, argv/env building, ports, log parsing: no server started."""
from __future__ import annotations

from pathlib import Path

import pytest

from recdeploy.serve.server import (
    ServerConfig,
    TritonServer,
    build_argv,
    build_env,
    default_python_bin_dir,
    load_errors,
    log_tail,
    pick_free_ports,
)


def test_argv_binds_loopback_and_fails_fast(tmp_path):
    config = ServerConfig(model_repository=tmp_path, log_verbose=1, extra_args=("--foo=1",))
    argv = build_argv(config, Path("/t/bin/tritonserver"), Path("/b"), (8000, 8001, 8002))
    assert argv == [
        "/t/bin/tritonserver",
        f"--model-repository={tmp_path.resolve()}",
        "--backend-directory=/b",
        "--http-address=127.0.0.1", "--http-port=8000",
        "--grpc-address=127.0.0.1", "--grpc-port=8001",
        "--metrics-address=127.0.0.1", "--metrics-port=8002",
        "--model-control-mode=none",
        "--exit-on-error=true", "--strict-readiness=true",
        "--log-verbose=1",
        "--foo=1",
    ]


def test_env_puts_the_stub_python_first_and_adds_libs():
    env = build_env({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/x", "HOME": "/h"},
                    Path("/venv/bin"), Path("/libs"))
    assert env == {"PATH": "/venv/bin:/usr/bin", "LD_LIBRARY_PATH": "/libs:/x", "HOME": "/h"}
    assert build_env({}, Path("/venv/bin"), None) == {"PATH": "/venv/bin"}


def test_stub_python_defaults_to_the_running_interpreter_or_the_bundle_venv():
    import sys
    assert default_python_bin_dir({}) == Path(sys.executable).parent
    assert default_python_bin_dir({"TRITON_STUB_VENV": "/tmp/sv"}) == Path("/tmp/sv/bin")


@pytest.mark.parametrize("kwargs, message", [
    ({"http_port": 70000}, r"http_port=70000 is out of range"),
    ({"model_control_mode": "auto"}, r"model_control_mode='auto'; valid: none, poll, explicit"),
    ({"startup_timeout_s": 0}, r"startup_timeout_s > 0"),
])
def test_config_rejects_bad_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServerConfig(model_repository=tmp_path, **kwargs)


def test_config_rejects_a_missing_repository(tmp_path):
    with pytest.raises(ValueError, match=r"model repository .*nope is not a directory"):
        ServerConfig(model_repository=tmp_path / "nope")


def test_free_ports_are_distinct():
    ports = pick_free_ports("127.0.0.1", 3)
    assert len(set(ports)) == 3 and all(0 < p < 65536 for p in ports)


def test_fixed_ports_are_kept_and_zero_is_filled(tmp_path):
    server = TritonServer(ServerConfig(model_repository=tmp_path, http_port=18000))
    http, grpc, metrics = server._choose_ports()
    assert http == 18000 and len({http, grpc, metrics}) == 3


def test_addresses_need_a_started_server(tmp_path):
    with pytest.raises(RuntimeError, match="start"):
        _ = TritonServer(ServerConfig(model_repository=tmp_path)).http_url


LOG = '''I1128 06:31:37.428479 4597 model_lifecycle.cc:472] "loading: broken:1"
E1128 06:31:39.095382 4597 model_lifecycle.cc:642] "failed to load 'broken' version 1: Internal: RuntimeError: boom\\n\\nAt:\\n  model.py(4): initialize\\n"
I1128 06:31:39.095399 4597 model_lifecycle.cc:777] "failed to load 'broken'"
+-------+
| Model |
+-------+
error: creating server: Internal - failed to load all models
'''


def test_load_errors_are_extracted_and_decoded(tmp_path):
    (tmp_path / "log").write_text(LOG)
    assert load_errors(tmp_path / "log") == [
        "failed to load 'broken' version 1: Internal: RuntimeError: boom\n\nAt:\n  model.py(4): initialize"]


def test_log_tail_drops_tables(tmp_path):
    (tmp_path / "log").write_text(LOG)
    assert log_tail(tmp_path / "log", lines=2).splitlines() == [
        "I1128 06:31:39.095399 4597 model_lifecycle.cc:777] \"failed to load 'broken'\"",
        "error: creating server: Internal - failed to load all models"]
    assert log_tail(tmp_path / "missing") == "(no server log)"


def test_stop_before_start_is_harmless(tmp_path):
    server = TritonServer(ServerConfig(model_repository=tmp_path))
    server.stop()
    server.stop()
    assert not server.is_alive()


def test_explicit_mode_loads_every_model_at_start(tmp_path):
    config = ServerConfig(model_repository=tmp_path, model_control_mode="explicit")
    argv = build_argv(config, Path("/t/tritonserver"), Path("/b"), (1, 2, 3))
    assert "--model-control-mode=explicit" in argv and "--load-model=*" in argv
    assert "--load-model=*" not in build_argv(ServerConfig(model_repository=tmp_path),
                                              Path("/t/tritonserver"), Path("/b"), (1, 2, 3))


def test_start_refuses_a_repository_failing_its_manifest_before_anything_runs(tmp_path):
    from recdeploy.export.repository import ManifestError, write_manifest
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"abc")
    write_manifest(tmp_path)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"ab")
    server = TritonServer(ServerConfig(model_repository=tmp_path, verify_manifest=True),
                          install=object())  # never reached: verification comes first
    with pytest.raises(ManifestError, match=r"m/1/model.onnx \(sha256 differs\)"):
        server.start()
    assert not server.is_alive() and server.failure() == "tritonserver was never started"


def test_a_dead_stub_counts_only_once_it_stays_dead_for_the_grace(tmp_path, monkeypatch):
    """A stub Triton stops while it loads a new version looks dead for an instant: watchers
    that pass stub_grace_s do not take that for a crash; one that stays dead is reported."""
    import recdeploy.serve.server as server_module
    from recdeploy.serve.processes import Stub

    stub = Stub(pid=123, instance="topk_0_0", model_file="model.py")
    dead = [stub]
    monkeypatch.setattr(server_module, "find_stubs", lambda pid: {stub.pid: stub})
    monkeypatch.setattr(server_module, "process_state", lambda pid: "Z")
    monkeypatch.setattr(server_module, "crashed_stubs", lambda stubs: list(dead))
    clock = [100.0]
    monkeypatch.setattr(server_module.time, "monotonic", lambda: clock[0])
    server = TritonServer(ServerConfig(model_repository=tmp_path), install=object())
    server._process = type("Running", (), {"pid": 1, "poll": lambda self: None})()
    assert server.failure(stub_grace_s=2.0) is None            # first seen dead
    clock[0] += 1.0
    assert server.failure(stub_grace_s=2.0) is None            # still within the grace
    dead.clear()
    assert server.failure(stub_grace_s=2.0) is None            # reaped and replaced: forgotten
    dead.append(stub)
    clock[0] += 5.0
    assert server.failure(stub_grace_s=2.0) is None            # a new suspicion starts the clock again
    clock[0] += 2.5
    assert "python backend stub process died: topk_0_0" in server.failure(stub_grace_s=2.0)
    assert "python backend stub process died" in TritonServer.failure(server)   # no grace: at once
