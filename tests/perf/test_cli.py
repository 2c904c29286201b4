"""recdeploy perf CLI, in-process, with a stand-in perf_analyzer that replays a recorded CSV."""
import json
import stat
from pathlib import Path

import pytest

from recdeploy.perf.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--users" in out and "equals recommendations/s" in out and "PERF_ANALYZER" in out


def test_bad_users_exit_2(tmp_path, capsys):
    assert main(["--model", "recommend", "--users", "a,b", "--out", str(tmp_path)]) == 2
    assert "user ids must be integers" in capsys.readouterr().err


def test_bad_concurrency_exit_2(tmp_path, capsys):
    assert main(["--model", "recommend", "--users", "1,2", "--concurrency", "4,2", "--out", str(tmp_path)]) == 2
    assert "strictly increasing" in capsys.readouterr().err


def test_end_to_end_with_replayed_csv(tmp_path, monkeypatch, capsys):
    line = {1: 2, 2: 5}  # fixture line holding each level (file is sorted by throughput)
    rows = (FIXTURES / "grpc_b1_c1-4.csv").read_text().splitlines()
    fake = tmp_path / "pa"
    fake.write_text("#!/bin/sh\nfor a; do last=\"$a\"; done\nc=$(echo \"${10}\" | cut -d: -f1)\n"
                    + "".join(f'[ "$c" = {c} ] && printf "%s\\n%s\\n" "{rows[0]}" "{rows[n - 1]}" > "$last"\n'
                              for c, n in line.items()) + "exit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PERF_ANALYZER", str(fake))
    out = tmp_path / "rep"
    assert main(["--model", "recommend", "--users", "11,22,33", "--concurrency", "1,2", "--out", str(out),
                 "--no-progress",
                 "--dataset", "mock"]) == 0
    assert json.loads((out / "input_data.json").read_text())["data"][2]["USER_ID"] == {"content": [33], "shape": [1]}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metadata"]["dataset"] == "mock" and summary["metadata"]["users"] == 3
    assert [r["concurrency"] for r in summary["results"][0]["rows"]] == [1, 2]
    assert summary["results"][0]["peak"]["recommendations_per_s"] == 1407.06
    assert "| 2 | 1407.1 | 1407.1 | 1.33 |" in capsys.readouterr().out
