"""The Open Bandit Dataset loader, the obd_ctr task's split and features, and its report."""
import numpy as np
import pytest

from recdeploy.train.data import DatasetError, load_dataset
from recdeploy.train.datasets.obd import hashed
from recdeploy.train.obd_features import build_arrays, context_indices, ds_contexts, features, time_split
from recdeploy.train.obd_ope import bts_marginal, validate_on_bts


def test_obd_holds_the_three_campaigns_of_both_policies(obd):
    assert (obd.n_interactions, obd.n_items) == (60_000, 80 + 34 + 46)
    assert int(obd.ratings.sum()) == 287 and set(np.unique(obd.ratings)) == {0.0, 1.0}
    assert obd.item_ids[[0, 79, 80, 113, 114, 159]].tolist() == [0, 79, 100, 133, 200, 245]
    rf = obd.row_features
    assert set(np.unique(rf["position"])) == {1, 2, 3} and np.all(np.diff(obd.timestamps) >= 0)
    assert np.bincount(rf["policy"]).tolist() == [30_000, 30_000]
    # the uniform-random policy's propensity is 1 / (the campaign's ads)
    random = rf["policy"] == 0
    ads = np.array([80, 34, 46])[rf["campaign"][random]]
    np.testing.assert_allclose(rf["propensity"][random], 1 / ads, rtol=1e-3)
    # every logged item belongs to the campaign it was logged in
    assert np.array_equal(obd.item_features["campaign"][obd.items], rf["campaign"])


def test_hashed_features_are_60_bit_integers():
    assert hashed("81ce123cbb5bd8ce818f60fb3586bba5") == int("81ce123cbb5bd8c", 16) < 2 ** 60
    with pytest.raises(DatasetError, match="not hexadecimal"):
        hashed("zz")


def test_one_campaign_and_bad_campaigns():
    ds = load_dataset("obd", campaigns="men")
    assert ds.n_items == 34 and ds.n_interactions == 20_000
    with pytest.raises(DatasetError, match="campaigns must be among"):
        load_dataset("obd", campaigns=("kids",))


def test_time_split_keeps_the_future_out_of_training(obd):
    split = time_split(obd)
    assert (len(split.train), len(split.valid), len(split.test)) == (42_000, 6_000, 12_000)
    assert obd.timestamps[split.train].max() <= obd.timestamps[split.valid].min()
    assert obd.timestamps[split.valid].max() <= obd.timestamps[split.test].min()


def test_unseen_context_values_read_the_unknown_index(obd):
    split = time_split(obd)
    arrays, item_vocab = build_arrays(obd, split.train)
    contexts = ds_contexts(obd)[:2].copy()
    contexts[1, 2] = 12345                                     # a value training never saw
    index = context_indices(arrays, contexts)
    assert np.all(index[0] > 0) and index[1, 2] == 0 and np.all(index[1, [0, 1, 3]] > 0)
    sparse, dense = features(arrays, index[:, None, :], np.array([[1, 2, 3]]), 2)
    assert sparse.shape == (2, 3, 10) and dense.shape == (2, 3, 1)
    assert np.all(sparse[..., -1] == 2) and sparse[0, :, 4].tolist() == [1, 2, 3]
    assert len(item_vocab) == 3 and min(item_vocab) > 1


def test_bts_marginal_is_a_distribution_per_slot_and_campaign(obd):
    pi = bts_marginal(obd, np.flatnonzero(obd.row_features["policy"] == 1))
    campaign = obd.item_features["campaign"]
    for c in range(3):
        np.testing.assert_allclose(pi[1:, campaign == c].sum(axis=1), 1.0)
    assert np.all(pi[0] == 0)


def test_validation_recovers_bts_on_policy_click_rate(obd):
    report = validate_on_bts(obd, n_boot=100)
    truth = report["truth_on_policy"]["value"]
    assert truth == pytest.approx(157 / 30_000, abs=1e-6)
    for name in ("ips", "snips", "dr"):
        est = report["estimates"][name]
        assert est["covers_truth"] and abs(est["value"] - truth) < 0.0015, (name, est)
        for campaign, c in report["by_campaign"].items():      # 10,000 impressions each: wider
            assert c["estimates"][name]["covers_truth"], (campaign, name, c)
    assert set(report["by_campaign"]) == {"all", "men", "women"}
    assert report["by_campaign"]["men"]["truth_on_policy"]["value"] == pytest.approx(69 / 10_000)


def test_obd_ctr_reports_intervals_baselines_and_ope(obd_run):
    result, card = obd_run
    test = result.metrics["test"]
    assert test["rows"] == 12_000 and test["clicks"] == int(test["clicks"]) > 30
    for name in ("auc", "logloss"):
        assert test[f"{name}_low"] <= test[name] <= test[f"{name}_high"]
    assert set(result.baselines) == {"item_ctr", "item_position_ctr", "logistic_regression"}
    ope = card["ope"]
    model = ope["policies"]["model"]
    assert 0 < model["matched_rows"] < 0.1 * ope["policies"]["model"]["estimates"]["ips"]["rows"]
    assert set(model["estimates"]) == {"ips", "snips", "dm", "dr"}


def test_obd_ctr_needs_logged_bandit_data(ml100k):
    from recdeploy.train.config import TrainConfig
    from recdeploy.train.tasks.obd_ctr import train

    with pytest.raises(ValueError, match="needs logged bandit data"):
        train(TrainConfig(model="dcn_v2_context"), ml100k, time_split(ml100k), progress=False)


def test_report_tables_show_every_interval(obd_run, tmp_path, capsys):
    import json

    from recdeploy.train.obd_report import ads_tables, main

    tables = ads_tables(obd_run[1])
    auc = obd_run[1]["metrics"]["test"]
    assert f"{auc['auc']:.4f} [{auc['auc_low']:.4f}, {auc['auc_high']:.4f}]" in tables
    assert "| IPS from the random logs |" in tables and "| logged bts (on-policy, test period) |" in tables
    assert main([str(tmp_path)]) == 2 and "train first" in capsys.readouterr().err
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "card.json").write_text(json.dumps(obd_run[1]))
    assert main([str(tmp_path)]) == 0 and capsys.readouterr().out.strip() == tables
