"""bench-criteo's pieces on tiny tables: the full-size path (train, export every variant, load
each in a fresh process) and the report and chart it writes."""
import json
import re

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


@pytest.mark.parametrize("argv, message", [
    (["--prune-mlp", "0.25,1"], r"pruning ratio must be in \(0, 1\)"),
    (["--prune-mlp", "x"], "comma-separated numbers"),
    (["--prune-finetune-rows", "1000"], "needs --prune-mlp"),
    (["--prune-mlp", "0.5", "--model", "dcn_v2_criteo"], "prunes DLRM's MLPs")])
def test_bad_mlp_pruning_flags_are_refused_before_any_work(capsys, tmp_path, argv, message):
    from recdeploy.perf.criteo_bench import main
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--out", str(tmp_path)])
    assert exit.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_report_shows_mlp_params_and_model_bytes():
    from recdeploy.perf.criteo_bench import render
    variants = [{"name": name, "table_bytes": tables * 2**20, "model_bytes": model * 2**20, "mlp_params": params,
                 "test_auc": test, "test_logloss": 0.4, "export": {"file_bytes": model * 2**20},
                 "session": {"load_s": 0.1, "rss_mb": 20, "latency_ms": {256: ms}}}
                for name, tables, model, params, test, ms in [("fp32", 11.6, 12.1, 129169, 0.7992, 1.8),
                                                              ("mlp50_int4", 2.2, 2.4, 56401, 0.7951, 0.9)]]
    report = {"preset": "small", "model": "dlrm", "data": "d", "embedding_rows": 10, "dim": 16, "budget": 0.001,
              "training": {"rows": 1, "seconds": 1, "threads": 2, "samples_per_s": 1, "minutes_for_1e7_rows": 1,
                           "extrapolated": False, "samples_per_cpu_s": 1, "cpu_seconds": 1},
              "pick": variants[1], "batches": [256], "variants": variants}
    text = render(report)
    assert "| mlp50_int4 | 2.2 | 19.0% | 56,401 | 2.4 | 0.7951 | -0.0041 |" in text
    assert "19.8% of the FP32 model's bytes" in text


def test_cache_prototype_hit_rate_grows_with_the_cache(tmp_path):
    report = run_cache(tmp_path, dim=4, max_vocab=40, hash_rows=20, lookup_rows=4096, batch=64,
                       shares=(0.05, 0.5), id_scale=0.001)
    small, large = report["cached"]
    assert 0 < small["hit_rate"] < large["hit_rate"] <= 1
    assert "| 50% " in render_cache(report) and not (tmp_path / "table.npy").exists()


def test_cache_counters_are_read_from_the_metrics_text():
    from recdeploy.perf.criteo_cached import cache_counters
    text = ('# TYPE recdeploy_cache_hits_total counter\n'
            'recdeploy_cache_hits_total{model="criteo_features_cached"} 1270\n'
            'recdeploy_cache_lookups_total{model="criteo_features_cached"} 2.08e+03\n'
            'recdeploy_cache_hits_total{model="other"} 5\n')
    assert cache_counters(text) == (1270.0, 2080.0)
    assert cache_counters("nv_inference_count 3\n") == (0.0, 0.0)      # before the first request


def test_cached_serving_report_renders_each_entry_and_batch():
    from recdeploy.perf.criteo_cached import render_cached
    rows = [{"entry": "criteo_rank", "batch": 1, "requests_per_s": 572.9, "concurrency": 4, "p50_ms": 6.56,
             "p99_ms": 14.67, "hit_rate": None,
             "steps_ms": {"criteo_features": 1.535, "criteo_ranker": 0.905, "rank_topk": 0.82}},
            {"entry": "criteo_rank_cached", "batch": 1, "requests_per_s": 500.0, "concurrency": 4, "p50_ms": 7.0,
             "p99_ms": 15.0, "hit_rate": 0.9123,
             "steps_ms": {"criteo_features_cached": 1.9, "criteo_ranker_dense": 0.8, "rank_topk": 0.8}}]
    text = render_cached({"table_rows": 189510, "cache_rows": 1895, "cache_share": 0.01, "canary": "ok",
                          "rows": rows})
    assert "(1,895 of 189,510 rows cached, 1%)" in text
    assert "| criteo_rank | 1 | 572.9 | 4 | 6.56 | 14.67 | — | 1.535 | 0.905 |" in text
    assert "| criteo_rank_cached | 1 | 500.0 | 4 | 7.0 | 15.0 | 0.912 | 1.9 | 0.8 |" in text
