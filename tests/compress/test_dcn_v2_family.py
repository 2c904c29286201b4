"""The DCN-v2 family on a small DCN-v2 trained for a few seconds on ML-100k as CTR.

Quality is the CTR protocol's test AUC (the run's own held-out rows), computed from each ONNX
variant's scores; bounds are relative losses against the FP32 export.
"""
import copy
import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from recdeploy.compress import CompressionConfigError, PruneConfig, compress
from recdeploy.compress.config import Variant, parse_variant
from recdeploy.compress.dcn_v2 import RankerScorer, field_channel_scores, field_width
from recdeploy.compress.families import family_named, family_of
from recdeploy.compress.measure import session_scorer
from recdeploy.compress.pipeline import build_variant_onnx, logical_parameters
from recdeploy.train.onnx_io import cpu_session

DIM, CROSS, HIDDEN = 8, 2, (32, 16)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These models are tiny: one intra-op thread trains them faster, several times faster
    on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dcn_run(tmp_path_factory, ml100k):
    from recdeploy.train.checkpoint import save_checkpoint
    from recdeploy.train.config import TrainConfig
    from recdeploy.train.tasks import ctr

    run = tmp_path_factory.mktemp("dcn_run")
    config = TrainConfig(model="dcn_v2", dataset="ml-100k", dim=DIM, epochs=2, batch_size=2048,
                         lr=0.01, weight_decay=1e-5, patience=1)
    rows, _ = ctr.ctr_rows(ml100k)
    result = ctr.train(config, ml100k, ctr.random_split(rows, config.seed), progress=False,
                       cross_layers=CROSS, hidden=HIDDEN)
    save_checkpoint(run, result.model, config, result.card(config, ml100k))
    return run, result


@pytest.fixture(scope="module")
def setup(dcn_run, ml100k, tmp_path_factory):
    _, result = dcn_run
    family = family_named("dcn_v2")
    data = family.task_data(result.model, ml100k, n_requests=128)
    out = tmp_path_factory.mktemp("dcn_compress")
    example = family.example_requests(ml100k, 32, seed=1)
    fp32, _, _ = build_variant_onnx(result.model, family, None, data, example, out)
    reference = data.evaluate(session_scorer(cpu_session(fp32), "SCORES"))
    return SimpleNamespace(result=result, model=result.model, family=family, data=data, example=example,
                           out=out, fp32=fp32, reference=reference)


def relative_loss(setup, path):
    auc = setup.data.evaluate(session_scorer(cpu_session(path), "SCORES"))["auc"]
    return (setup.reference["auc"] - auc) / setup.reference["auc"]


def test_evaluate_scores_the_runs_own_test_rows(setup):
    result, reference = setup.result, setup.reference
    assert family_of(result.model) is setup.family
    assert reference["rows"] == result.metrics["test"]["rows"]
    assert reference["auc"] == pytest.approx(result.metrics["test"]["auc"], abs=1e-4)
    assert reference["logloss"] == pytest.approx(result.metrics["test"]["logloss"], abs=1e-4)


def test_task_data_refuses_a_split_the_model_was_not_trained_on(setup, ml100k):
    with pytest.raises(CompressionConfigError, match="not built from the training rows of the split "
                                                     "with seed 3"):
        setup.family.task_data(setup.model, ml100k, seed=3)


def test_served_module_is_the_exported_ranker_without_feature_tables(setup):
    model, example = setup.model, setup.example
    scorer = setup.family.served_module(model)
    inputs = [torch.from_numpy(v) for v in example.values()]
    torch.testing.assert_close(scorer(*inputs), model(*inputs))
    weights = sum(p.numel() for p in model.parameters())
    assert logical_parameters(scorer) == weights + model.sparse_arch.offsets.numel()   # no FeatureTables


