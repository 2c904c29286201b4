"""gpu_report.md from gpu_summary.json (perf/gpu_bench.py): tables first, then parts and notes."""
from __future__ import annotations


def _num(value, digits: int = 0) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{value:,.{digits}f}"


def _inprocess(data: dict) -> list[str]:
    floor = data.get("floor", {})
    nominal = floor.get("floor_us_nominal")
    rows = [r for r in data.get("inprocess", []) if "us" in r]
    if not rows:
        return []
    lines = ["## In-process, per call (device-resident inputs; CUDA events)", "",
             f"Floor: one read of the {_num(floor.get('catalogue_mb'), 0)} MB FP16 catalogue = "
             f"{_num(nominal, 1)} µs at the nominal {_num(floor.get('nominal_tb_s'), 1)} TB/s "
             f"({_num(floor.get('floor_us_measured'), 1)} µs at the measured copy bandwidth "
             f"{_num(floor.get('measured_tb_s'), 2)} TB/s). × floor = time / nominal floor.", "",
             "| variant | batch | µs / call | p10–p90 µs | recs/s | × floor |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['batch']} | {_num(r['us'], 1)} | {_num(r['p10_us'], 0)}–"
                     f"{_num(r['p90_us'], 0)} | {_num(r['recs_per_s'])} | "
                     f"{_num(r['us'] / nominal, 1) if nominal else '–'} |")
    failed = [r for r in data.get("inprocess", []) if "error" in r]
    lines += [f"- {r['variant']} at batch {r['batch']}: {r['error']}" for r in failed]
    lines += ["", "Variants:", ""] + [f"- `{name}`: {what}" for name, what in data.get("variants", {}).items()]
    copies = data.get("end_to_end", [])
    if copies:
        lines += ["", "With the host copies a backend pays (numpy in, numpy out, host clock):", "",
                  "| variant | batch | µs / call | recs/s |", "|---|---:|---:|---:|"]
        lines += [f"| {r['variant']} | {r['batch']} | {_num(r['us'], 1)} | {_num(r['recs_per_s'])} |" for r in copies]
    return lines + [""]


def _parity(data: dict) -> list[str]:
    checks = data.get("parity", {})
    if not checks:
        return []
    lines = ["## Answers against the FP32 reference (graph_fp32, one batch)", "",
             "| variant | top-K overlap | identical lists | max |score diff| |", "|---|---:|---:|---:|"]
    for name, c in checks.items():
        if "error" in c:
            lines.append(f"| {name} | error: {c['error'][:120]} | | |")
        else:
            lines.append(f"| {name} | {c['overlap']:.4f} | {c['same_lists']:.3f} | {c['max_score_diff']:.2e} |")
    return lines + [""]


def _served(data: dict) -> list[str]:
    served = data.get("served", {})
    rows = served.get("rows", [])
    lines = []
    if rows:
        lines += ["## Served (tritonserver 2.51, perf_analyzer, gRPC)", "",
                  "| model | batch | concurrency | recs/s | p50 ms | p99 ms | server compute µs |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['concurrency']} | {_num(r['served_recs_per_s'])} | "
                  f"{_num(r['p50_ms'], 2)} | {_num(r['p99_ms'], 2)} | {_num(r['server_compute_us'])} |"
                  for r in rows if "served_recs_per_s" in r]
        lines += [f"- {r['model']} batch {r['batch']}: {r['error']}" for r in rows if "error" in r]
        lines.append("")
    checks = served.get("checks", {})
    if checks:
        lines += ["Served answers vs their in-process reference:", ""]
        lines += [f"- {name}: " + (c["error"] if "error" in c else
                                  f"overlap {c['overlap']:.4f}, max |score diff| {c['max_score_diff']:.2e}")
                  for name, c in checks.items()]
        lines.append("")
    return lines


