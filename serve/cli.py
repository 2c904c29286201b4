"""``recdeploy serve``: run the real tritonserver on a model repository, in the foreground.

    recdeploy serve --repository model_repository            # or python -m recdeploy.serve
    recdeploy soak --repository model_repository             # soak + hot-swap benchmark (perf)
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

DESCRIPTION = """\
Start the real Triton Inference Server (2.51.0, shipped in the nvidia-pytriton wheel) on a
model repository, bound to loopback, and keep it in the foreground until Ctrl-C / SIGTERM.

Backend directory: this server has only the python backend. recdeploy composes a backend
directory in a temporary folder: python/ (the python backend plus the stub built for this
Python) and onnxruntime/model.py, a python-based backend that runs ONNX Runtime in-process,
so models with platform "onnxruntime_onnx" load unchanged. When the repository has a
TorchScript model (platform "pytorch_libtorch"), pytorch/ holds libtriton_pytorch.so, a native
libtorch backend compiled from serve/native against the installed torch on first use (about
25 s, cached; needs g++): it runs the model inside tritonserver, with no stub round trip
(--no-native, or no compiler: a python-based backend runs it instead). The stub takes its packages from
the first python3 on PATH; recdeploy puts this interpreter's bin folder there and refuses to
start if that environment has numpy >= 2 (this server then returns empty tensors) or lacks
numpy / onnxruntime.

Before starting, every artifact is checked against the repository's manifest.sha256.json
(refused, naming the files, unless --no-verify). Before printing "ready", every entry the
repository serves (recdeploy.json) answers canary requests of its scenario (real ids, a cold
start, edge cases), which must equal its in-process pipeline. While serving, a dead
tritonserver or a dead python backend stub (Triton keeps reporting ready but fails every
request to that model) ends the command with exit code 1 and the reason, or restarts the
server (--restarts N).

The same repository runs in the stock NGC container with its native backends:
  docker run --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/model_repository:/models \\
    nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models
"""

EPILOG = """\
environment: TRITONSERVER (+ TRITON_BACKEND_DIR, TRITON_LIBS_DIR) use another tritonserver,
e.g. the GPU bundle; TRITON_STUB_VENV picks the environment the python stub runs in;
RECDEPLOY_NATIVE_BACKEND=0 is --no-native everywhere. Build the native backend ahead of time
with: python -m recdeploy.serve.native_build
Port 0 picks a free port."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recdeploy serve", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="the Triton model repository (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s; 0.0.0.0 exposes it)")
    parser.add_argument("--http-port", type=int, default=8000, help="default: %(default)s")
    parser.add_argument("--grpc-port", type=int, default=8001, help="default: %(default)s")
    parser.add_argument("--metrics-port", type=int, default=8002, help="default: %(default)s")
    parser.add_argument("--model-control-mode", default="none",
                        choices=["none", "poll", "explicit"],
                        help="none (default) keeps the load/unload API off; explicit turns it on "
                             "for hot swaps (recdeploy.serve.swap) and loads every model at start")
    parser.add_argument("--startup-timeout", type=float, default=180.0, dest="startup_timeout_s",
                        help="seconds to wait for every model to load (default: %(default)s)")
    parser.add_argument("--log", type=Path, default=None, dest="log_path",
                        help="keep the server log at this path (default: a temporary file)")
    parser.add_argument("--verbose", action="store_true", help="tritonserver --log-verbose=1")
    parser.add_argument("--no-verify", action="store_true",
                        help="serve even if artifacts do not match manifest.sha256.json")
    parser.add_argument("--no-canary", action="store_true",
                        help="skip the served-vs-in-process canary requests before 'ready'")
    parser.add_argument("--no-native", action="store_true",
                        help="serve TorchScript models with the python-based backend instead of "
                             "the native libtorch one")
    parser.add_argument("--restarts", type=int, default=0,
                        help="restart a server whose process or python stub died, up to N times "
                             "(default: %(default)s: exit 1 instead)")
    return parser


def config_from_args(args: argparse.Namespace):
    from recdeploy.serve.server import ServerConfig
    return ServerConfig(model_repository=args.repository, host=args.host,
                        http_port=args.http_port, grpc_port=args.grpc_port,
                        metrics_port=args.metrics_port,
                        model_control_mode=args.model_control_mode,
                        log_verbose=1 if args.verbose else 0,
                        startup_timeout_s=args.startup_timeout_s, log_path=args.log_path,
                        verify_manifest=not args.no_verify, native_backends=not args.no_native)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["soak"]:
        print("recdeploy serve: the soak benchmark is `recdeploy soak` (it lives with perf)", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    if args.restarts < 0:
        print("recdeploy serve: --restarts must be >= 0", file=sys.stderr)
        return 2
    for attempt in range(args.restarts + 1):
        code = _serve_once(args)
        if code != EXIT_DIED or attempt == args.restarts:
            return 1 if code == EXIT_DIED else code
        print(f"recdeploy serve: restarting tritonserver ({attempt + 1} of {args.restarts}) ...",
              file=sys.stderr, flush=True)
    return 1  # pragma: no cover (the loop always returns)


EXIT_DIED = -1  # internal: the server died while serving (main turns it into 1 or a restart)


def _serve_once(args: argparse.Namespace) -> int:
    from recdeploy.serve.canary import CanaryError, run_canary, wants_canary
    from recdeploy.serve.environment import StubEnvironmentError
    from recdeploy.serve.locate import TritonNotFoundError
    from recdeploy.serve.server import ServerStartError, TritonServer
    try:
        server = TritonServer(config_from_args(args))
    except ValueError as error:
        print(f"recdeploy serve: {error}", file=sys.stderr)
        return 1
    try:
        print(f"starting tritonserver on {args.repository} ...", flush=True)
        server.start()
        if not args.no_canary and wants_canary(args.repository):
            print(run_canary(args.repository, server.grpc_url).summary(), flush=True)
        print(f"HTTP    {server.http_url}\ngRPC    {server.grpc_url}\n"
              f"metrics {server.metrics_url}\nlog     {server.log_path}")
        print("ready: every model loaded; Ctrl-C stops the server", flush=True)
        return serve_forever(server)
    except (ValueError, TritonNotFoundError, ServerStartError, StubEnvironmentError) as error:
        hint = ""
        if type(error).__name__ == "ManifestError":
            hint = " (re-export the repository, or pass --no-verify to serve it anyway)"
        elif isinstance(error, CanaryError):
            hint = " (the server started but answers wrongly; not reporting ready)"
        print(f"recdeploy serve: {error}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop()


def serve_forever(server, poll_s: float = 0.5) -> int:
    """Block until Ctrl-C / SIGTERM (0) or until the server or one of its python stubs dies
    (EXIT_DIED, the reason and the log tail printed): never a silent hang."""
    from recdeploy.serve.server import STUB_GRACE_S

    restore = _sigterm_as_interrupt()
    try:
        while (failure := server.failure(stub_grace_s=STUB_GRACE_S)) is None:
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        return 0
    finally:
        restore()
    print(f"recdeploy serve: {failure}. Server log tail:\n{server.log_tail()}",
          file=sys.stderr, flush=True)
    return EXIT_DIED


def _sigterm_as_interrupt():
    """Treat SIGTERM like Ctrl-C while serving; returns a function that undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