def test_prune_50_halves_field_width_and_mlp_with_exact_parameter_count(setup):
    model = setup.model
    pruned = compress(model, PruneConfig(ratio=0.5, finetune_epochs=0))
    rows, genres = model.sparse_arch.embedding.num_embeddings, model.n_genres
    fields, dim = field_width(model)
    assert (fields, dim) == (8, DIM) and field_width(pruned) == (8, DIM // 2)   # the model itself untouched
    d, n, (h1, h2) = DIM // 2, 8 * DIM // 2, (HIDDEN[0] // 2, HIDDEN[1] // 2)
    shapes = {name: tuple(p.shape) for name, p in pruned.named_parameters()}
    assert shapes == {
        "sparse_arch.genre_embedding": (genres, d), "sparse_arch.embedding.weight": (rows, d),
        "dense_arch.linear.weight": (d, 3), "dense_arch.linear.bias": (d,),
        **{f"cross_net.weights.{i}.{k}": s for i in range(CROSS)
           for k, s in (("weight", (n, n)), ("bias", (n,)))},
        "deep_arch.mlp.0.weight": (h1, n), "deep_arch.mlp.0.bias": (h1,),
        "deep_arch.mlp.3.weight": (h2, h1), "deep_arch.mlp.3.bias": (h2,),
        "over_arch.linear.weight": (1, h2), "over_arch.linear.bias": (1,)}
    expected = (rows + genres) * d + 4 * d + CROSS * (n * n + n) + (n + 1) * h1 + (h1 + 1) * h2 + h2 + 1
    assert sum(p.numel() for p in pruned.parameters()) == expected
    # the served graph shrinks with it
    assert logical_parameters(RankerScorer(pruned)) == expected + len(model.sparse_arch.offsets)


def test_pruning_removes_the_weakest_dims_from_every_field_exactly(setup):
    """Dropping dim d everywhere equals zeroing it in the field producers (x0 is then 0 there
    and every cross layer keeps it 0); dropping a hidden unit equals zeroing its row."""
    model, example = setup.model, setup.example
    pruned = compress(model, PruneConfig(ratio=0.5, finetune_epochs=0))
    scores = field_channel_scores(model, "magnitude").view(8, DIM).mean(0)
    kept = torch.topk(scores, DIM // 2).indices.sort().values
    table = model.sparse_arch.embedding.weight
    torch.testing.assert_close(pruned.sparse_arch.embedding.weight, table[:, kept])
    zeroed = copy.deepcopy(model)
    dropped = [d for d in range(DIM) if d not in kept.tolist()]
    with torch.no_grad():
        zeroed.sparse_arch.embedding.weight[:, dropped] = 0
        zeroed.sparse_arch.genre_embedding[:, dropped] = 0
        zeroed.dense_arch.linear.weight[dropped] = 0
        zeroed.dense_arch.linear.bias[dropped] = 0
        for layer in (0, 3):
            original = model.deep_arch.mlp[layer].bias.tolist()
            kept_units = {original.index(b) for b in pruned.deep_arch.mlp[layer].bias.tolist()}
            gone = sorted(set(range(len(original))) - kept_units)
            zeroed.deep_arch.mlp[layer].weight[gone] = 0
            zeroed.deep_arch.mlp[layer].bias[gone] = 0
    inputs = [torch.from_numpy(v) for v in example.values()]
    torch.testing.assert_close(pruned.eval()(*inputs), zeroed(*inputs), atol=1e-5, rtol=1e-5)


def test_taylor_pruning_uses_gradients_on_real_rows(setup):
    pruned = compress(setup.model, PruneConfig(ratio=0.25, importance="taylor", finetune_epochs=0),
                      data=setup.data)
    assert field_width(pruned) == (8, DIM - DIM // 4)


def test_pruned_and_fine_tuned_within_1_percent_auc(setup):
    variant = Variant("prune-50-ft3", (PruneConfig(ratio=0.5, finetune_epochs=3),))
    path, _, params = build_variant_onnx(setup.model, setup.family, variant, setup.data, setup.example,
                                         setup.out)
    assert params < 0.55 * logical_parameters(setup.family.served_module(setup.model))
    assert relative_loss(setup, path) < 0.01


@pytest.mark.parametrize("spec, max_loss", [("rowwise-int8", 0.002), ("rowwise-int4", 0.02)])
def test_rowwise_table_scores_close_to_fp32(setup, spec, max_loss):
    model, fp32 = setup.model, setup.fp32
    path, _, params = build_variant_onnx(model, setup.family, parse_variant(spec), setup.data, setup.example,
                                         setup.out)
    assert params == logical_parameters(setup.family.served_module(model))
    graph = onnx.load(str(path))
    integer = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    codes = [i for i in graph.graph.initializer if i.data_type in integer]
    rows = model.sparse_arch.embedding.num_embeddings
    assert [tuple(c.dims) for c in codes] == [(rows, DIM if spec.endswith("8") else DIM // 2)]
    # the file shrinks by the table's FP32 bytes less its codes and the FP16 step (int4: and
    # minimum) per row; 0.85: the protobuf may store FP16 values as varints, not 2 bytes
    per_row = 2 if spec.endswith("8") else 4
    saving = rows * DIM * 4 - int(np.prod(codes[0].dims)) - per_row * rows
    assert fp32.stat().st_size - path.stat().st_size > 0.85 * saving
    full, small = (cpu_session(p).run(["SCORES"], setup.example)[0] for p in (fp32, path))
    assert np.abs(full - small).max() < (0.05 if spec.endswith("8") else 0.5)
    assert relative_loss(setup, path) < max_loss


def test_compress_cli_builds_a_report_and_serves_variants_beside_the_ranker(dcn_run, ml100k, tmp_path,
                                                                         capsys):
    from recdeploy.compress.cli import main
    from recdeploy.export.cli import main as export_main
    from recdeploy.export.repository import verify_manifest
    from recdeploy.export.scenarios.ranking import InProcessRanker, features_module, sample_requests
    from recdeploy.train.checkpoint import load_checkpoint

    run, _ = dcn_run
    checkpoint = load_checkpoint(run)
    repo, out = tmp_path / "repo", tmp_path / "report"
    code = main(["--run", str(run), "--methods", "rowwise-int8,int8-dynamic", "--rounds", "2",
                 "--batches", "1,8", "--quality-budget", "3%", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    # compress hands its variants to export, which serves them beside the full ranker
    code = export_main(["--run", str(run), "--repository", str(repo), "--variants", "all",
                        "--compress-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    rows = {row["variant"]: row for row in report["rows"]}
    assert report["metric"] == "auc" and set(rows) == {"fp32", "rowwise-int8", "int8-dynamic"}
    assert rows["fp32"]["auc"] == pytest.approx(checkpoint.card["metrics"]["test"]["auc"], abs=1e-4)
    assert rows["rowwise-int8"]["x_smaller"] > 1.5        # the table is ~70% of this small model
    assert "MatMulInteger" in rows["int8-dynamic"]["quantized_ops"]
    assert all(row["rel_loss_pct"] < 3 for row in rows.values())
    assert report["best"] in ("rowwise-int8", "int8-dynamic")

    verify_manifest(repo)
    meta = json.loads((repo / "recdeploy.json").read_text())
    assert {"rank", "rank_rowwise_int8", "rank_int8_dynamic"} <= set(meta["ensembles"])
    assert meta["variants"]["int8_dynamic"]["methods"] == report["variants"]["int8-dynamic"]["methods"]
    users, candidates = sample_requests(ml100k, n_users=16, n_candidates=30, seed=3)
    full_ids, _ = InProcessRanker(repo).rank(users, candidates, k=10)
    for slug, variant in (("rowwise_int8", "rowwise-int8"), ("int8_dynamic", "int8-dynamic")):
        ranker = InProcessRanker(repo, ranker=f"ranker_{slug}")
        ids, scores = ranker.rank(users, candidates, k=10)
        # served over [B, N] candidates == the measured [B*N, 1] file, row by row
        sparse, genres, dense, valid = features_module.candidate_features(users, candidates, ranker.store)
        flat = cpu_session(report["variants"][variant]["onnx"]).run(["SCORES"], {
            "SPARSE": sparse.reshape(-1, 1, 6), "GENRES": genres.reshape(-1, 1, genres.shape[-1]),
            "DENSE": dense.reshape(-1, 1, 3)})[0].reshape(candidates.shape)
        best = -np.sort(-np.where(valid, flat, -np.inf), axis=1)[:, :10]
        np.testing.assert_allclose(scores, best, atol=1e-5)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(full_ids, ids)])
        assert overlap > 0.7


def test_variants_need_an_exported_ranking_repository(setup, tmp_path):
    from recdeploy.export.scenarios import ScenarioError, scenario_named
    with pytest.raises(ScenarioError, match="has no exported ranking scenario"):
        scenario_named("ranking").add_variant(tmp_path, setup.fp32, "x")


def test_distillation_is_refused_where_the_fine_tune_has_none(setup):
    with pytest.raises(CompressionConfigError, match="distillation is not supported for DCNv2"):
        compress(setup.model, PruneConfig(ratio=0.5, distill=0.5), data=setup.data)
