"""``recdeploy deploy k8s``: Kubernetes manifests for serving a model repository, sized by the
real server and validated offline.

    recdeploy deploy k8s --repository model_repository --out deploy/
    recdeploy deploy k8s --repository model_repository --source s3://bucket/recdeploy --memory 2Gi --out deploy/
    kubectl apply -f deploy/            # the plain topology; deploy/kserve/ is the KServe alternative

Without --memory the command starts the real tritonserver once on the repository, times how
long it takes to get ready and reads the resident memory of the server and its python stubs;
the pods' memory request and limit and their startup-probe window come from those numbers
(serve/k8s_manifests.py says how). Every written object is checked against the Kubernetes
schemas (kubernetes-validate, no cluster) and the custom resources against schemas derived
from their documented fields; nothing is written if one fails. Written: Namespace, the Triton
Deployment and Service, a HorizontalPodAutoscaler on queue time per request, a PodMonitor, the
prometheus-adapter rule, the nginx gateway (ConfigMap, Deployment, Service: TLS + bearer token)
and kserve/inferenceservice.yaml. Not run on a cluster: docs/kubernetes.md.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import yaml

from recdeploy.serve.k8s_gateway import gateway_objects
from recdeploy.serve.k8s_kserve import kserve_objects
from recdeploy.serve.k8s_manifests import TRITON_IMAGE, K8sSpec, K8sSpecError, memory_request_bytes, triton_objects
from recdeploy.serve.k8s_validate import how_checked, validate_objects
from recdeploy.serve.processes import tree_rss_bytes
from recdeploy.serve.server import ServerConfig, TritonServer

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?$")
_UNITS = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
SETTLE_S = 2.0          # RSS is read for this long after ready; the largest reading counts


class ManifestError(ValueError):
    """The objects failed offline validation; the message lists every problem."""


def parse_memory(text: str) -> int:
    """'2Gi', '1500Mi', '2G' or bytes -> bytes."""
    found = _MEMORY.match(text.strip())
    if not found:
        raise K8sSpecError(f"memory {text!r}: give a size like 2Gi, 1500Mi, 2G or a number of bytes")
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def measure_server(repository: Path) -> dict:
    """Start the real tritonserver on ``repository``: seconds to ready, and the largest
    resident memory (server + stubs) seen in the SETTLE_S after it."""
    started = time.perf_counter()
    with TritonServer(ServerConfig(model_repository=repository)) as server:
        ready_s = time.perf_counter() - started
        assert server.pid is not None
        rss = 0
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            rss = max(rss, tree_rss_bytes(server.pid))
            time.sleep(0.2)
    return {"rss_bytes": rss, "load_seconds": round(ready_s, 2), "how": "measured: tritonserver 2.51 on this machine"}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (nginx.conf, the adapter rules) as literal blocks a reader can read."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def render(objects: dict[str, dict]) -> dict[str, str]:
    """file name -> YAML text (keys in the order the builders wrote them)."""
    return {name: yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
            for name, obj in objects.items()}


def build_all(spec: K8sSpec) -> dict[str, dict]:
    objects = {**triton_objects(spec), **gateway_objects(spec), **kserve_objects(spec)}
    problems = validate_objects(objects)
    if problems:
        raise ManifestError("the manifests failed offline validation:\n  " + "\n  ".join(problems))
    return objects


def write(objects: dict[str, dict], out: Path, sizing: dict) -> list[Path]:
    written = []
    for name, text in render(objects).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    (out / "sizing.json").write_text(json.dumps(sizing, indent=2) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=["k8s"], help="what to deploy to (Kubernetes)")
    parser.add_argument("--repository", type=Path, required=True, help="the model repository to serve")
    parser.add_argument("--out", type=Path, default=Path("deploy"), help="folder for the YAML files (default: deploy)")
    parser.add_argument("--source", default=None,
                        help="where the pods find the repository: pvc:<claim>[/<sub-path>] or s3://bucket/path "
                             "(default: pvc:<name>-models)")
    parser.add_argument("--memory", default=None,
                        help="resident memory of one loaded server (2Gi, 1500Mi); default: start tritonserver "
                             "on --repository once and measure it")
    parser.add_argument("--load-seconds", type=float, default=0.0,
                        help="with --memory: how long the models take to load (sizes the startup probe)")
    parser.add_argument("--name", default="recdeploy", help="prefix of every object's name (default: recdeploy)")
    parser.add_argument("--namespace", default="recdeploy", help="namespace (default: recdeploy)")
    parser.add_argument("--image", default=TRITON_IMAGE, help=f"tritonserver image (default: {TRITON_IMAGE})")
    parser.add_argument("--replicas", type=int, default=2, help="Triton replicas, and the HPA's minimum (default: 2)")
    parser.add_argument("--max-replicas", type=int, default=8, help="the HPA's maximum (default: 8)")
    parser.add_argument("--cpu", default="1", help="CPU request per replica; the limit is twice it (default: 1)")
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu per replica (default: 0)")
    parser.add_argument("--queue-target-us", type=int, default=20_000,
                        help="HPA target: mean queue time per request, microseconds (default: 20000)")
    args = parser.parse_args(argv)
    try:
        if not (args.repository / "").is_dir():
            raise K8sSpecError(f"no model repository at {args.repository}")
        if args.memory is not None:
            sizing = {"rss_bytes": parse_memory(args.memory), "load_seconds": args.load_seconds,
                      "how": "given: --memory"}
        else:
            print(f"measuring: starting tritonserver on {args.repository} ...", flush=True)
            sizing = measure_server(args.repository)
        spec = K8sSpec(model_source=args.source or f"pvc:{args.name}-models", memory_bytes=sizing["rss_bytes"],
                       load_seconds=sizing["load_seconds"], name=args.name, namespace=args.namespace,
                       image=args.image, replicas=args.replicas, max_replicas=args.max_replicas, cpu=args.cpu,
                       gpus=args.gpus, queue_target_us=args.queue_target_us)
        objects = build_all(spec)
    except (ValueError, ManifestError) as err:
        print(f"recdeploy deploy: {err}", file=sys.stderr)
        return 2
    sizing["memory_request_bytes"] = memory_request_bytes(spec)
    written = write(objects, args.out, sizing)
    print(f"server: {sizing['rss_bytes'] / (1 << 20):.0f} MiB resident, ready in {sizing['load_seconds']} s "
          f"({sizing['how']}); pods request {sizing['memory_request_bytes'] >> 20} MiB")
    for path, obj in zip(written, objects.values()):
        print(f"  {path}  {obj['kind']:<24} valid ({how_checked(obj)})")
    print("not applied anywhere: review, create the Secrets (docs/kubernetes.md), then kubectl apply -f "
          f"{args.out}/")
    return 0
