"""`recdeploy compress` end to end on the small trained run: report files, budget pick, and
variants written beside the full model in a copy of the exported repository."""
import json

import numpy as np

from recdeploy.compress.cli import main


def test_compress_writes_report_and_serves_variants_beside_full_model(trained_run, tmp_path, capsys):
    from recdeploy.export.cli import main as export_main

    run, _ = trained_run
    repo = tmp_path / "repo"
    out = tmp_path / "report"
    code = main(["--run", str(run), "--methods", "int8-dynamic,rowwise-int8", "--rounds", "2",
                 "--batches", "1,8", "--quality-budget", "2%", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert f"recdeploy export --run {run} --variants best --compress-dir {out}" in capsys.readouterr().out
    # compress hands its variants to export, which serves them beside the full model
    code = export_main(["--run", str(run), "--repository", str(repo), "--variants", "all",
                        "--compress-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    for name in ("report.md", "report.json", "report.csv", "pareto.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    assert set(rows) == {"fp32", "int8-dynamic", "rowwise-int8"}
    assert rows["fp32"]["x_smaller"] == 1.0 and rows["rowwise-int8"]["x_smaller"] > 3
    assert "MatMulInteger:1" in rows["int8-dynamic"]["quantized_ops"]
    assert all(row["rel_loss_pct"] < 2 for row in rows.values())
    assert report["best"] in ("int8-dynamic", "rowwise-int8")

    from recdeploy.export.repository import verify_manifest
    from recdeploy.export.scenarios.retrieval import InProcessRecommender

    verify_manifest(repo)
    meta = json.loads((repo / "recdeploy.json").read_text())
    assert {"recommend", "recommend_int8_dynamic", "recommend_rowwise_int8"} <= set(meta["ensembles"])
    assert meta["variants"]["rowwise_int8"]["methods"] == [{"method": "rowwise", "bits": 8}]
    users = np.load(repo / "feature_lookup" / "1" / "user_ids.npy")[:50]
    full, _ = InProcessRecommender(repo).recommend(users, k=10)
    small, _ = InProcessRecommender(repo, variant_scorer="scorer_rowwise_int8").recommend(users, k=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full, small)])
    assert overlap > 0.9

    # --retime: new latency, the same quality and sizes, every variant still there
    before = {row["variant"]: row for row in report["rows"]}
    assert report["spinning"] is False and "spin-waiting off" in (out / "report.md").read_text()
    assert main(["--run", str(run), "--retime", "--rounds", "3", "--out", str(out), "--spinning",
                 "--no-progress"]) == 0
    retimed = json.loads((out / "report.json").read_text())
    assert retimed["rounds"] == 3 and retimed["batches"] == [1, 8] and retimed["spinning"] is True
    for row in retimed["rows"]:
        old = before[row["variant"]]
        assert (row["ndcg@10"], row["x_smaller"], row["rel_loss_pct"]) == \
            (old["ndcg@10"], old["x_smaller"], old["rel_loss_pct"])
        assert row["b8_ms"] > 0


def test_retime_without_a_report_is_a_clean_error(trained_run, tmp_path, capsys):
    run, _ = trained_run
    assert main(["--run", str(run), "--retime", "--out", str(tmp_path / "nothing")]) == 2
    assert "report.json does not exist: run recdeploy compress first" in capsys.readouterr().err


def test_unknown_method_is_a_clean_error(trained_run, capsys):
    run, _ = trained_run
    assert main(["--run", str(run), "--methods", "int3"]) == 2
    assert "unknown compression method 'int3'; valid:" in capsys.readouterr().err
