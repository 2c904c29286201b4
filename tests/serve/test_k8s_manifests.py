"""recdeploy deploy k8s: the objects built from a spec, their offline validation, the written YAML."""
import json

import pytest
import yaml

from recdeploy.serve.k8s_cli import ManifestError, build_all, main, parse_memory, render
from recdeploy.serve.k8s_kserve import inference_service, runtime_version
from recdeploy.serve.k8s_manifests import (
    MIB,
    K8sSpec,
    K8sSpecError,
    pod_monitor,
    triton_deployment,
    triton_hpa,
    triton_objects,
)
from recdeploy.serve.k8s_validate import validate_object, validate_objects

PVC = K8sSpec(model_source="pvc:models/repo", memory_bytes=800 * MIB, load_seconds=40)
S3 = K8sSpec(model_source="s3://bucket/recdeploy/repo", memory_bytes=800 * MIB, gpus=1)


def container(spec):
    return triton_deployment(spec)["spec"]["template"]["spec"]["containers"][0]


def test_triton_pods_are_sized_from_the_measured_memory_and_load_time():
    c = container(PVC)
    assert c["resources"]["requests"] == {"cpu": "1", "memory": "1000Mi"}        # 800 MiB x 1.25
    assert c["resources"]["limits"] == {"cpu": "2000m", "memory": "1500Mi"}      # request x 1.5
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 200   # 5 x 40 s
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    quick = K8sSpec(model_source="pvc:m", memory_bytes=100 * MIB, load_seconds=1)
    assert container(quick)["startupProbe"]["failureThreshold"] == 12             # never under 120 s


def test_the_repository_comes_from_a_claim_or_from_s3():
    c = container(PVC)
    assert "--model-repository=/models" in c["args"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "repo"} in c["volumeMounts"]
    volumes = triton_deployment(PVC)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in volumes
    c = container(S3)
    assert "--model-repository=s3://bucket/recdeploy/repo" in c["args"]
    assert [e["name"] for e in c["env"]] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert not any(v["name"] == "models" for v in triton_deployment(S3)["spec"]["template"]["spec"]["volumes"])


