"""perf.ab: entries' in-process pipelines timed in interleaved rounds; served rounds rendered."""
from recdeploy.perf.ab import main, render_served


def test_inprocess_ab_of_two_entries_writes_a_paired_table(repository, tmp_path, capsys):
    out = tmp_path / "ab.md"
    assert main(["--repository", str(repository), "--model", "recommend_fused,fused_retrieval_aoti",
                 "--batch-size", "1,8", "--rounds", "2", "--threads", "1", "--out", str(out)]) == 0
    table = out.read_text()
    assert "2 interleaved rounds" in table and "ratio = median of per-round ratios to recommend_fused" in table
    rows = [line for line in table.splitlines() if line.startswith("| recommend_fused |")
            or line.startswith("| fused_retrieval_aoti |")]
    assert len(rows) == 4 and all(row.rstrip(" |").split("|")[-1].strip() for row in rows)
    assert "| recommend_fused | 1 |" in table and table.count("| 1.00 |") >= 2     # the baseline against itself
    assert table in capsys.readouterr().out


def test_served_rounds_render_medians_ranges_and_paired_ratios():
    table = render_served({"a": {1: [100.0, 120.0, 90.0]}, "b": {1: [80.0, 60.0, 90.0]}}, 8, "http", 3)
    assert "concurrency 8, 3 interleaved rounds" in table
    assert "| a | 1 | 100 | 90–120 | 1.00 |" in table and "| b | 1 | 80 | 60–90 | 0.80 |" in table
