"""ANN bench and the cost curve: tower-shaped catalogues, compressed exact scoring, the tables."""
import numpy as np
import pytest

from recdeploy.perf.ann_bench import (
    BenchRow,
    bench_catalogue,
    exact_answer,
    gaussian_like,
    tower_shaped,
    with_truth,
)
from recdeploy.perf.ann_report import best_at_recall, render_markdown
from recdeploy.perf.scale import CompressedCatalogue, measure_costs, render_costs_markdown


@pytest.fixture(scope="module")
def tables():
    """A small 'trained' model: a decaying spectrum, users ending in 1, items in a bias."""
    rng = np.random.default_rng(3)
    scale = 1.0 / np.arange(1, 9)
    users = np.c_[rng.normal(size=(300, 8)) * scale, np.ones(300)].astype(np.float32)
    items = np.c_[rng.normal(size=(500, 8)) * scale + 0.2, rng.normal(size=500) * 0.1].astype(np.float32)
    return users, items


def test_synthetic_catalogue_copies_the_towers_mean_and_covariance(tables):
    users, items = tables
    drawn = gaussian_like(items, 200_000, np.random.default_rng(0))
    assert np.allclose(drawn.mean(axis=0), items.mean(axis=0), atol=0.01)
    assert np.allclose(np.cov(drawn, rowvar=False), np.cov(items, rowvar=False), atol=0.01)
    catalogue = tower_shaped(2_000, users, items, queries=16)
    assert catalogue.items.shape == (2_000, 9) and np.all(catalogue.users[:, -1] == 1.0)
    assert catalogue.seen.shape == (16, 20) and catalogue.item_ids[0] == 1


@pytest.mark.parametrize("kind, max_error, ratio", [("fp16", 1e-2, 2), ("int8", 5e-2, 3)])
def test_compressed_catalogue_scores_near_fp32_in_less_memory(tables, kind, max_error, ratio):
    users, items = tables
    compressed = CompressedCatalogue(items, kind)
    compressed.BLOCK = 128            # several blocks: the block seams must not show
    exact = users[:32] @ items.T
    assert np.max(np.abs(compressed.scores(users[:32]) - exact)) < max_error * np.abs(exact).max()
    assert compressed.nbytes <= items.nbytes / ratio * 1.1


def test_unknown_compression_says_what_is_valid(tables):
    with pytest.raises(ValueError, match="valid: fp16, int8"):
        CompressedCatalogue(tables[1], "int4")


def test_bench_rows_have_exact_first_and_recall_against_it(tables):
    users, items = tables
    rows = bench_catalogue(tower_shaped(3_000, users, items, queries=70), threads=1, b1_calls=5, b64_calls=1,
                           hnsw_ef=(64,), codes=(4,), nprobes=(64,))
    assert [r.method for r in rows] == ["exact", "hnsw", "ivfpq"] and rows[0].recall == 1.0
    assert all(r.recall >= 0.9 for r in rows) and rows[2].index_mib < rows[1].index_mib
    text = render_markdown(rows, "note")
    assert text.count("\n| synthetic 3,000 |") == 3 and "recall@10" in text
    assert best_at_recall(rows)[0].startswith("- synthetic 3,000: ")


def test_exact_answer_is_the_same_in_chunks(tables):
    users, items = tables
    catalogue = with_truth(tower_shaped(1_000, users, items, queries=40))
    import recdeploy.perf.ann_bench as bench
    before, bench.EXACT_CHUNK_SCORES = bench.EXACT_CHUNK_SCORES, 3_000    # 3 rows a chunk
    try:
        chunked = exact_answer(catalogue)(np.arange(40), catalogue.seen)
    finally:
        bench.EXACT_CHUNK_SCORES = before
    assert np.array_equal(chunked, catalogue.truth)


def test_cost_rows_cover_every_method_with_memory_in_order(tables):
    users, items = tables
    rows = measure_costs(3_000, users, items, threads=1, queries=64, calls=5)
    assert [r.method for r in rows] == ["exact FP32", "exact FP16", "exact INT8", "ANN HNSW", "ANN IVF-PQ"]
    memory = {r.method: r.memory_mib for r in rows}
    assert memory["exact INT8"] < memory["exact FP16"] < memory["exact FP32"]
    assert rows[0].recall == 1.0 and all(r.recall >= 0.8 for r in rows)
    assert render_costs_markdown(rows).count("| 3,000 |") == 5


def test_best_at_recall_says_when_nothing_reached_it():
    row = BenchRow("c", 10, "exact", "x", 1.0, 10.0, 1.0, 10.0, 0.0, 1.0)
    low = BenchRow("c", 10, "hnsw", "ef 8", 0.5, 100.0, 1.0, 100.0, 1.0, 1.0)
    assert best_at_recall([row, low]) == ["- c: no setting reached recall@10 0.95"]


