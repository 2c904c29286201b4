from __future__ import annotations

import pytest

from recdeploy.serve.cli import EXIT_DIED, build_parser, config_from_args, main, serve_forever


def test_help_teaches_the_backend_dir_and_the_docker_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "onnxruntime/model.py" in out and "first python3 on PATH" in out
    assert ("docker run --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/model_repository:/models"
            in out)
    assert "nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models" in out


def test_flags_become_the_server_config(tmp_path):
    args = build_parser().parse_args(["--repository", str(tmp_path), "--http-port", "9000",
                                      "--grpc-port", "0", "--verbose"])
    config = config_from_args(args)
    assert (config.model_repository, config.host, config.http_port, config.grpc_port,
            config.metrics_port, config.log_verbose, config.model_control_mode) == \
        (tmp_path, "127.0.0.1", 9000, 0, 8002, 1, "none")
    assert config.native_backends
    no_native = config_from_args(build_parser().parse_args(["--repository", str(tmp_path), "--no-native"]))
    assert not no_native.native_backends


def test_a_missing_repository_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["--repository", str(tmp_path / "nope")]) == 1
    assert "is not a directory" in capsys.readouterr().err


class DeadServer:
    def __init__(self, polls_until_dead=0, reason="tritonserver exited unexpectedly (code 137)"):
        self.polls, self.reason = polls_until_dead, reason

    def failure(self, stub_grace_s=0.0):
        self.polls -= 1
        return self.reason if self.polls < 0 else None

    def log_tail(self):
        return "E1128 something fatal"


def test_a_dying_server_ends_the_foreground_with_its_log(capsys):
    assert serve_forever(DeadServer(polls_until_dead=3), poll_s=0.01) == EXIT_DIED
    err = capsys.readouterr().err
    assert "exited unexpectedly (code 137)" in err and "something fatal" in err


def test_a_dead_stub_ends_the_foreground_too(capsys):
    server = DeadServer(reason="python backend stub process died: topk_0_0 (pid 7, m.py)")
    assert serve_forever(server, poll_s=0.01) == EXIT_DIED
    assert "stub process died: topk_0_0" in capsys.readouterr().err


def test_a_death_while_serving_restarts_up_to_n_times_then_exits_1(tmp_path, monkeypatch, capsys):
    import recdeploy.serve.cli as cli
    calls = []
    monkeypatch.setattr(cli, "_serve_once", lambda args: calls.append(1) or EXIT_DIED)
    assert main(["--repository", str(tmp_path), "--restarts", "2"]) == 1
    assert len(calls) == 3 and "restarting tritonserver (2 of 2)" in capsys.readouterr().err
    monkeypatch.setattr(cli, "_serve_once", lambda args: 0)
    assert main(["--repository", str(tmp_path), "--restarts", "2"]) == 0
    assert main(["--repository", str(tmp_path), "--restarts", "-1"]) == 2


class InterruptedServer:
    def failure(self, stub_grace_s=0.0):
        raise KeyboardInterrupt


def test_ctrl_c_stops_cleanly():
    assert serve_forever(InterruptedServer()) == 0