def render(data: dict) -> str:
    settings = data.get("settings", {})
    lines = ["# GPU benchmark: fused retrieval (perf/gpu_bench.py)", "",
             f"Machine: {data.get('machine', '?')}. Catalogue {_num(settings.get('items'))} items × "
             f"{settings.get('dim')}, {_num(settings.get('users'))} users, top-{settings.get('k')}. "
             f"Wall time {_num(data.get('elapsed_s'), 0)} s.", ""]
    ratios = data.get("ratios", {})
    if ratios:
        lines += ["## Ratios", ""] + [f"- {name}: {value}" for name, value in ratios.items()] + [""]
    lines += _inprocess(data) + _parity(data)
    aoti = data.get("aoti", {})
    if aoti:
        lines += ["## AOTInductor package on the device", ""] + \
                 [f"- {key}: {value}" for key, value in aoti.items() if key != "rows"] + [""]
    lines += _served(data)
    for name, table in data.get("profile", {}).items():
        lines += [f"## Profile: {name} (top kernels and ops by device time, per call)", "",
                  "| name | µs / call | calls |", "|---|---:|---:|"]
        lines += [f"| `{row['name']}` | {row['us_per_call']:.1f} | {row['calls']} |" for row in table] + [""]
    availability = data.get("availability", {})
    if availability:
        lines += ["## Other runtimes", ""] + [f"- {name}: {text}" for name, text in availability.items()] + [""]
    lines += ["## Parts", "", "| part | status | seconds | reason |", "|---|---|---:|---|"]
    for name, part in data.get("parts", {}).items():
        reason = str(part.get("reason", "")).replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {name} | {part['status']} | {part.get('seconds', '')} | {reason} |")
    lines += ["", *[f"- {note}" for note in data.get("notes", [])]]
    return "\n".join(lines) + "\n"


def ratios(data: dict, served_batch: int, best: str) -> dict[str, str]:
    """The numbers the issue asks for, from what was measured (absent parts leave them out):
    the best in-process time over the floor at each batch size, served GPU / CPU, served over
    in-process. ``best``: the GPU-shaped variant that was exported and served as gpu_fast."""
    out: dict[str, str] = {}
    nominal = data.get("floor", {}).get("floor_us_nominal")
    best_at: dict[int, dict] = {}
    for row in data.get("inprocess", []):
        if "us" in row and (row["batch"] not in best_at or row["us"] < best_at[row["batch"]]["us"]):
            best_at[row["batch"]] = row
    if nominal:
        for batch, row in sorted(best_at.items()):
            out[f"in-process best at batch {batch}"] = (
                f"{row['variant']} {row['us']:.1f} µs = {row['us'] / nominal:.1f}× the floor (target ≤ 4×)")
    served = {(r["model"], r["batch"]): r["served_recs_per_s"]
              for r in data.get("served", {}).get("rows", []) if "served_recs_per_s" in r}
    gpu = max((v for (m, b), v in served.items() if b == served_batch and m != "cpu_fp32"), default=None)
    cpu = served.get(("cpu_fp32", served_batch))
    if gpu and cpu:
        out[f"served GPU / CPU at batch {served_batch}"] = f"{gpu / cpu:.1f}× ({gpu:,.0f} vs {cpu:,.0f} recs/s)"
    top = best_at.get(served_batch)
    if gpu and top:
        out[f"served best / in-process best at batch {served_batch}"] = (
            f"{gpu / top['recs_per_s']:.2f} (served {gpu:,.0f}; in-process {top['variant']} "
            f"{top['recs_per_s']:,.0f} recs/s; target ≥ 0.5)")
    own = next((r for r in data.get("inprocess", []) if r["variant"] == best
                and r["batch"] == served_batch and "recs_per_s" in r), None)
    fast = served.get(("gpu_fast", served_batch))
    if own and fast:
        out[f"served gpu_fast / its in-process {best} at batch {served_batch}"] = (
            f"{fast / own['recs_per_s']:.2f} ({fast:,.0f} vs {own['recs_per_s']:,.0f} recs/s)")
    return out
