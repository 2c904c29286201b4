"""Offline checks of the objects ``recdeploy deploy k8s`` writes (no cluster needed).

    problems = validate_objects(objects)     # [] when every object passes; else one line each

Core kinds (Namespace, Deployment, Service, ConfigMap, HorizontalPodAutoscaler autoscaling/v2)
are validated by ``kubernetes-validate`` against the Kubernetes OpenAPI JSON schemas it bundles,
in strict mode (an unknown field is an error), for every version in ``K8S_VERSIONS``.

PodMonitor (prometheus-operator) and InferenceService (KServe) are custom resources whose
schemas ship with their operators, not with Kubernetes. They are checked against the small
schemas below, written from the fields the projects document (prometheus-operator's API
reference: PodMonitorSpec ``selector``, ``podMetricsEndpoints[]`` ``port``/``path``/``interval``;
KServe's v1beta1 API: PredictorSpec ``minReplicas``/``maxReplicas``/``model``, ModelSpec
``modelFormat``/``runtime``/``runtimeVersion``/``storageUri``/``protocolVersion``): only the
fields this project writes are allowed, so a typo fails. Their standard parts go through the
core schemas too: the metadata as a ConfigMap's, the predictor's container fields (args,
resources) as a Pod's container.
"""
from __future__ import annotations

import re
from typing import Any

import jsonschema
import kubernetes_validate

K8S_VERSIONS = ("1.27.0", "1.37.0")   # the oldest still common in managed clusters, the newest bundled

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {"type": "object", "required": ["name", "namespace"],
             "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABELS,
                            "annotations": _LABELS}}

POD_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PodMonitor"},
        "metadata": _METADATA,
        "spec": {"type": "object", "required": ["selector", "podMetricsEndpoints"], "additionalProperties": False,
                 "properties": {
                     "selector": {"type": "object", "additionalProperties": False,
                                  "properties": {"matchLabels": _LABELS}},
                     "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "required": ["port"], "additionalProperties": False,
                         "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                                        "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}}}}}}}}

INFERENCE_SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"}, "kind": {"const": "InferenceService"},
        "metadata": _METADATA,
        "spec": {"type": "object", "required": ["predictor"], "additionalProperties": False, "properties": {
            "predictor": {"type": "object", "required": ["model"], "additionalProperties": False, "properties": {
                "minReplicas": {"type": "integer", "minimum": 0},
                "maxReplicas": {"type": "integer", "minimum": 0},
                "model": {"type": "object", "required": ["modelFormat", "storageUri"], "additionalProperties": False,
                          "properties": {
                              "modelFormat": {"type": "object", "required": ["name"], "additionalProperties": False,
                                              "properties": {"name": {"type": "string"},
                                                             "version": {"type": "string"}}},
                              "protocolVersion": {"enum": ["v1", "v2", "grpc-v2"]},
                              "runtime": {"type": "string"}, "runtimeVersion": {"type": "string", "minLength": 1},
                              "storageUri": {"type": "string", "pattern": "^(s3|gs|pvc|https?)://"},
                              "args": {"type": "array", "items": {"type": "string"}},
                              "resources": {"type": "object"}}}}}}}}}

CRD_SCHEMAS = {("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR_SCHEMA,
               ("serving.kserve.io/v1beta1", "InferenceService"): INFERENCE_SERVICE_SCHEMA}


def _core(obj: dict, version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:   # carries the jsonschema error's fields
        return [f"Kubernetes {version}: {'/'.join(str(p) for p in err.path)}: {err.message}"]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [f"Kubernetes {version}: {err.message}"]
    return []


def _crd(obj: dict, schema: dict, version: str) -> list[str]:
    problems = [f"schema: {'/'.join(str(p) for p in e.path)}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    problems += _core({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata", {})}, version)
    model = obj.get("spec", {}).get("predictor", {}).get("model")
    if model is not None:   # ModelSpec inlines a v1.Container: check its container fields as one
        container = {"name": "kserve-container", "image": "check",
                     **{k: model[k] for k in ("args", "resources") if k in model}}
        problems += _core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"},
                           "spec": {"containers": [container]}}, version)
    return problems


# Kubernetes' resource.Quantity grammar (the JSON schemas only say "string")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")


def quantity_problems(node: Any, path: str = "") -> list[str]:
    """Resource requests/limits, sizeLimit and an HPA target's averageValue that are not
    Kubernetes quantities."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}/{key}" if path else str(key)
            if key in ("requests", "limits") and isinstance(value, dict):
                found += [f"{where}/{k}: {v!r} is not a quantity" for k, v in value.items()
                          if not _QUANTITY.match(str(v))]
            elif key in ("sizeLimit", "averageValue") and not _QUANTITY.match(str(value)):
                found.append(f"{where}: {value!r} is not a quantity")
            else:
                found += quantity_problems(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += quantity_problems(item, f"{path}/{i}")
    return found


def validate_object(obj: dict, versions: tuple[str, ...] = K8S_VERSIONS) -> list[str]:
    """Every problem found in one object (empty: valid), each naming the Kubernetes version."""
    schema = CRD_SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    problems: list[str] = quantity_problems(obj)
    for version in versions:
        found = _crd(obj, schema, version) if schema is not None else _core(obj, version)
        problems += [p for p in found if p not in problems]
    return problems


def how_checked(obj: dict) -> str:
    """One phrase for the report: which schema judged this object."""
    if (obj.get("apiVersion"), obj.get("kind")) in CRD_SCHEMAS:
        return "CRD: schema derived from its documented fields (+ metadata and container fields: core schemas)"
    return f"core: kubernetes-validate strict, Kubernetes {' and '.join(K8S_VERSIONS)}"


def validate_objects(objects: dict[str, dict]) -> list[str]:
    """file name -> object; -> '<file>: <problem>' for every problem in any of them."""
    return [f"{name}: {problem}" for name, obj in objects.items() for problem in validate_object(obj)]
