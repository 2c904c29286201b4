"""``recdeploy serve``: run the real tritonserver on a model repository, in the foreground.

    recdeploy serve --repository model_repository            # or python -m recdeploy.serve
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
so models with platform "onnxruntime_onnx" load unchanged. The stub takes its packages from
the first python3 on PATH; recdeploy puts this interpreter's bin folder there and refuses to
start if that environment has numpy >= 2 (this server then returns empty tensors) or lacks
numpy / onnxruntime.

The same repository runs in the stock NGC container with its native backends:
  docker run --rm -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/model_repository:/models \\
    nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models
"""

EPILOG = """\
environment: TRITONSERVER (+ TRITON_BACKEND_DIR, TRITON_LIBS_DIR) use another tritonserver,
e.g. the GPU bundle; TRITON_STUB_VENV picks the environment the python stub runs in.
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
                        choices=["none", "poll", "explicit"], help="default: %(default)s")
    parser.add_argument("--startup-timeout", type=float, default=180.0, dest="startup_timeout_s",
                        help="seconds to wait for every model to load (default: %(default)s)")
    parser.add_argument("--log", type=Path, default=None, dest="log_path",
                        help="keep the server log at this path (default: a temporary file)")
    parser.add_argument("--verbose", action="store_true", help="tritonserver --log-verbose=1")
    return parser


def config_from_args(args: argparse.Namespace):
    from recdeploy.serve.server import ServerConfig
    return ServerConfig(model_repository=args.repository, host=args.host,
                        http_port=args.http_port, grpc_port=args.grpc_port,
                        metrics_port=args.metrics_port,
                        model_control_mode=args.model_control_mode,
                        log_verbose=1 if args.verbose else 0,
                        startup_timeout_s=args.startup_timeout_s, log_path=args.log_path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from recdeploy.serve.environment import StubEnvironmentError
    from recdeploy.serve.locate import TritonNotFoundError
    from recdeploy.serve.server import ServerStartError, TritonServer
    try:
        server = TritonServer(config_from_args(args))
        print(f"starting tritonserver on {args.repository} ...", flush=True)
        server.start()
    except (ValueError, TritonNotFoundError, ServerStartError, StubEnvironmentError) as error:
        print(f"recdeploy serve: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        print(f"HTTP    {server.http_url}\ngRPC    {server.grpc_url}\n"
              f"metrics {server.metrics_url}\nlog     {server.log_path}")
        print("ready: every model loaded; Ctrl-C stops the server", flush=True)
        return serve_forever(server)
    finally:
        server.stop()


def serve_forever(server, poll_s: float = 0.5) -> int:
    """Block until Ctrl-C / SIGTERM (0) or until the server dies (1, log tail printed)."""
    restore = _sigterm_as_interrupt()
    try:
        while server.is_alive():
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print("stopping tritonserver ...", flush=True)
        return 0
    finally:
        restore()
    print(f"recdeploy serve: tritonserver exited unexpectedly (code {server.returncode}). "
          f"Server log tail:\n{server.log_tail()}", file=sys.stderr)
    return 1


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
