"""Pure parts of the gateway deployment: what it exposes, the bomb it guards against, the
perf_analyzer flags, the token file."""
import json
import os
import shutil
from pathlib import Path

import pytest

from recdeploy.serve.gateway_client import perf_analyzer_args
from recdeploy.serve.gateway_config import GatewayConfigError
from recdeploy.serve.gateway_probe import BOMB_ROWS, bomb_request
from recdeploy.serve.gateway_rollout import composing_models, exposed_models

ENSEMBLE = {"name": "recommend", "max_batch_size": 256,
            "input": [{"name": "USER_ID", "data_type": "TYPE_INT64", "dims": ["1"]},
                      {"name": "TAGS", "data_type": "TYPE_STRING", "dims": ["-1"]}],
            "ensemble_scheduling": {"step": [{"model_name": "feature_lookup"}, {"model_name": "scorer"},
                                             {"model_name": "topk"}]}}


def test_composing_models_in_step_order_without_repeats():
    other = {"name": "recommend_int8", "ensemble_scheduling": {"step": [{"model_name": "feature_lookup"},
                                                                          {"model_name": "scorer_int8"}]}}
    assert composing_models([ENSEMBLE, other, {"name": "plain"}]) == (
        "feature_lookup", "scorer", "topk", "scorer_int8")


def test_exposed_models_are_the_ensembles_of_a_plain_repository(tmp_path):
    for name, text in (("recommend", 'name: "recommend"\nplatform: "ensemble"\n'),
                       ("scorer", 'name: "scorer"\nplatform: "onnxruntime_onnx"\n')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(text)
    assert exposed_models(tmp_path) == ("recommend",)
    (tmp_path / "recommend" / "config.pbtxt").write_text('name: "recommend"\nbackend: "python"\n')
    with pytest.raises(GatewayConfigError, match="no ensemble; name the models to expose"):
        exposed_models(tmp_path)


def test_the_bomb_is_small_and_declares_2_to_the_31_rows():
    body = bomb_request(ENSEMBLE)
    request = json.loads(body)
    assert len(body) < 200 and BOMB_ROWS == 2 ** 31
    assert [(i["name"], i["datatype"], i["shape"], i["data"]) for i in request["inputs"]] == [
        ("USER_ID", "INT64", [BOMB_ROWS, 1], [1]), ("TAGS", "BYTES", [BOMB_ROWS, 1], ["x"])]


def test_perf_analyzer_flags_carry_tls_and_the_token(tmp_path):
    cert = tmp_path / "cert.pem"
    assert perf_analyzer_args(cert, "t" * 20) == (
        "--ssl-grpc-use-ssl", f"--ssl-grpc-root-certifications-file={cert}", "-H", f"authorization:Bearer {'t' * 20}")
    assert f"--ssl-https-ca-certificates-file={cert}" in perf_analyzer_args(cert, "t" * 20, "http")


def test_token_file_is_created_private_once_and_then_read(tmp_path):
    from recdeploy.serve.gateway_cli import read_or_make_token
    path = tmp_path / "secrets" / "token"
    token = read_or_make_token(path)
    assert len(token) >= 40 and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert read_or_make_token(path) == token


def nginx_gateway(tmp_path, port):
    from recdeploy.serve.gateway import Gateway, worker_user
    from recdeploy.serve.gateway_config import GatewaySpec
    # no replica behind it: nginx starts and reloads without its upstreams answering
    spec = GatewaySpec(prefix=tmp_path, port=port, models=("recommend",), token="t" * 32,
                       http_upstreams=("127.0.0.1:9", "127.0.0.1:10"), grpc_upstreams=("127.0.0.1:11", "127.0.0.1:12"),
                       http_inference="off", worker_user=worker_user())
    return Gateway(spec, [])


@pytest.mark.integration
@pytest.mark.skipif(not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="nginx not installed")
def test_nginx_drains_by_reload_and_a_taken_port_is_reported(tmp_path):
    from recdeploy.serve.gateway import GatewayError
    from recdeploy.serve.gateway_probe import send
    from recdeploy.serve.processes import children
    from recdeploy.serve.server import pick_free_ports

    port = pick_free_ports("127.0.0.1", 1)[0]
    with nginx_gateway(tmp_path / "a", port) as gateway:
        assert send(gateway.url, gateway.spec.cert_path, "t" * 32, "/v2/models/recommend/infer", b"{}")[0] == 403
        assert send(gateway.url, gateway.spec.cert_path, "t" * 32, "/v2/health/ready")[0] == 502  # nothing behind
        workers = set(children(gateway.nginx_pid))
        gateway.drain({1})
        assert "server 127.0.0.1:10 max_fails=1 fail_timeout=5s down;" in (tmp_path / "a" / "nginx.conf").read_text()
        assert workers.isdisjoint(children(gateway.nginx_pid))  # the old workers are gone
        with pytest.raises(GatewayError, match="Address already in use"):
            nginx_gateway(tmp_path / "b", port).start()


def test_publish_needs_model_equals_an_existing_file(tmp_path, capsys):
    from recdeploy.serve.gateway_cli import main
    assert main(["--repository", str(tmp_path), "--publish", "scorer=/no/such/model.onnx"]) == 2
    assert "must be MODEL=FILE with an existing file" in capsys.readouterr().err
