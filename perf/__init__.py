"""recdeploy.perf: perf_analyzer driver, input data from real users, sweeps, reports, plots.

    recdeploy perf --url 127.0.0.1:8001 --model recommend --users 1,2,3,4 --concurrency 1,2,4
    python -m recdeploy.perf --help

Library: analyzer.run_sweep(PerfConfig(...), out_dir) -> PerfResult, then
report.write_report([result, ...], out_dir, metadata).
"""