def test_synthetic_served_repository_holds_exact_and_ann_entries(tmp_path, tables):
    from recdeploy.export.scenarios import entries_of, scenario_named
    from recdeploy.perf.ann_served import write_synthetic_repository

    repo = tmp_path / "repo"
    write_synthetic_repository(repo, 3_000, "ivfpq:nlist=32:nprobe=16:overfetch=0.25,"
                               "ivfpq:nlist=32:nprobe=2:overfetch=0.25:rerank=int8:label=np2", n_users=300,
                               reference=tables)
    entries = entries_of(repo)
    assert list(entries) == ["recommend_fused", "recommend_ann_ivfpq", "recommend_ann_ivfpq_np2"]
    scenario = scenario_named("retrieval")
    wide, narrow = (scenario.quality(repo, entries[name], scenario.reference(repo, entries[name]))["overlap@10"]
                    for name in ("recommend_ann_ivfpq", "recommend_ann_ivfpq_np2"))
    assert wide >= 0.9 and narrow < wide
    assert (repo / "ann_ivfpq_np2" / "1" / "catalogue_codes.npy").is_file()


def test_served_sweep_tables_and_chart_from_lab_rows(tmp_path, tables):
    from recdeploy.perf.ann_served import write_synthetic_repository
    from recdeploy.perf.ann_served_sweep import best_lines, plot, points_of, render
    from recdeploy.perf.inprocess import InProcessResult
    from recdeploy.perf.lab import LabRow

    ann = "ivfpq:nlist=32:nprobe=16:overfetch=0.25:label=np16"
    repo = tmp_path / "repo"
    write_synthetic_repository(repo, 3_000, ann, n_users=300, reference=tables)

    def row(name, batch, served, recall):
        inprocess = InProcessResult(label=name, batch_size=batch, requests=10, recommendations_per_s=served * 2,
                                    p50_ms=1.0, p99_ms=2.0)
        return LabRow(ensemble=name, batch_size=batch, delay_us=None, instances=None, served_peak_recs_per_s=served,
                      served_peak_concurrency=4, served_p99_ms_at_peak=3.0, inprocess=inprocess,
                      quality={"overlap@10": recall})
    rows = [row("recommend_fused", 1, 50.0, 1.0), row("recommend_fused", 64, 500.0, 1.0),
            row("recommend_ann_ivfpq_np16", 1, 1000.0, 0.96), row("recommend_ann_ivfpq_np16", 64, 5000.0, 0.96)]
    points = points_of(3_000, repo, rows, ann)
    assert [p.setting for p in points] == ["exact", "IVF-PQ16 nprobe 16 kf 4"]
    exact, approx = points
    assert exact.memory_mib > 0 and 0 < approx.index_mib < approx.memory_mib
    table = render(points, "note")
    assert "| 3,000 | recommend_ann_ivfpq_np16 | IVF-PQ16 nprobe 16 kf 4 | 0.960 | 1,000 | 20.0 |" in table
    assert best_lines(points)[0].startswith("- 3,000 items: IVF-PQ16 nprobe 16 kf 4 — served recall@10 0.960 at 20.0x")
    real = points_of(3_000, repo, rows[:2], ann, catalogue="ml-1m two_tower, real")   # the exact entry alone
    assert [p.entry for p in real] == ["recommend_fused"] and "| 3,000 (ml-1m two_tower, real) |" in render(real, "")
    assert best_lines(real) == ["- 3,000 (ml-1m two_tower, real) items: no served ANN setting reached recall@10 0.95"]
    assert plot(points + real, tmp_path / "chart.png").stat().st_size > 10_000


def test_rerank_ab_measures_both_catalogues_over_one_index(tables):
    from recdeploy.perf.ann_rerank import measure_rerank, render_markdown

    users, items = tables
    rows = measure_rerank(tower_shaped(3_000, users, items, queries=70), "ivfpq:nlist=32:pq_m=4:nprobe=16:k_factor=4",
                          rounds=2, b1_calls=5, threads=1)
    fp32, int8 = rows
    assert (fp32.rerank, int8.rerank) == ("fp32", "int8") and fp32.overlap_fp32 == 1.0
    assert int8.overlap_fp32 >= 0.95 and int8.recall >= fp32.recall - 0.05 and int8.scan_recall >= 0.95
    assert fp32.index_mib == int8.index_mib and fp32.catalogue_mib / int8.catalogue_mib >= 3.2   # 9 columns + scale
    assert render_markdown(rows, "note").count("\n| INT8 |") == 1


def test_the_exact_graphs_batch_is_capped_by_its_score_matrix():
    from recdeploy.export.fused import fused_model_spec, score_rows

    assert fused_model_spec(n_items=10 ** 7).max_batch_size == 64
    assert fused_model_spec(n_items=10 ** 4).max_batch_size == 256
    assert score_rows(10 ** 7) == 64 and score_rows(10 ** 6) == 256 and score_rows(10 ** 10) == 1
    assert 64 * 10 ** 7 * 4 <= 4 << 30 < 128 * 10 ** 7 * 4
