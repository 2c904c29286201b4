"""1 process against N, interleaved: ``make bench-ddp`` or

    python -m recdeploy.train.ddp_bench --model two_tower --epochs 1 --nproc 2 --rounds 2

Each round trains the same config once in one process and once on N ranks (the order
alternates between rounds, so a load that drifts over the run hits both sides alike) and
records the wall time of each, spawning and data loading included, with the test metrics.
Prints a table and writes JSON to --out. On a machine shared with other jobs the times are
what that load allowed; read the ratio of one round, not the absolute seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from recdeploy.train.cli import run_training
from recdeploy.train.config import TrainConfig
from recdeploy.train.launch import launch_training


def time_one(config: TrainConfig, nproc: int) -> dict:
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        if nproc == 1:
            metrics = run_training(config, Path(out), progress=False)["metrics"]
        else:
            metrics = launch_training(config, Path(out), nproc, progress=False, quiet=True)[0]["metrics"]
        return {"nproc": nproc, "seconds": round(time.perf_counter() - started, 1), "test": metrics["test"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.train.ddp_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="two_tower")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("reports/ddp_bench.json"))
    args = parser.parse_args(argv)
    config = TrainConfig.for_model(args.model, epochs=args.epochs)
    runs = []
    for round_ in range(args.rounds):
        order = (1, args.nproc) if round_ % 2 == 0 else (args.nproc, 1)
        for nproc in order:
            runs.append({"round": round_, **time_one(config, nproc)})
            print(f"round {round_}  {nproc} process(es): {runs[-1]['seconds']:>7.1f} s  test {runs[-1]['test']}",
                  flush=True)
    for round_ in range(args.rounds):
        one, many = (next(r["seconds"] for r in runs if r["round"] == round_ and r["nproc"] == n)
                     for n in (1, args.nproc))
        print(f"round {round_}: {args.nproc} processes take {many / one:.2f}x the time of one")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "epochs": args.epochs, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
