"""The gateway in front of the Triton Service on Kubernetes: nginx terminating TLS and checking
a bearer token, as a ConfigMap (nginx.conf), a Deployment and a Service. Pure functions over
serve/k8s_manifests.py's ``K8sSpec``.

    gateway_objects(spec)     # file name -> object: the ConfigMap, Deployment and Service

Secrets are referenced, never written: ``<name>-gateway-tls`` (a kubernetes.io/tls Secret:
``kubectl create secret tls``) and ``<name>-gateway-token`` (key ``token``: ``kubectl create
secret generic --from-literal=token=...``; letters, digits and ``._~-`` only, since it is
pasted into nginx's configuration when the pod starts). The token reaches nginx through an
environment variable and a start-up line that writes a ``map`` into an emptyDir, so it never
sits in the ConfigMap.

What clients get: HTTPS and gRPC over TLS (HTTP/2 by ALPN) on port 443; every path but
``/healthz`` wants ``Authorization: Bearer <token>`` (401 otherwise); Triton's model-control and
shared-memory APIs answer 403; request bodies over ``MAX_BODY`` are refused (tritonserver 2.51
trusts a JSON shape it was sent, see DESIGN.md).
"""
from __future__ import annotations

from recdeploy.serve.k8s_manifests import GRPC_PORT, HTTP_PORT, K8sSpec, labels, metadata

NGINX_IMAGE = "nginx:1.27"
GATEWAY_PORT = 8443
MAX_BODY = "4m"
TOKEN_MAP = "/etc/nginx/auth/token.conf"
# Written before nginx starts; ${GATEWAY_TOKEN} comes from the token Secret. A token with other
# characters is refused rather than written into the configuration.
START = ('case "$GATEWAY_TOKEN" in ""|*[!A-Za-z0-9._~-]*) '
         'echo "gateway token missing or has characters outside A-Za-z0-9._~-" >&2; exit 1;; esac; '
         'printf \'map $http_authorization $token_ok {\\n  default 0;\\n  "Bearer %s" 1;\\n}\\n\' '
         f'"$GATEWAY_TOKEN" > {TOKEN_MAP} && exec nginx -g "daemon off;"')


def nginx_conf(spec: K8sSpec) -> str:
    """nginx.conf for the gateway pod: TLS, bearer token, HTTP and gRPC to the Triton Service.
    ``listen ... ssl http2`` rather than 1.25's ``http2 on``: the image's nginx 1.27 still takes
    it (with a deprecation notice) and Debian's 1.22, which the tests run, knows nothing else."""
    upstream = f"{spec.triton}.{spec.namespace}.svc.cluster.local"
    return f"""worker_processes auto;
pid /tmp/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  include {TOKEN_MAP};
  upstream triton_http {{ server {upstream}:{HTTP_PORT}; keepalive 32; }}
  upstream triton_grpc {{ server {upstream}:{GRPC_PORT}; keepalive 32; }}
  client_max_body_size {MAX_BODY};
  server_tokens off;
  server {{
    listen {GATEWAY_PORT} ssl http2;
    ssl_certificate /etc/nginx/tls/tls.crt;
    ssl_certificate_key /etc/nginx/tls/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = /healthz {{ access_log off; return 200 "ok\\n"; }}
    location ~ ^/v2/(repository|systemsharedmemory|cudasharedmemory|logging|trace) {{ return 403; }}
    location ~ ^/inference\\.GRPCInferenceService/(Repository|SystemSharedMemory|CudaSharedMemory|Log|Trace) {{
      return 403;
    }}
    location /inference.GRPCInferenceService/ {{
      if ($token_ok = 0) {{ return 401; }}
      grpc_pass grpc://triton_grpc;
    }}
    location / {{
      if ($token_ok = 0) {{ return 401; }}
      proxy_pass http://triton_http;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
    }}
  }}
}}
"""


def gateway_config_map(spec: K8sSpec) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(spec, f"{spec.name}-gateway", "gateway"),
            "data": {"nginx.conf": nginx_conf(spec)}}


def gateway_deployment(spec: K8sSpec, replicas: int = 2) -> dict:
    name = f"{spec.name}-gateway"
    selector = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "gateway"}
    probe = {"httpGet": {"path": "/healthz", "port": "https", "scheme": "HTTPS"}, "periodSeconds": 10}
    container = {
        "name": "nginx", "image": NGINX_IMAGE, "command": ["/bin/sh", "-c", START],
        "ports": [{"name": "https", "containerPort": GATEWAY_PORT}],
        "env": [{"name": "GATEWAY_TOKEN", "valueFrom": {"secretKeyRef": {"name": f"{spec.name}-gateway-token",
                                                                         "key": "token"}}}],
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "readinessProbe": probe, "livenessProbe": {**probe, "failureThreshold": 3},
        "volumeMounts": [{"name": "conf", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf",
                          "readOnly": True},
                         {"name": "tls", "mountPath": "/etc/nginx/tls", "readOnly": True},
                         {"name": "auth", "mountPath": "/etc/nginx/auth"}],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(spec, name, "gateway"),
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": labels(spec, "gateway")},
                                  "spec": {"containers": [container],
                                           "volumes": [{"name": "conf", "configMap": {"name": name}},
                                                       {"name": "tls", "secret": {"secretName": f"{name}-tls"}},
                                                       {"name": "auth", "emptyDir": {}}]}}}}


def gateway_service(spec: K8sSpec, service_type: str = "LoadBalancer") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(spec, f"{spec.name}-gateway", "gateway"),
            "spec": {"type": service_type,
                     "selector": {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "gateway"},
                     "ports": [{"name": "https", "port": 443, "targetPort": "https"}]}}


def gateway_objects(spec: K8sSpec) -> dict[str, dict]:
    return {"gateway-configmap.yaml": gateway_config_map(spec), "gateway-deployment.yaml": gateway_deployment(spec),
            "gateway-service.yaml": gateway_service(spec)}