def test_hpa_scales_on_the_adapter_queue_metric_that_the_pod_monitor_feeds():
    hpa = triton_hpa(PVC)["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "recdeploy-triton"}
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_us_per_request"
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    rules = yaml.safe_load(triton_objects(PVC)["prometheus-adapter-rules.yaml"]["data"]["config.yaml"])["rules"]
    assert rules[0]["name"]["as"] == "triton_queue_us_per_request"
    assert "nv_inference_queue_duration_us" in rules[0]["metricsQuery"]
    assert "nv_inference_request_success" in rules[0]["metricsQuery"]
    endpoint = pod_monitor(PVC)["spec"]["podMetricsEndpoints"][0]
    ports = {p["name"]: p["containerPort"] for p in container(PVC)["ports"]}
    assert endpoint["port"] == "metrics" and ports["metrics"] == 8002


def test_kserve_overrides_the_runtime_image_tag_with_ours():
    model = inference_service(PVC)["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-tritonserver" and model["runtimeVersion"] == "24.10-py3"
    assert model["storageUri"] == "pvc://models/repo"
    assert inference_service(S3)["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/recdeploy/repo"
    with pytest.raises(ValueError, match="has no tag"):
        runtime_version("registry.local:5000/tritonserver")


def test_every_object_passes_offline_validation_for_both_sources():
    for spec in (PVC, S3):
        objects = build_all(spec)
        assert validate_objects(objects) == []
        assert {o["kind"] for o in objects.values()} == {
            "Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodMonitor", "ConfigMap",
            "InferenceService"}


def test_validation_catches_mistakes_in_core_objects_and_in_the_crds():
    deployment = triton_deployment(PVC)
    deployment["spec"]["replicaz"] = 3
    assert any("'replicaz' was unexpected" in p and "1.37.0" in p for p in validate_object(deployment))
    hpa = triton_hpa(PVC)
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = "lots"
    assert any("'lots' is not a quantity" in p for p in validate_object(hpa))
    monitor = pod_monitor(PVC)
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    assert any("'podMetricEndpoints' was unexpected" in p for p in validate_object(monitor))
    service = inference_service(PVC)
    service["spec"]["predictor"]["model"]["resources"]["limits"]["memory"] = "1.5 GB"
    assert any("is not a quantity" in p for p in validate_object(service))
    service = inference_service(PVC)
    service["spec"]["predictor"]["model"]["storageUri"] = "/mnt/models"          # not a URI KServe reads
    assert any("does not match" in p for p in validate_object(service))
    service = inference_service(PVC)
    service["spec"]["predictor"]["model"]["resources"]["limit"] = {"cpu": "1"}   # limits, misspelt
    assert any("'limit' was unexpected" in p for p in validate_object(service))


def test_bad_settings_are_refused_with_what_is_valid():
    with pytest.raises(K8sSpecError, match="give pvc:<claim>"):
        K8sSpec(model_source="/mnt/models", memory_bytes=800 * MIB)
    with pytest.raises(K8sSpecError, match="not a DNS label"):
        K8sSpec(model_source="pvc:m", memory_bytes=800 * MIB, name="RecDeploy")
    with pytest.raises(K8sSpecError, match="below 16 MiB"):
        K8sSpec(model_source="pvc:m", memory_bytes=1000)
    with pytest.raises(K8sSpecError, match="not a CPU quantity"):
        K8sSpec(model_source="pvc:m", memory_bytes=800 * MIB, cpu="two")
    assert parse_memory("2Gi") == 2 << 30 and parse_memory("1500Mi") == 1500 << 20 and parse_memory("2G") == 2 * 10**9
    with pytest.raises(K8sSpecError, match="give a size like 2Gi"):
        parse_memory("2 gigs")


def test_yaml_round_trips_and_keeps_nginx_conf_readable():
    objects = build_all(PVC)
    texts = render(objects)
    for name, text in texts.items():
        assert yaml.safe_load(text) == objects[name], name
    assert "nginx.conf: |" in texts["gateway-configmap.yaml"]


def test_cli_writes_every_file_with_the_given_memory(tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    out = tmp_path / "deploy"
    assert main(["k8s", "--repository", str(tmp_path / "repo"), "--out", str(out), "--memory", "1Gi",
                 "--source", "s3://b/r"]) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.yaml"))
    assert written == ["gateway-configmap.yaml", "gateway-deployment.yaml", "gateway-service.yaml",
                       "kserve/inferenceservice.yaml", "namespace.yaml", "prometheus-adapter-rules.yaml",
                       "triton-deployment.yaml", "triton-hpa.yaml", "triton-podmonitor.yaml",
                       "triton-service.yaml"]
    assert json.loads((out / "sizing.json").read_text())["memory_request_bytes"] == 1280 * MIB
    assert capsys.readouterr().out.count(" valid (") == 10
    assert main(["k8s", "--repository", str(tmp_path / "nope"), "--memory", "1Gi"]) == 2
    assert "no model repository at" in capsys.readouterr().err


def test_build_all_refuses_to_hand_out_invalid_objects(monkeypatch):
    import recdeploy.serve.k8s_cli as cli
    monkeypatch.setattr(cli, "gateway_objects", lambda spec: {"bad.yaml": {"apiVersion": "v1", "kind": "Service",
                                                                          "metadata": {"name": "x"}, "spek": {}}})
    with pytest.raises(ManifestError, match="bad.yaml: .*'spek' was unexpected"):
        build_all(PVC)


@pytest.mark.integration
def test_measuring_the_real_server_sizes_the_pods(repository):
    from recdeploy.serve.k8s_cli import measure_server
    sizing = measure_server(repository)
    # the server alone is ~100 MiB; each python model adds a stub with numpy (+ onnxruntime)
    assert 100 * MIB < sizing["rss_bytes"] < 8 << 30
    assert 0 < sizing["load_seconds"] < 180
    spec = K8sSpec(model_source="pvc:m", memory_bytes=sizing["rss_bytes"], load_seconds=sizing["load_seconds"])
    request = container(spec)["resources"]["requests"]["memory"]
    assert int(request[:-2]) * MIB >= sizing["rss_bytes"] * 1.25
