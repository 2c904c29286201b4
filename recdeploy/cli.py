"""The umbrella command: ``recdeploy <command> ...`` (``recdeploy --help`` lists them).

Each command is a ``main(argv) -> int`` in its stage's ``cli`` module, imported only when
that command runs, so ``recdeploy --help`` stays fast.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module holding main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("recdeploy.train.data_cli", "fetch / inspect datasets (MovieLens, synthetic)"),
    "train": ("recdeploy.train.cli", "train a model and write a checkpoint + JSON card"),
    "evaluate": ("recdeploy.train.evaluate_cli", "evaluate a checkpoint (full ranking) against popularity"),
    "compress": ("recdeploy.compress.cli", "prune / quantize a trained model and measure what it costs"),
    "export": ("recdeploy.export.cli", "export a checkpoint to ONNX and a Triton model repository"),
    "scenarios": ("recdeploy.export.scenarios_cli", "list the scenarios, the runs they export and what they serve"),
    "serve": ("recdeploy.serve.cli", "start the real tritonserver on a model repository"),
    "deploy": ("recdeploy.serve.k8s_cli", "Kubernetes manifests: Triton, gateway, HPA, KServe (sized by the server)"),
    "gateway": ("recdeploy.serve.gateway_cli", "N tritonserver replicas behind an nginx TLS gateway (token, limits)"),
    "gateway-bench": ("recdeploy.perf.gateway_bench",
                      "gateway cost, rolling update under load, a replica killed (minutes)"),
    "recommend": ("recdeploy.clients.cli", "ask the served ensemble for a user's top-K (gRPC/HTTP)"),
    "feedback": ("recdeploy.clients.feedback_cli", "log clicks / impressions, apply them to the online store"),
    "perf": ("recdeploy.perf.cli", "benchmark served entries with perf_analyzer (--lab: vs in-process)"),
    "bench": ("recdeploy.perf.bench", "every scenario served vs in-process + catalogue scale (make bench)"),
    "bench-criteo": ("recdeploy.perf.criteo_bench", "large CTR (Criteo): train, compress, export, serve, measure"),
    "update": ("recdeploy.serve.update_cli", "warm-start the served SASRec on new clicks, gate, hot-swap (canary)"),
    "replay": ("recdeploy.perf.replay", "a dataset's tail day by day: feedback, daily update, frozen vs updated"),
    "ann-bench": ("recdeploy.perf.ann_report", "ANN (FAISS) recall vs speed against exact search by catalogue size"),
    "soak": ("recdeploy.perf.soak_cli", "soak and hot-swap benchmark of a served entry (minutes)"),
    "demo": ("recdeploy.demo", "the whole loop on MovieLens-100k: train, export, serve, query, perf"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: recdeploy <command> [options]   (recdeploy <command> --help for details)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Typical flow: recdeploy train -> export -> serve -> recommend -> perf;",
              "`recdeploy demo` runs all of it on MovieLens-100k."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from recdeploy import __version__
        print(f"recdeploy {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "serve" and rest[:1] == ["soak"]:  # the soak lives with perf now
        command, rest = "soak", rest[1:]
    if command not in COMMANDS:
        print(f"recdeploy: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
