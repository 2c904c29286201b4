"""Kubernetes objects for serving a model repository with tritonserver replicas: pure
functions from a ``K8sSpec`` to plain dicts (written as YAML by ``recdeploy deploy k8s``,
checked offline by serve/k8s_validate.py). The gateway in front is serve/k8s_gateway.py, the
KServe alternative serve/k8s_kserve.py.

    spec = K8sSpec(model_source="s3://bucket/recdeploy/model_repository", memory_bytes=900 << 20)
    objects = triton_objects(spec)    # Namespace, Deployment, Service, HPA, PodMonitor, adapter rules

Sizing: the memory request is the measured resident memory of tritonserver and its python
stubs on this repository (``recdeploy deploy k8s`` starts the real server once) times
``MEMORY_HEADROOM``, the limit ``MEMORY_LIMIT_FACTOR`` times that; the startup probe allows
``STARTUP_FACTOR`` times the measured load time (at least ``MIN_STARTUP_S``) before the kubelet
gives up on a pod still loading models. None of this has run on a cluster (docs/kubernetes.md).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import yaml

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"   # Triton 2.51.0, the server we test on
MIB = 1 << 20
MEMORY_HEADROOM = 1.25        # request = measured RSS x this: request buffers, stub growth
MEMORY_LIMIT_FACTOR = 1.5     # limit = request x this: a burst is throttled by the queue, not OOM-killed
MIN_STARTUP_S = 120
STARTUP_FACTOR = 5            # a cluster node pulling from an object store loads slower than this box
PROBE_PERIOD_S = 10
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
QUEUE_METRIC = "triton_queue_us_per_request"  # what the adapter rule below serves to the HPA
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?m?$")


class K8sSpecError(ValueError):
    """A deployment setting Kubernetes (or Triton) would refuse; the message says what is valid."""


@dataclass(frozen=True)
class K8sSpec:
    """What the manifests need to know. ``model_source``: ``pvc:<claim>[/<sub-path>]`` (a
    PersistentVolumeClaim holding the repository, mounted read-only) or ``s3://bucket/path``
    (Triton reads the object store itself; credentials from the Secret ``<name>-s3``)."""
    model_source: str
    memory_bytes: int                 # measured resident memory of the loaded server
    load_seconds: float = 0.0         # measured time from start to ready
    name: str = "recdeploy"
    namespace: str = "recdeploy"
    image: str = TRITON_IMAGE
    replicas: int = 2
    max_replicas: int = 8
    cpu: str = "1"                    # CPU request per replica; the limit is twice it
    gpus: int = 0                     # nvidia.com/gpu per replica
    queue_target_us: int = 20_000     # HPA: mean queue time per request the replicas aim for
    shm_bytes: int = 256 * MIB        # /dev/shm for the python backend's tensors (k8s gives 64Mi)

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("namespace", self.namespace)):
            if not _NAME.match(value) or len(value) > 40:
                raise K8sSpecError(f"{field} {value!r} is not a DNS label (lower-case letters, digits, "
                                   "'-', at most 40 characters here so derived names fit 63)")
        if not (self.model_source.startswith("s3://") or self.model_source.startswith("pvc:")):
            raise K8sSpecError(f"model source {self.model_source!r}: give pvc:<claim>[/<sub-path>] "
                               "or s3://bucket/path")
        if self.model_source.startswith("pvc:") and not _NAME.match(self.claim):
            raise K8sSpecError(f"PVC name {self.claim!r} is not a valid claim name")
        if self.memory_bytes < 16 * MIB:
            raise K8sSpecError(f"memory {self.memory_bytes} bytes is below 16 MiB: not a measured "
                               "tritonserver (give --memory 2Gi or let the command measure it)")
        if not 1 <= self.replicas <= self.max_replicas:
            raise K8sSpecError(f"need 1 <= replicas ({self.replicas}) <= max replicas ({self.max_replicas})")
        if not _QUANTITY.match(self.cpu):
            raise K8sSpecError(f"cpu {self.cpu!r} is not a CPU quantity like '1', '0.5' or '500m'")
        if self.gpus < 0 or self.queue_target_us <= 0:
            raise K8sSpecError("gpus must be >= 0 and the queue target > 0")

    @property
    def claim(self) -> str:
        return self.model_source[len("pvc:"):].split("/", 1)[0]

    @property
    def triton(self) -> str:
        return f"{self.name}-triton"


def mebibytes(n_bytes: float) -> str:
    """A memory quantity in whole MiB, rounded up."""
    return f"{math.ceil(n_bytes / MIB)}Mi"


def memory_request_bytes(spec: K8sSpec) -> int:
    return math.ceil(spec.memory_bytes * MEMORY_HEADROOM / MIB) * MIB


def cpu_limit(cpu: str) -> str:
    millis = float(cpu[:-1]) if cpu.endswith("m") else float(cpu) * 1000
    return f"{int(math.ceil(millis * 2))}m"


def startup_failure_threshold(spec: K8sSpec) -> int:
    """Probe periods the kubelet waits for ready before restarting a loading pod."""
    window = max(MIN_STARTUP_S, STARTUP_FACTOR * spec.load_seconds)
    return math.ceil(window / PROBE_PERIOD_S)


def labels(spec: K8sSpec, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": "recdeploy"}


def metadata(spec: K8sSpec, name: str, component: str) -> dict:
    return {"name": name, "namespace": spec.namespace, "labels": labels(spec, component)}


def namespace(spec: K8sSpec) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace}}


def triton_args(spec: K8sSpec) -> list[str]:
    """tritonserver's flags: all interfaces (the pod network; the Service and the gateway decide
    who reaches it), no model control API (the repository is immutable per rollout)."""
    repository = spec.model_source if spec.model_source.startswith("s3://") else "/models"
    return [f"--model-repository={repository}", f"--http-port={HTTP_PORT}", f"--grpc-port={GRPC_PORT}",
            f"--metrics-port={METRICS_PORT}", "--model-control-mode=none", "--exit-on-error=true",
            "--strict-readiness=true", "--allow-metrics=true"]


def _probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
            "timeoutSeconds": 5, "failureThreshold": failures}


def triton_container(spec: K8sSpec) -> dict:
    request = memory_request_bytes(spec)
    limits = {"cpu": cpu_limit(spec.cpu), "memory": mebibytes(request * MEMORY_LIMIT_FACTOR)}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    mounts: list[dict] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    container: dict = {
        "name": "tritonserver", "image": spec.image, "command": ["tritonserver"], "args": triton_args(spec),
        "ports": [{"name": "http", "containerPort": HTTP_PORT}, {"name": "grpc", "containerPort": GRPC_PORT},
                  {"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": {"requests": {"cpu": spec.cpu, "memory": mebibytes(request)}, "limits": limits},
        # ready (every model loaded) gates traffic; live only says the process answers; the
        # startup probe holds both back while the models load
        "startupProbe": _probe("/v2/health/ready", PROBE_PERIOD_S, startup_failure_threshold(spec)),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", PROBE_PERIOD_S, 3),
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if spec.model_source.startswith("pvc:"):
        sub_path = spec.model_source[len("pvc:"):].partition("/")[2]
        mount = {"name": "models", "mountPath": "/models", "readOnly": True}
        mounts.append({**mount, "subPath": sub_path} if sub_path else mount)
    else:  # Triton's S3 client reads the standard AWS variables; optional: IRSA / node roles work too
        container["env"] = [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": f"{spec.name}-s3", "key": key, "optional": True}}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")]
    return container


def triton_deployment(spec: K8sSpec) -> dict:
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": mebibytes(spec.shm_bytes)}}]
    if spec.model_source.startswith("pvc:"):
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": spec.claim, "readOnly": True}})
    selector = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "triton"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(spec, spec.triton, "triton"),
        "spec": {
            "replicas": spec.replicas, "selector": {"matchLabels": selector},
            # one new pod at a time and never below the replicas: a rollout keeps capacity
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels(spec, "triton")},
                "spec": {"containers": [triton_container(spec)], "volumes": volumes,
                         "terminationGracePeriodSeconds": 30}}}}


def triton_service(spec: K8sSpec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(spec, spec.triton, "triton"),
            "spec": {"type": "ClusterIP",
                     "selector": {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "triton"},
                     "ports": [{"name": name, "port": port, "targetPort": name, **extra}
                               for name, port, extra in (("http", HTTP_PORT, {}),
                                                         ("grpc", GRPC_PORT, {"appProtocol": "grpc"}),
                                                         ("metrics", METRICS_PORT, {}))]}}


def triton_hpa(spec: K8sSpec) -> dict:
    """Scale on the mean queue time per request (Prometheus adapter custom metric, per pod)."""
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec, spec.triton, "triton"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.triton},
            "minReplicas": spec.replicas, "maxReplicas": spec.max_replicas,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": QUEUE_METRIC},
                                                  "target": {"type": "AverageValue",
                                                             "averageValue": str(spec.queue_target_us)}}}],
            # a new replica loads models for a while: scale up at once, down slowly
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                                     "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                         "scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}}}}


def pod_monitor(spec: K8sSpec) -> dict:
    """prometheus-operator scrapes every Triton pod's /metrics (the HPA's source)."""
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": metadata(spec, spec.triton, "triton"),
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": spec.name,
                                                  "app.kubernetes.io/component": "triton"}},
                     "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}]}}


def adapter_rule(spec: K8sSpec) -> dict:
    """The prometheus-adapter rule that turns Triton's cumulative counters into the HPA's
    per-pod metric: microseconds spent queued per successful request over the last 2 minutes,
    summed over every model of the pod (an ensemble's steps each queue)."""
    selector = '{namespace!="",pod!=""}'
    return {"seriesQuery": f"nv_inference_queue_duration_us{selector}",
            "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
            "name": {"matches": "^nv_inference_queue_duration_us$", "as": QUEUE_METRIC},
            "metricsQuery": ("sum(rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}[2m])) by (<<.GroupBy>>)"
                             " / clamp_min(sum(rate(nv_inference_request_success{<<.LabelMatchers>>}[2m]))"
                             " by (<<.GroupBy>>), 1e-9)")}


def adapter_config_map(spec: K8sSpec) -> dict:
    """The rule as a prometheus-adapter config file in a ConfigMap (merge it into the
    adapter's own config: the chart's ``rules.custom`` or its --config file)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": metadata(spec, f"{spec.name}-adapter-rules", "autoscaling"),
            "data": {"config.yaml": yaml.safe_dump({"rules": [adapter_rule(spec)]}, sort_keys=False)}}


def triton_objects(spec: K8sSpec) -> dict[str, dict]:
    """file name -> object, in the order ``kubectl apply`` should meet them."""
    return {"namespace.yaml": namespace(spec), "triton-deployment.yaml": triton_deployment(spec),
            "triton-service.yaml": triton_service(spec), "triton-hpa.yaml": triton_hpa(spec),
            "triton-podmonitor.yaml": pod_monitor(spec),
            "prometheus-adapter-rules.yaml": adapter_config_map(spec)}
