"""The KServe alternative to serve/k8s_manifests.py's Deployment + Service + HPA: one
``InferenceService`` on KServe's Triton runtime (pure function over ``K8sSpec``).

    inference_service(spec)   # serving.kserve.io/v1beta1 InferenceService

KServe's stock ``kserve-tritonserver`` ClusterServingRuntime names an older Triton image than
ours (the config/runtimes/kustomization.yaml read for this pinned
``nvcr.io/nvidia/tritonserver:21.09-py3``); ``runtimeVersion`` overrides the image tag, and
it must be the tag of the server the repository was tested on, 24.10-py3 (Triton 2.51.0): an
older server may not load configs or backends that 2.51 accepts. KServe mounts the model from
``storageUri`` at /mnt/models (its storage initializer downloads s3:// URIs; pvc:// mounts the
claim) and starts tritonserver with ``--model-store=/mnt/models``; HTTP on 8080, gRPC on 9000.
No extra tritonserver flags: KServe's runtime sets the store and ports, and 2.51's defaults
are the ones wanted (model control off, strict readiness). Autoscaling is KServe's (Knative
concurrency, or ``autoscaling.knative.dev`` annotations), not the queue-time HPA of the plain
manifests.
"""
from __future__ import annotations

from recdeploy.serve.k8s_manifests import MEMORY_LIMIT_FACTOR as LIMIT
from recdeploy.serve.k8s_manifests import (
    TRITON_IMAGE,
    K8sSpec,
    cpu_limit,
    mebibytes,
    memory_request_bytes,
    metadata,
)

KSERVE_RUNTIME = "kserve-tritonserver"


def runtime_version(image: str) -> str:
    """The tag of a tritonserver image (what KServe's runtimeVersion overrides)."""
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        raise ValueError(f"image {image!r} has no tag; runtimeVersion needs one like {TRITON_IMAGE!r}")
    return tag


def storage_uri(spec: K8sSpec) -> str:
    """KServe's spelling of the model source: s3://... as is, pvc:claim/path -> pvc://claim/path."""
    if spec.model_source.startswith("s3://"):
        return spec.model_source
    return "pvc://" + spec.model_source[len("pvc:"):]


def inference_service(spec: K8sSpec) -> dict:
    request = memory_request_bytes(spec)
    limits = {"cpu": cpu_limit(spec.cpu), "memory": mebibytes(request * LIMIT)}
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    return {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": metadata(spec, spec.name, "kserve"),
        "spec": {"predictor": {
            "minReplicas": spec.replicas, "maxReplicas": spec.max_replicas,
            "model": {
                "modelFormat": {"name": "triton"}, "protocolVersion": "v2",
                "runtime": KSERVE_RUNTIME, "runtimeVersion": runtime_version(spec.image),
                "storageUri": storage_uri(spec),
                "resources": {"requests": {"cpu": spec.cpu, "memory": mebibytes(request)}, "limits": limits},
            }}}}


def kserve_objects(spec: K8sSpec) -> dict[str, dict]:
    return {"kserve/inferenceservice.yaml": inference_service(spec)}
