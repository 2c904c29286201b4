"""A gateway deployment (replicas + nginx) and its rolling update, replica by replica.

    with Deployment(Path("model_repository"), replicas=2, workdir=work, port=8443) as deployment:
        print(deployment.gateway.url, deployment.token)
        steps = rolling_update(deployment, "scorer", {"model.onnx": Path("v2/model.onnx")})

A rolling update takes one replica at a time out of rotation (nginx reload with it
``down``; requests in flight finish on the old workers), publishes the new version into that
replica's repository and loads it (serve/swap.py), asks it the start-up canary (served ==
in-process, when the repository was exported by recdeploy), and puts it back. A replica whose
canary fails is rolled back and re-admitted serving the old version, and the update stops
there (RolloutError): the remaining replicas were never touched.
"""
from __future__ import annotations

import json
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from recdeploy.export.scenarios import entries_of
from recdeploy.serve.canary import CanaryError, run_canary, wants_canary
from recdeploy.serve.gateway import Gateway, new_token, worker_user
from recdeploy.serve.gateway_config import GatewayConfigError, GatewaySpec
from recdeploy.serve.replicas import ReplicaSet
from recdeploy.serve.swap import SwapError, publish_version, rollback


class RolloutError(RuntimeError):
    """The rolling update stopped; the message says at which replica and why."""


def exposed_models(repository: Path) -> tuple[str, ...]:
    """What a client of the gateway may ask: the entries recdeploy exported (recdeploy.json),
    else the repository's ensembles; never the models they are composed of."""
    if wants_canary(repository):
        return tuple(entries_of(repository))
    found = sorted(config.parent.name for config in Path(repository).glob("*/config.pbtxt")
                   if re.search(r'platform:\s*"ensemble"', config.read_text(errors="replace")))
    if not found:
        raise GatewayConfigError(f"{repository} has no ensemble; name the models to expose (--expose NAME)")
    return tuple(found)


def composing_models(configs: list[dict]) -> tuple[str, ...]:
    """The models the ensembles among ``configs`` (Triton JSON configs) call, in order."""
    found: list[str] = []
    for config in configs:
        for step in config.get("ensemble_scheduling", {}).get("step", []):
            if step["model_name"] not in found:
                found.append(step["model_name"])
    return tuple(found)


def fetch_model_config(http_url: str, model: str) -> dict:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/config", timeout=10) as answer:
        return json.loads(answer.read())


class Deployment:
    """``replicas`` tritonservers behind one gateway; ``stop()`` ends both."""

    def __init__(self, repository: Path, replicas: int, workdir: Path, port: int, host: str = "127.0.0.1",
                 models: tuple[str, ...] = (), token: str | None = None, cert: Path | None = None,
                 key: Path | None = None, http_inference: str = "validated", verify_manifest: bool = True,
                 **limits):
        self.repository, self.workdir = Path(repository), Path(workdir)
        self.models = models or exposed_models(self.repository)
        self.token = token or new_token()
        self.replicas = ReplicaSet(self.repository, replicas, self.workdir / "replicas",
                                   verify_manifest=verify_manifest)
        self._gateway_args = dict(port=port, host=host, cert=cert, key=key, http_inference=http_inference, **limits)
        self.gateway: Gateway | None = None

    def start(self, progress=print) -> Deployment:
        self.replicas.start(progress)
        try:
            configs = [fetch_model_config(self.replicas.http_urls[0], m) for m in self.models]
            spec = GatewaySpec(prefix=self.workdir / "gateway", models=self.models, token=self.token,
                               http_upstreams=self.replicas.http_urls, grpc_upstreams=self.replicas.grpc_urls,
                               worker_user=worker_user(), metadata_models=composing_models(configs),
                               **self._gateway_args)
            self.gateway = Gateway(spec, configs).start()
        except BaseException:
            self.replicas.stop()
            raise
        return self

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.replicas.stop()

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RolloutStep:
    replica: int
    version: int
    drain_s: float          # nginx reload until no old worker holds a request
    publish_s: float        # copy + load of the new version (ensembles reload with it)
    canary_s: float
    readmit_s: float


def rolling_update(deployment: Deployment, model: str, files: dict[str, Path], canary: bool = True,
                   progress=print) -> list[RolloutStep]:
    gateway, replicas = deployment.gateway, deployment.replicas
    if gateway is None:
        raise RolloutError("start() the deployment first")
    steps = []
    # one replica cannot be drained (nothing else would serve): Triton's own load keeps serving
    drain = gateway.drain if replicas.count > 1 else (lambda _: None)
    for i in range(replicas.count):
        repo, url = replicas.repository_of(i), replicas.grpc_urls[i]
        t0 = time.monotonic()
        drain({i})
        t1 = time.monotonic()
        try:
            version = publish_version(repo, model, files, url)
        except SwapError as error:
            drain(set())
            raise RolloutError(f"replica {i}: {error}; replicas {list(range(i))} were updated") from error
        t2 = time.monotonic()
        if canary and wants_canary(repo):
            try:
                progress(run_canary(repo, url).summary())
            except CanaryError as error:
                rollback(repo, model, url, retired=deployment.workdir / "retired" / f"replica-{i}")
                drain(set())
                raise RolloutError(f"replica {i}: the canary failed on version {version}, rolled back; "
                                   f"replicas {list(range(i))} were updated:\n{error}") from error
        t3 = time.monotonic()
        drain(set())
        t4 = time.monotonic()
        steps.append(RolloutStep(i, version, t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        progress(f"replica {i}: {model} version {version} serving (drain {t1 - t0:.1f} s, "
                 f"publish {t2 - t1:.1f} s, canary {t3 - t2:.1f} s, re-admit {t4 - t3:.1f} s)")
    return steps
