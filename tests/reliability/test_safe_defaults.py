"""Safe by default: loopback only, model control API off, manifest verified, numpy >= 2 refused."""
import ipaddress
import json
import shutil

import pytest

from recdeploy.serve.cli import build_parser, config_from_args, main


def listening_addresses(port):
    """Local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    # /proc prints each 32-bit word of the address little-endian
                    raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
                    ip = ipaddress.ip_address(raw)
                    found.append(str(getattr(ip, "ipv4_mapped", None) or ip))
    return found


@pytest.mark.integration
def test_every_endpoint_listens_on_loopback_only(rel_server):
    for url in (rel_server.http_url, rel_server.grpc_url, rel_server.metrics_url):
        port = int(url.removesuffix("/metrics").rsplit(":", 1)[1])
        found = listening_addresses(port)
        assert found and set(found) == {"127.0.0.1"}, (url, found)


@pytest.mark.integration
def test_model_control_api_is_off_by_default(rel_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(rel_server.grpc_url)
    for call in (client.load_model, client.unload_model):
        with pytest.raises(InferenceServerException, match="explicit model load / unload is not allowed"):
            call("recommend")
    assert client.is_model_ready("recommend")


@pytest.mark.integration
def test_publishing_without_the_control_api_fails_and_leaves_the_repository_as_it_was(
        rel_server, repository, tmp_path, other_scorer_onnx):
    from recdeploy.export.repository import verify_manifest
    from recdeploy.serve.swap import SwapError, publish_version

    copy = tmp_path / "repo"
    shutil.copytree(repository, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with pytest.raises(SwapError, match="not allowed.*--model-control-mode explicit"):
        publish_version(copy, "scorer", {"model.onnx": other_scorer_onnx}, rel_server.grpc_url)
    assert sorted(p.name for p in (copy / "scorer").iterdir()) == ["1", "config.pbtxt"]
    verify_manifest(copy)


def test_cli_defaults_are_the_safe_ones(tmp_path):
    config = config_from_args(build_parser().parse_args(["--repository", str(tmp_path)]))
    assert (config.host, config.model_control_mode, config.verify_manifest) == ("127.0.0.1", "none", True)
    unsafe = config_from_args(build_parser().parse_args(["--repository", str(tmp_path), "--no-verify"]))
    assert unsafe.verify_manifest is False


def test_serve_refuses_numpy_2_in_the_stub_environment(tmp_path, monkeypatch, capsys):
    python = tmp_path / "venv" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho '{}'\n".format(json.dumps(
        {"python": "3.11", "numpy": "2.0.2", "onnxruntime": "1.20.0"})))
    python.chmod(0o755)
    monkeypatch.setenv("TRITON_STUB_VENV", str(tmp_path / "venv"))
    (tmp_path / "repo").mkdir()
    assert main(["--repository", str(tmp_path / "repo"), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert "numpy 2.0.2" in err and "EMPTY output tensors" in err and "numpy<2" in err
