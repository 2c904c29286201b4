"""``recdeploy bench-criteo --scale-only``: the full-size tables without the full-size data.

    recdeploy bench-criteo --scale-only --out reports/bench-criteo-scale      # ~15 GB RAM peak

What the full size costs, measured where training to convergence is out of reach: a DLRM with
Kaggle's per-field vocabularies capped like the ``full`` preset (>= 10^7 rows x 64, >= 2.5 GB
FP32) trains for ``--train-rows`` rows of synthetic ids (samples/s and samples per CPU-second
at that table size), then its FP32, row-wise INT8 / INT4 and mixed-precision forms (training
counts from the same Zipf draw) are exported to ONNX, FP32 with its weights in ``.data``
beside the graph past protobuf's 2 GiB, each parity-checked against PyTorch, and loaded in a
fresh process each (load time, RSS, latency per batch). AUC at this size comes from a trained
run (``--preset small`` / ``medium``); these weights have only seen ``--train-rows`` rows.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from recdeploy.compress.criteo_tables import MixedTable, model_weight, table_bytes, with_tables
from recdeploy.compress.rowwise import RowwiseTable
from recdeploy.export.criteo_cache import CachedTable
from recdeploy.export.scenarios.criteo import export_ranker
from recdeploy.perf.criteo_measure import file_bytes, measure_session
from recdeploy.train.criteo.optim import RowWiseAdagrad
from recdeploy.train.criteo.schema import KAGGLE_CARDINALITIES, MISSING_ID, RESERVED_ROWS, dense_transform
from recdeploy.train.criteo.synthetic import SyntheticCriteo
from recdeploy.train.criteo.vocabulary import hashed_rows
from recdeploy.train.models import build_model
from recdeploy.train.onnx_io import check_parity
from recdeploy.train.tasks.criteo_ctr import DENSE_LR, table_parameters


def full_rows_per_field(max_vocab: int, hash_rows: int) -> tuple[int, ...]:
    """The ``full`` preset's table sizes when every field's ids fill its vocabulary."""
    return tuple(RESERVED_ROWS + (c if c <= max_vocab else max_vocab + hash_rows) for c in KAGGLE_CARDINALITIES)


def synthetic_batches(rows_per_field, n: int, seed: int = 0, id_scale: float = 1.0):
    """(labels, dense, sparse) tensors of n synthetic rows, ids hashed onto the tables."""
    chunk = SyntheticCriteo(rows=n, chunk_rows=n, seed=seed, scale=id_scale).chunk(0)
    sparse = np.stack([np.where(chunk.ids[:, f] == MISSING_ID, 0,
                                hashed_rows(chunk.ids[:, f], RESERVED_ROWS, rows - RESERVED_ROWS))
                       for f, rows in enumerate(rows_per_field)], axis=1)
    return (torch.from_numpy(chunk.labels), torch.from_numpy(dense_transform(chunk.dense)),
            torch.from_numpy(sparse.astype(np.int64)))


def train_throughput(model, batches, batch_size: int, lr: float) -> dict:
    labels, dense, sparse = batches
    tables, rest = table_parameters(model)
    sparse_opt, dense_opt = RowWiseAdagrad(tables, lr=lr), torch.optim.Adam(rest, lr=DENSE_LR)
    model.train()
    started, cpu = time.perf_counter(), time.process_time()
    for rows in torch.arange(len(labels)).split(batch_size):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(dense[rows], sparse[rows]), labels[rows])
        sparse_opt.zero_grad(set_to_none=True)
        dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        sparse_opt.step()
        dense_opt.step()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    model.eval()
    return {"rows": len(labels), "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
            "samples_per_s": round(len(labels) / seconds, 1),
            "samples_per_cpu_s": round(len(labels) / cpu_seconds, 1),
            "minutes_for_1e7_rows": round(1e7 / (len(labels) / seconds) / 60, 1), "extrapolated": True}


def run_scale(out: Path, dim: int = 64, max_vocab: int = 1_000_000, hash_rows: int = 2_000_000,
              train_rows: int = 100_000, batch_size: int = 2048, lr: float = 0.05,
              batches=(1, 64, 256, 2048), id_scale: float = 1.0, seconds: float = 1.0) -> dict:
    rows_per_field = full_rows_per_field(max_vocab, hash_rows)
    torch.manual_seed(0)
    model = build_model("dlrm", rows_per_field=rows_per_field, dim=dim)
    weight = model_weight(model)
    print(f"  tables: {weight.shape[0]:,} rows x {dim} = {table_bytes(model) / 2**30:.2f} GiB FP32", flush=True)
    data = synthetic_batches(rows_per_field, train_rows, id_scale=id_scale)
    training = train_throughput(model, data, batch_size, lr)
    print(f"  training: {training}", flush=True)
    counts = np.zeros(weight.shape[0], dtype=np.int64)      # the rows those batches touched
    offsets = np.r_[0, np.cumsum(rows_per_field)[:-1]]
    np.add.at(counts, (data[2].numpy() + offsets).reshape(-1), 1)
    probe = {"DENSE_X": data[1][:512].numpy().reshape(8, 64, 13), "SPARSE": data[2][:512].numpy().reshape(8, 64, 26)}
    variants = {"fp32": lambda: model,
                "int8": lambda: with_tables(model, RowwiseTable.quantize(weight, 8)),
                "int4": lambda: with_tables(model, RowwiseTable.quantize(weight, 4)),
                "mixed_h2_p1": lambda: with_tables(model, MixedTable.build(weight, counts, 0.02, 1))}
    rows = []
    for name, make in variants.items():
        module = make()
        started = time.perf_counter()
        path = export_ranker(module, probe, out / "onnx" / name / "model.onnx", constant_folding=name == "fp32")
        export_s = time.perf_counter() - started
        parity = check_parity(module, path, probe, ["SCORES"], atol=1e-4, rtol=1e-4).max_abs_diff["SCORES"]
        session = measure_session(path, rows_per_field, batches, seconds=seconds)
        tables, size = table_bytes(module), file_bytes(path)
        external = path.with_name("model.onnx.data").is_file()
        rows.append({"name": name, "table_bytes": tables, "file_bytes": size, "external_data": external,
                     "export_s": round(export_s, 1), "parity_max_abs_diff": parity, "session": session})
        print(f"  {name}: tables {tables / 2**20:,.0f} MiB, file {size / 2**20:,.0f} MiB (external data: "
              f"{external}), parity {parity:.1e}, load {session['load_s']:.1f} s, RSS {session['rss_mb']:,.0f} MB, "
              f"latency ms {session['latency_ms']}", flush=True)
        del module
    return {"embedding_rows": int(weight.shape[0]), "dim": dim, "training": training, "variants": rows}


def render_scale(report: dict) -> str:
    t, full = report["training"], report["variants"][0]
    lines = ["# Criteo bench at full table size (random ids, not trained to convergence)", "",
             f"- tables: {report['embedding_rows']:,} rows x {report['dim']} "
             f"({full['table_bytes'] / 2**30:.2f} GiB FP32)",
             f"- training at this size: {t['rows']:,} rows, {t['samples_per_s']:,.0f} samples/s wall, "
             f"{t['samples_per_cpu_s']:,.0f} samples per CPU-second -> {t['minutes_for_1e7_rows']} min per "
             "10^7 rows (extrapolated, wall clock on a shared machine)", "",
             "| variant | tables MiB | of FP32 | ONNX MiB | .data | parity | load s | RSS after load MB | peak RSS MB |"
             + "".join(f" ms @{b} |" for b in full["session"]["latency_ms"]),
             "|---|---:|---:|---:|---|---:|---:|---:|---:|" + "---:|" * len(full["session"]["latency_ms"])]
    for v in report["variants"]:
        s = v["session"]
        share = v["table_bytes"] / full["table_bytes"]
        lines.append(f"| {v['name']} | {v['table_bytes'] / 2**20:,.0f} | {share:.1%} | "
                     f"{v['file_bytes'] / 2**20:,.0f} | {'yes' if v['external_data'] else 'no'} | "
                     f"{v['parity_max_abs_diff']:.1e} | {s['load_s']:.1f} | {s['rss_mb']:,.0f} | {s['peak_mb']:,.0f} | "
                     + " | ".join(f"{ms:.2f}" for ms in s["latency_ms"].values()) + " |")
    return "\n".join(lines) + "\n"


def run_cache(out: Path, dim: int = 32, max_vocab: int = 1_000_000, hash_rows: int = 2_000_000,
              lookup_rows: int = 200_000, batch: int = 256, shares=(0.01, 0.05, 0.2),
              id_scale: float = 1.0) -> dict:
    """The cached table on the full preset's row count: hit rate and lookups/s of a
    memory-mapped table behind a CLOCK cache of ``share`` of its rows, against a gather from
    RAM. ``index_mb`` is the row -> slot index, paid once whatever the share."""
    rows_per_field = full_rows_per_field(max_vocab, hash_rows)
    n_rows = int(sum(rows_per_field))
    path = out / "table.npy"
    out.mkdir(parents=True, exist_ok=True)
    table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_rows, dim))
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, 1 << 20):
        stop = min(n_rows, start + (1 << 20))
        table[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    table.flush()
    del table
    _, _, sparse = synthetic_batches(rows_per_field, lookup_rows, id_scale=id_scale)
    rows = sparse.numpy()[:len(sparse) // batch * batch] + np.r_[0, np.cumsum(rows_per_field)[:-1]]
    index = rows.reshape(-1, batch * 26)
    in_ram = np.load(path)
    started = time.perf_counter()
    for b in index:
        in_ram[b]
    ram_rate = index.size / (time.perf_counter() - started)
    del in_ram
    results = []
    for share in shares:
        cached = CachedTable(path, capacity=int(share * n_rows))
        warm = len(index) // 5
        for b in index[:warm]:
            cached.rows(b)
        cached.reset_stats()
        started = time.perf_counter()
        for b in index[warm:]:
            got = cached.rows(b)
        rate = index[warm:].size / (time.perf_counter() - started)
        assert np.array_equal(got, np.load(path, mmap_mode="r")[index[-1]])
        results.append({"cache_share": share, "cache_rows": cached.capacity,
                        "cache_mb": round(cached.store.nbytes / 2**20, 1),
                        "index_mb": round(cached.slot_of.nbytes / 2**20, 1), "hit_rate": round(cached.hit_rate, 4),
                        "lookups_per_s": round(rate), "ms_per_batch": round(1000 * batch * 26 / rate, 3)})
        print(f"  cache {share:.0%} of rows ({results[-1]['cache_mb']} MB): hit rate {cached.hit_rate:.3f}, "
              f"{rate:,.0f} lookups/s", flush=True)
    path.unlink()
    return {"table_rows": n_rows, "dim": dim, "table_mb": round(n_rows * dim * 4 / 2**20),
            "lookups": int(index.size), "batch_impressions": batch,
            "in_ram_lookups_per_s": round(ram_rate), "in_ram_ms_per_batch": round(1000 * batch * 26 / ram_rate, 3),
            "cached": results}


def render_cache(report: dict) -> str:
    lines = [f"Cached table: {report['table_rows']:,} rows x {report['dim']} FP32 "
             f"({report['table_mb']:,} MB) memory-mapped, {report['lookups']:,} Zipf-skewed lookups in batches "
             f"of {report['batch_impressions']} impressions x 26 fields; gather from RAM: "
             f"{report['in_ram_lookups_per_s']:,} lookups/s ({report['in_ram_ms_per_batch']} ms a batch).", "",
             "| cache (share of rows) | cache MB | index MB | hit rate | lookups/s | ms per batch |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in report["cached"]:
        lines.append(f"| {r['cache_share']:.0%} ({r['cache_rows']:,} rows) | {r['cache_mb']} | {r['index_mb']} | "
                     f"{r['hit_rate']:.3f} | "
                     f"{r['lookups_per_s']:,} | {r['ms_per_batch']} |")
    return "\n".join(lines) + "\n"
