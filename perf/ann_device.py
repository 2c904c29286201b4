"""ann-bench in two processes, for a machine with many idle cores: build with all of them,
measure pinned to two (the 2-core target, without a shared box's load).

    python -m recdeploy.perf.ann_device build   --tables tables.npz --sizes 1000000 --work /tmp/ann
    taskset -c 0,1 python -m recdeploy.perf.ann_device measure --work /tmp/ann --out $OUT

Needs only numpy, faiss and tqdm (no torch, no tritonclient): ``tables.npz`` holds the
trained model's ``users`` and ``items`` (bias folded in), as ``perf/scale.py``'s
``tower_tables`` returns them. ``measure`` writes ``ann_bench.json`` rows that
``recdeploy ann-bench --keep`` renders beside the local ones.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from recdeploy.export.ann_index import PRESETS, AnnConfig, build_index
from recdeploy.perf.ann_bench import (
    Catalogue,
    exact_row,
    index_plan,
    sweep_index,
    tower_shaped,
    with_truth,
)

ARRAYS = ("users", "items", "seen", "item_ids", "popularity", "truth")


def build(tables: Path, sizes, work: Path, methods, codes, hnsw_max_items: int, label: str,
          hnsw: AnnConfig = PRESETS["hnsw"], max_nlist: int = 4096) -> None:
    work.mkdir(parents=True, exist_ok=True)
    reference = np.load(tables)
    for size in sizes:
        chosen = tuple(m for m in methods if m != "hnsw" or size <= hnsw_max_items)
        started = time.perf_counter()
        catalogue = with_truth(tower_shaped(size, reference["users"], reference["items"]))
        np.savez(work / f"catalogue_{size}.npz", **{name: getattr(catalogue, name) for name in ARRAYS})
        built = []
        for number, (config, settings) in enumerate(index_plan(size, chosen, codes=codes, max_nlist=max_nlist,
                                                               hnsw=hnsw)):
            t0 = time.perf_counter()
            faiss.write_index(build_index(catalogue.items, config), str(work / f"index_{size}_{number}.faiss"))
            built.append({"config": asdict(config), "settings": settings, "build_s": time.perf_counter() - t0,
                          "file": f"index_{size}_{number}.faiss"})
            print(f"built {size:,} {config.kind} in {built[-1]['build_s']:.0f} s", flush=True)
        (work / f"plan_{size}.json").write_text(json.dumps({"name": f"{catalogue.name} {label}".strip(),
                                                            "indexes": built}))
        print(f"catalogue {size:,}: {time.perf_counter() - started:.0f} s", flush=True)


def measure(work: Path, out: Path, threads: int, b1_calls: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for plan_file in sorted(work.glob("plan_*.json"), key=lambda p: int(p.stem.split("_")[1])):
        size = int(plan_file.stem.split("_")[1])
        plan = json.loads(plan_file.read_text())
        arrays = np.load(work / f"catalogue_{size}.npz")
        catalogue = Catalogue(plan["name"], **{name: arrays[name] for name in ARRAYS})
        exact = exact_row(catalogue, b1_calls, 4)
        rows.append(exact)
        for built in plan["indexes"]:
            index = faiss.read_index(str(work / built["file"]))
            rows += sweep_index(index, AnnConfig(**built["config"]), [tuple(s) for s in built["settings"]],
                                catalogue, exact, built["build_s"], threads, b1_calls)
            (out / "ann_bench.json").write_text(json.dumps({"rows": [r.to_dict() for r in rows]}, indent=2))
        (out / "ann_bench.json").write_text(json.dumps({"rows": [r.to_dict() for r in rows]}, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.perf.ann_device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("build", "measure"))
    parser.add_argument("--tables", type=Path, default=Path("tables.npz"))
    parser.add_argument("--sizes", default="1000000")
    parser.add_argument("--methods", default="hnsw,ivfpq")
    parser.add_argument("--codes", default="16,32", help="IVF-PQ bytes per vector")
    parser.add_argument("--hnsw-max-items", type=int, default=2_000_000)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--hnsw-ef-construction", type=int, default=80)
    parser.add_argument("--max-nlist", type=int, default=4096)
    parser.add_argument("--label", default="", help="appended to each catalogue's name (where it was measured)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ann-device"))
    parser.add_argument("--out", type=Path, default=Path("reports/ann-device"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--b1-calls", type=int, default=150)
    args = parser.parse_args(argv)
    if args.step == "build":
        build(args.tables, [int(float(s)) for s in args.sizes.split(",")], args.work,
              tuple(args.methods.split(",")), tuple(int(c) for c in args.codes.split(",")),
              args.hnsw_max_items, args.label,
              AnnConfig("hnsw", m=args.hnsw_m, ef_construction=args.hnsw_ef_construction), args.max_nlist)
    else:
        measure(args.work, args.out, args.threads, args.b1_calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
