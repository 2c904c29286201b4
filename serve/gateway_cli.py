"""``recdeploy gateway``: N tritonserver replicas behind an nginx TLS gateway, in the foreground.

    recdeploy gateway --repository model_repository --replicas 2 --port 8443
    recdeploy gateway-bench --repository model_repository --new-model v2/model.onnx   (perf)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from recdeploy.serve.cli import _sigterm_as_interrupt
from recdeploy.serve.gateway_config import HTTP_INFERENCE_MODES

DESCRIPTION = """\
Serve a model repository the way it would face clients: N tritonserver replicas (each on its
own loopback ports, explicit model control for rolling updates, restarted when one dies)
behind nginx (Debian's package, run with a private prefix on a non-root port):

  TLS          one port for HTTPS (HTTP/1.1, HTTP/2) and gRPC; a self-signed certificate for
               localhost/127.0.0.1 is generated unless --cert/--key name one
  auth         every request needs "Authorization: Bearer <token>" (gRPC: metadata
               authorization); the token is read from --token-file or generated into it
  exposed      health, server metadata, the ensembles' metadata/config/ready and inference;
               not the model control, repository index, shared memory, trace, logging,
               statistics or metrics endpoints (404 / 403)
  balancing    round robin over the replicas, a replica that refuses or resets a connection
               is skipped for --fail-timeout s and the request retried on the next
  limits       --max-body per request (413), --rate per client address (429)
  validation   HTTP/JSON inference passes a validating proxy that refuses shapes the body
               does not carry (tritonserver 2.51 would allocate what they declare) and malformed
               JSON with 400; --http-inference off leaves inference to gRPC only

Clients: tritonclient.grpc.InferenceServerClient(URL, ssl=True, root_certificates=CERT) with
headers={"authorization": "Bearer " + token}; tritonclient.http with ssl=True and
ssl_context_factory for the certificate; perf_analyzer with --ssl-grpc-use-ssl
--ssl-grpc-root-certifications-file=CERT -H "authorization:Bearer <token>".
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recdeploy gateway", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--replicas", type=int, default=2, help="tritonserver replicas (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="gateway address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8443, help="gateway TLS port (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="replica repository copies, nginx prefix, logs (default: a temporary folder)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="bearer token file; created (0600, random) if missing (default: WORKDIR/token)")
    parser.add_argument("--cert", type=Path, default=None, help="TLS certificate (PEM)")
    parser.add_argument("--key", type=Path, default=None, help="TLS private key (PEM)")
    parser.add_argument("--expose", action="append", default=[], metavar="MODEL",
                        help="a model clients may reach (repeatable; default: the repository's ensembles)")
    parser.add_argument("--http-inference", choices=HTTP_INFERENCE_MODES, default="validated")
    parser.add_argument("--max-body", default="1m", help="largest request body (default: %(default)s)")
    parser.add_argument("--rate", type=int, default=2000, help="requests/s per client address (default: %(default)s)")
    parser.add_argument("--burst", type=int, default=400, help="burst above --rate (default: %(default)s)")
    parser.add_argument("--fail-timeout", type=int, default=5,
                        help="seconds a failing replica stays out of rotation (default: %(default)s)")
    parser.add_argument("--statistics", action="store_true",
                        help="also expose the read-only inference statistics (perf_analyzer needs them)")
    parser.add_argument("--publish", default=None, metavar="MODEL=FILE",
                        help="once serving, roll FILE out as MODEL's next version, replica by replica "
                             "(drain, publish, canary, re-admit), then keep serving")
    parser.add_argument("--no-verify", action="store_true", help="serve even if the manifest does not match")
    return parser


def read_or_make_token(path: Path) -> str:
    from recdeploy.serve.gateway import new_token
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.publish is not None and ("=" not in args.publish or not Path(args.publish.split("=", 1)[1]).is_file()):
        print(f"recdeploy gateway: --publish {args.publish!r} must be MODEL=FILE with an existing file",
              file=sys.stderr)
        return 2
    # deferred: the replicas' canary pulls in the scenarios (and their numpy / tritonclient)
    from recdeploy.serve.gateway import GatewayError
    from recdeploy.serve.gateway_rollout import Deployment, RolloutError, rolling_update
    from recdeploy.serve.server import ServerStartError
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recdeploy-gateway-"))
    token_file = args.token_file or workdir / "token"
    try:
        deployment = Deployment(args.repository, args.replicas, workdir, args.port, host=args.host,
                                models=tuple(args.expose), token=read_or_make_token(token_file), cert=args.cert,
                                key=args.key, http_inference=args.http_inference, max_body=args.max_body,
                                rate_per_s=args.rate, burst=args.burst, fail_timeout_s=args.fail_timeout,
                                statistics=args.statistics,
                                verify_manifest=not args.no_verify)
        deployment.start()
    except (ValueError, GatewayError, ServerStartError) as error:
        print(f"recdeploy gateway: {error}", file=sys.stderr)
        return 1
    gateway = deployment.gateway
    assert gateway is not None
    print(f"gateway  https://{gateway.url} (HTTP/1.1, HTTP/2, gRPC)\nmodels   {', '.join(deployment.models)}\n"
          f"token    {token_file}\ncert     {gateway.spec.cert_path}\n"
          f"replicas {', '.join(deployment.replicas.grpc_urls)} (gRPC, loopback)\nworkdir  {workdir}")
    print("ready: Ctrl-C stops the gateway and the replicas", flush=True)
    restore = _sigterm_as_interrupt()
    seen = 0
    try:
        if args.publish is not None:
            model, file = args.publish.split("=", 1)
            try:
                rolling_update(deployment, model, {"model" + Path(file).suffix: Path(file)})
            except (RolloutError, ValueError) as error:
                print(f"recdeploy gateway: rolling update stopped: {error}", file=sys.stderr, flush=True)
        while (failure := gateway.check()) is None:
            for event in deployment.replicas.events[seen:]:
                print(f"replica {event.replica}: {event.what}", flush=True)
            seen = len(deployment.replicas.events)
            time.sleep(0.5)
        print(f"recdeploy gateway: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
        return 0
    finally:
        restore()
        deployment.stop()

