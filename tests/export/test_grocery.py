"""The grocery export: specs, the seen-item policy, ONNX parity, basket_lookup, in-process."""
import json

import numpy as np
import pytest
import torch

from recdeploy.export.repository import verify_manifest
from recdeploy.export.scenarios import Contract, ScenarioError, scenario_for, scenario_named
from recdeploy.export.scenarios.base import SEEN_KEPT, SEEN_REMOVED
from recdeploy.export.scenarios.grocery import (
    ENSEMBLE,
    GroceryExportError,
    GroceryInProcess,
    export_grocery,
    grocery_pipeline,
    lookup_module,
    parity_cases,
    recommend_basket_spec,
)
from recdeploy.export.triton_config import EnsembleWiringError, check_ensemble, parse_config_text
from recdeploy.train.baskets import basket_index, basket_rows, basket_split, user_histories
from recdeploy.train.models import build_model
from recdeploy.train.models.basket_knn import BasketKNN


@pytest.fixture(scope="module")
def model(instacart):
    index = basket_index(instacart)
    train = basket_split(instacart, index).train
    return BasketKNN(instacart.n_items, neighbours=10, alpha=0.8, decay=0.8).fit(
        basket_rows(instacart, train, index), np.bincount(instacart.items[train], minlength=instacart.n_items))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model, instacart):
    repo = tmp_path_factory.mktemp("grocery_repository")
    return repo, export_grocery(model, instacart, repo, {"dataset_fingerprint": instacart.fingerprint()})


@pytest.fixture(scope="module")
def history(instacart):
    return user_histories(instacart)


def test_pipeline_wiring_and_a_miswired_ensemble_is_refused():
    pipeline = grocery_pipeline(n_items=14_190)
    assert [s.model_name for s in pipeline.ensemble.steps] == ["basket_lookup", "basket_scorer", "topk"]
    models = {m.name: m for m in pipeline.models if m.name != "basket_scorer"}
    with pytest.raises(EnsembleWiringError, match=r"basket_scorer\): no such model"):
        check_ensemble(recommend_basket_spec(), models)


def test_the_seen_item_policy_is_a_setting_of_each_contract():
    policies = {c.entry: c.seen_items for name in ("grocery", "retrieval", "sequential", "multistage")
                for c in scenario_named(name).contracts()}
    assert policies.pop(ENSEMBLE) == SEEN_KEPT
    assert set(policies.values()) == {SEEN_REMOVED}
    assert {c.seen_items for c in scenario_named("ranking").contracts()} == {""}
    with pytest.raises(ScenarioError, match="seen_items must be one of 'removed', 'kept', '', got 'maybe'"):
        Contract("x", (), (), (), seen_items="maybe")


def test_basket_knn_runs_export_as_grocery_and_the_other_models_keep_their_scenarios():
    assert scenario_for({"run": "basket_knn"}).name == "grocery"
    assert scenario_for({"run": "two_tower"}).name == "retrieval"
    assert scenario_for({"run": "sasrec"}).name == "sequential"


def test_repository_layout_configs_metadata_and_manifest(exported, instacart):
    repo, _ = exported
    names = sorted(p.name for p in repo.iterdir() if p.is_dir())
    assert names == ["basket_lookup", "basket_scorer", "recommend_basket", "topk"]
    for name in names:
        assert parse_config_text((repo / name / "config.pbtxt").read_text()).name == name
    scorer = parse_config_text((repo / "basket_scorer" / "config.pbtxt").read_text())
    assert [i.name for i in scorer.input] == ["HISTORY_ITEMS", "HISTORY_AGES"]
    assert list(scorer.output[0].dims) == [14_190]
    meta = json.loads((repo / "recdeploy.json").read_text())
    assert meta["scenario"] == "grocery" and meta["entries"][ENSEMBLE]["scenario"] == "grocery"
    assert meta["n_users"] == 593 and meta["dataset_fingerprint"] == instacart.fingerprint()
    verify_manifest(repo)


def test_onnx_parity_on_typical_long_short_and_empty_histories(exported, history):
    _, parity = exported
    assert set(parity) == {"typical", "long", "short", "empty"}
    assert max(r.max_abs_diff["SCORES"] for r in parity.values()) < 1e-6
    cases = parity_cases(history)
    assert cases["long"][0].shape[1] == history.lengths().max() > 1000
    assert cases["short"][0].shape[1] == 3 and (cases["empty"][0] == -1).all()


def test_export_refuses_another_model_or_catalogue(instacart, tmp_path):
    with pytest.raises(GroceryExportError, match="serves basket_knn runs, not SASRec"):
        export_grocery(build_model("sasrec", n_items=instacart.n_items, dim=8, max_len=4, layers=1),
                       instacart, tmp_path)
    with pytest.raises(GroceryExportError, match="model scores 5 items but instacart has 14190"):
        export_grocery(BasketKNN(5), instacart, tmp_path)


def test_basket_lookup_returns_every_purchase_and_excludes_nothing(exported, instacart, history):
    rec = GroceryInProcess(exported[0])
    users = instacart.user_ids[[0, 7]]
    items, ages, seen, known = lookup_module.lookup_baskets(np.r_[users, 10 ** 9], rec.table)
    for row, user in enumerate((0, 7)):
        want_items, want_ages = history.of(user)
        assert items[row, :len(want_items)].tolist() == want_items.tolist()
        assert ages[row, :len(want_ages)].tolist() == want_ages.tolist()
        assert (items[row, len(want_items):] == -1).all()
    assert (items[2] == -1).all() and known.ravel().tolist() == [True, True, False]
    assert seen.shape == (3, 1) and (seen == -1).all()
    with pytest.raises(ValueError, match="USER_ID must be an integer tensor, got float64"):
        lookup_module.lookup_baskets(np.array([1.5]), rec.table)


def test_inprocess_equals_the_pytorch_model_with_repeats_kept(exported, model, instacart, history):
    rec = GroceryInProcess(exported[0])
    rows = np.arange(12)
    ids, scores = rec.recommend(instacart.user_ids[rows], k=10)
    with torch.no_grad():
        want = model(*(torch.from_numpy(a) for a in history.padded(rows))).numpy()
    for row in rows:
        order = np.lexsort((np.arange(instacart.n_items), -want[row]))[:10]
        assert ids[row].tolist() == instacart.item_ids[order].tolist()
    np.testing.assert_allclose(scores, np.sort(want, 1)[:, ::-1][:, :10], rtol=1e-5, atol=1e-7)
    # most of every list is products the user bought before: nothing was removed
    bought = [set(instacart.item_ids[history.of(r)[0]].tolist()) for r in rows]
    assert np.mean([len(set(ids[r].tolist()) & bought[r]) for r in rows]) >= 8


def test_unknown_user_has_no_orders_and_gets_the_most_popular_products(exported, instacart):
    ids, scores = GroceryInProcess(exported[0]).recommend(np.array([10 ** 9, -1]), k=5)
    counts = np.bincount(instacart.items, minlength=instacart.n_items)
    popular = instacart.item_ids[np.argsort(-counts, kind="stable")[:5]].tolist()
    assert ids.tolist() == [popular, popular] and scores[0, 0] == counts.max()
