"""The validating proxy between nginx and the replicas for HTTP/JSON inference.

    python -m recdeploy.serve.gateway_proxy --listen PREFIX/validator.sock \\
        --upstream PREFIX/internal.sock --limits PREFIX/limits.json

nginx hands it every POST .../infer it accepted (TLS, token, size and rate limits passed);
it checks the request with gateway_validate.check_infer_request and answers 400 (Triton's
error JSON shape, {"error": ...}) or forwards the untouched body to nginx's internal
socket, which balances over the replicas with retries. Compressed request bodies are refused
(415): a small gzip body can inflate to gigabytes inside Triton. `recdeploy gateway` starts it
and restarts it if it dies.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiohttp import ClientSession, UnixConnector, web

from recdeploy.serve.gateway_validate import InferRequestError, ModelLimits, check_infer_request, limits_from_config

# answers travel uncompressed (Inference-Header-Content-Length counts uncompressed bytes; a
# recommendation list gains little from gzip)
FORWARDED = ("Content-Type", "Inference-Header-Content-Length", "Accept")
RETURNED = ("Content-Type", "Inference-Header-Content-Length")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(limits: dict[str, ModelLimits], upstream_socket: Path) -> web.Application:
    async def infer(request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in limits:
            return _error(404, f"model {model!r} is not exposed by the gateway")
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            return _error(415, f"Content-Encoding {encoding!r} is not accepted by the gateway; send the body as is")
        header = request.headers.get("Inference-Header-Content-Length")
        body = await request.read()
        try:
            length = None if header is None else int(header)
            check_infer_request(limits[model], body, length)
        except (InferRequestError, ValueError) as error:
            return _error(400, str(error))
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        headers["Accept-Encoding"] = "identity"  # else aiohttp asks for gzip on its own
        session: ClientSession = request.app["session"]
        async with session.post(f"http://replicas{request.path_qs}", data=body, headers=headers) as answer:
            payload = await answer.read()
            return web.Response(status=answer.status, body=payload,
                                headers={name: answer.headers[name] for name in RETURNED if name in answer.headers})

    async def open_session(app: web.Application) -> None:
        app["session"] = ClientSession(connector=UnixConnector(path=str(upstream_socket), limit=64),
                                       auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application(client_max_size=64 * 1024 * 1024)  # nginx enforces the real limit
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_post("/v2/models/{model}/versions/{version:[0-9]+}/infer", infer)
    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    return app


def read_limits(path: Path) -> dict[str, ModelLimits]:
    """{model: ModelLimits} from a JSON list of Triton model configs (what Gateway writes)."""
    return {config["name"]: limits_from_config(config) for config in json.loads(Path(path).read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.serve.gateway_proxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=Path, required=True, help="unix socket to listen on")
    parser.add_argument("--upstream", type=Path, required=True, help="nginx's internal unix socket")
    parser.add_argument("--limits", type=Path, required=True, help="JSON list of the exposed models' configs")
    args = parser.parse_args(argv)
    args.listen.unlink(missing_ok=True)
    web.run_app(make_app(read_limits(args.limits), args.upstream), path=str(args.listen),
                print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
