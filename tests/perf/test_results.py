"""parse_csv on CSVs recorded from a real perf_analyzer 2.51.0 run (see fixtures/README.md)."""
from pathlib import Path

import pytest

from recdeploy.perf.config import PerfConfig
from recdeploy.perf.results import PerfCsvError, PerfResult, parse_csv

FIXTURES = Path(__file__).parent / "fixtures"


def test_grpc_sweep_sorted_by_concurrency_with_exact_numbers():
    rows = parse_csv(FIXTURES / "grpc_b1_c1-4.csv")
    assert [row.concurrency for row in rows] == [1, 2, 3, 4]  # file order is by throughput: 1,4,3,2
    assert [row.throughput_infer_per_s for row in rows] == [1074.37, 1407.06, 1295.43, 1258.1]
    first = rows[0]
    assert (first.client_send_us, first.network_server_send_recv_us, first.server_queue_us) == (4, 238, 23)
    assert (first.server_compute_input_us, first.server_compute_infer_us, first.server_compute_output_us) == \
        (20, 495, 137)
    assert first.client_recv_us == 1
    assert (first.p50_us, first.p90_us, first.p95_us, first.p99_us) == (792, 995, 1327, 3994)
    assert first.server_compute_us == 652
    assert rows[3].p99_us == 12096 and rows[3].server_queue_us == 1165
    assert first.avg_latency_us is None and first.gpu_utilization is None


def test_verbose_csv_with_empty_gpu_metrics():
    (row,) = parse_csv(FIXTURES / "http_b4_c2_verbose_metrics.csv")
    assert row.concurrency == 2 and row.throughput_infer_per_s == 3359.54
    assert row.requests_per_s(4) == pytest.approx(839.885)
    assert (row.avg_latency_us, row.request_response_us, row.response_wait_us) == (2366, 111, 2240)
    assert (row.gpu_utilization, row.gpu_power_usage, row.gpu_memory_used, row.gpu_memory_total) == \
        (None, None, None, None)
    assert row.p99_us == 7038


def test_result_peak_and_dict():
    rows = parse_csv(FIXTURES / "grpc_b1_c1-4.csv")
    result = PerfResult(PerfConfig("recommend", concurrency=(1, 2, 3, 4)), tuple(rows))
    assert result.peak().concurrency == 2
    data = result.to_dict()
    assert data["rows"][1]["recommendations_per_s"] == 1407.06 and data["rows"][1]["requests_per_s"] == 1407.06


def test_not_a_perf_csv(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Request Rate,Inferences/Second\n10,9.8\n")
    with pytest.raises(PerfCsvError, match=r"not a perf_analyzer concurrency CSV; missing columns \['Concurrency'"):
        parse_csv(bad)
    header = (FIXTURES / "grpc_b1_c1-4.csv").read_text().splitlines()[0]
    bad.write_text(header + "\n")
    with pytest.raises(PerfCsvError, match=r"header only, no measurements"):
        parse_csv(bad)
    bad.write_text(header + "\n1,fast" + ",1" * 11 + "\n")
    with pytest.raises(PerfCsvError, match=r"column 'Inferences/Second' holds 'fast', not a number"):
        parse_csv(bad)
    bad.write_text("")
    with pytest.raises(PerfCsvError, match=r"empty file"):
        parse_csv(bad)
