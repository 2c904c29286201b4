"""Report files from recorded perf_analyzer data."""
import csv
import json
from pathlib import Path

import pytest

from recdeploy.perf.config import PerfConfig
from recdeploy.perf.report import render_markdown, render_table, write_report
from recdeploy.perf.results import PerfResult, parse_csv

FIXTURES = Path(__file__).parent / "fixtures"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def results():
    b1 = PerfResult(PerfConfig("recommend", concurrency=(1, 2, 3, 4)),
                    tuple(parse_csv(FIXTURES / "grpc_b1_c1-4.csv")))
    b4 = PerfResult(PerfConfig("recommend", url="127.0.0.1:8000", protocol="http", concurrency=(2,), batch_size=4),
                    tuple(parse_csv(FIXTURES / "http_b4_c2_verbose_metrics.csv")))
    return [b1, b4]


def test_table_rows_hold_the_numbers(results):
    lines = render_table(results[0]).splitlines()
    assert lines[0].startswith("| concurrency | requests/s | inferences/s (= recs/s) | p50 ms | p90 ms | p99 ms |")
    assert len(lines) == 2 + 4
    assert lines[2] == "| 1 | 1074.4 | 1074.4 | 0.79 | 0.99 | 3.99 | 0.02 | 0.02 / 0.49 / 0.14 |"
    assert lines[5] == "| 4 | 1258.1 | 1258.1 | 2.29 | 5.62 | 12.10 | 1.17 | 0.03 / 0.46 / 0.12 |"
    batched = render_table(results[1]).splitlines()
    assert batched[2] == "| 2 | 839.9 | 3359.5 | 2.11 | 3.23 | 7.04 | 0.72 | 0.04 / 0.99 / 0.09 |"


def test_markdown_sections_and_peak(results):
    text = render_markdown(results, {"dataset": "mock"})
    assert "- **dataset**: mock" in text
    assert "## recommend\n" in text and "## recommend (batch 4)\n" in text
    assert "Peak: **1407.1 recommendations/s** at concurrency 2 (p99 3.51 ms)" in text
    assert "![throughput vs p99 latency](throughput_vs_p99.png)" in text


def test_write_report_files(tmp_path, results):
    files = write_report(results, tmp_path / "rep", {"dataset": "mock"})
    assert files.plot.read_bytes()[:8] == PNG_MAGIC and files.plot.stat().st_size > 5000
    rows = list(csv.DictReader(files.csv.open()))
    assert len(rows) == 5
    assert rows[4]["model"] == "recommend" and rows[4]["batch_size"] == "4"
    assert float(rows[4]["requests_per_s"]) == pytest.approx(839.885)
    assert float(rows[4]["recommendations_per_s"]) == 3359.54
    assert float(rows[0]["p99_us"]) == 3994
    summary = json.loads(files.summary.read_text())
    assert summary["metadata"] == {"dataset": "mock"}
    assert summary["results"][0]["peak"] == {"concurrency": 2, "recommendations_per_s": 1407.06,
                                             "requests_per_s": 1407.06, "p99_ms": 3.507}
    assert summary["results"][1]["config"]["batch_size"] == 4
    assert "| 3 | 1295.4 | 1295.4 | 2.13 | 2.79 | 7.12 |" in files.markdown.read_text()


def test_write_report_needs_rows(tmp_path):
    with pytest.raises(ValueError, match=r"at least one result"):
        write_report([], tmp_path)
