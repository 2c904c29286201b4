"""bench-criteo's pieces on tiny tables: the full-size path (train, export every variant, load
each in a fresh process) and the report and chart it writes."""
import json

import pytest

from recdeploy.perf.criteo_measure import pareto_chart
from recdeploy.perf.criteo_scale import full_rows_per_field, render_cache, render_scale, run_cache, run_scale


def test_full_preset_tables_pass_ten_million_rows():
    rows = full_rows_per_field(1_000_000, 2_000_000)
    assert sum(rows) >= 10**7 and sum(rows) * 64 * 4 >= 2.5e9


def test_scale_path_on_tiny_tables(tmp_path):
    report = run_scale(tmp_path, dim=4, max_vocab=40, hash_rows=20, train_rows=3000, batches=(1, 16),
                       id_scale=0.001, seconds=0.05)
    names = [v["name"] for v in report["variants"]]
    assert names == ["fp32", "int8", "int4", "mixed_h2_p1"]
    full = report["variants"][0]
    for variant in report["variants"]:
        assert variant["parity_max_abs_diff"] < 1e-4
        assert variant["session"]["latency_ms"][16] > 0 and variant["session"]["load_s"] > 0
        if variant["name"] != "fp32":
            assert variant["table_bytes"] < full["table_bytes"]
    assert report["training"]["samples_per_cpu_s"] > 0
    text = render_scale(json.loads(json.dumps(report)))
    assert "| int4 |" in text and "ms @16" in text


def test_pareto_chart(tmp_path):
    rows = [{"name": "fp32", "table_bytes": 2**24, "test_auc": 0.80, "latency_ms": {256: 3.0}},
            {"name": "int4", "table_bytes": 2**22, "test_auc": 0.7995},
            {"name": "bad", "table_bytes": 2**20, "test_auc": 0.78}]
    path = pareto_chart(rows, tmp_path / "p.png", budget=0.001)
    assert path.stat().st_size > 10_000


def test_unknown_preset_is_refused():
    from recdeploy.perf.criteo_bench import main
    with pytest.raises(SystemExit):
        main(["--preset", "huge"])


def test_cache_prototype_hit_rate_grows_with_the_cache(tmp_path):
    report = run_cache(tmp_path, dim=4, max_vocab=40, hash_rows=20, lookup_rows=4096, batch=64,
                       shares=(0.05, 0.5), id_scale=0.001)
    small, large = report["cached"]
    assert 0 < small["hit_rate"] < large["hit_rate"] <= 1
    assert "| 50% " in render_cache(report) and not (tmp_path / "table.npy").exists()
