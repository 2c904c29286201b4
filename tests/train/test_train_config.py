"""TrainConfig: common fields + the model's registered sub-config; flags; older flat cards."""
import json
from pathlib import Path

import pytest
import torch

from recdeploy.train.checkpoint import load_checkpoint
from recdeploy.train.cli import ForeignFlagError, main
from recdeploy.train.config import ConfigError, ModelConfig, TrainConfig, UnknownSettingError
from recdeploy.train.models import build_model, register_model
from recdeploy.train.models.neumf import NeuMFConfig
from recdeploy.train.models.sasrec import SASRecConfig

CARDS = Path(__file__).parent / "fixtures" / "flat_config_cards"


def test_own_settings_live_in_the_models_sub_config_and_round_trip():
    config = TrainConfig(model="sasrec", dim=16, max_len=50, layers=1)
    assert config.options == SASRecConfig(max_len=50, layers=1)
    assert config == TrainConfig(model="sasrec", dim=16, options=SASRecConfig(max_len=50, layers=1))
    assert config.max_len == 50 and config.options.heads == 2          # own settings read through
    saved = json.loads(config.to_json())
    assert saved["options"] == {"max_len": 50, "layers": 1, "heads": 2, "dropout": 0.1,
                                "output_embedding": "shared"}
    assert "max_len" not in saved and len(saved) == 13                # 12 common fields + options
    assert TrainConfig.from_json(config.to_json()) == config
    assert TrainConfig().options == ModelConfig()                      # two_tower has none of its own


def test_for_model_takes_given_then_the_models_then_the_generic_defaults():
    config = TrainConfig.for_model("neumf", negatives=8, epochs=3)
    assert config.options == NeuMFConfig(loss="sampled_softmax", negatives=8, reg=0.0,
                                         pretrain_epochs=20, mlp_dim=16)
    assert (config.epochs, config.lr, config.batch_size) == (3, 0.001, TrainConfig.batch_size)
    assert TrainConfig.for_model("neumf", options={"mlp_dim": 4}).options.mlp_dim == 4
    assert TrainConfig(model="neumf").options == NeuMFConfig()          # no registered defaults


def test_a_setting_of_another_model_is_refused_naming_the_valid_ones():
    with pytest.raises(UnknownSettingError, match=r"unknown config keys \['max_len'\] for model "
                                                  r"'two_tower' \(max_len is a setting of sasrec\); "
                                                  r"valid: \['batch_size', .*'weight_decay'\]"):
        TrainConfig(max_len=50)
    with pytest.raises(UnknownSettingError, match=r"\['reg'\] for model 'sasrec' \(reg is a setting "
                                                  r"of biased_mf, neumf\); valid: .*'max_len'"):
        TrainConfig.for_model("sasrec", reg=0.1)
    with pytest.raises(ConfigError, match="model 'sasrec' takes SASRecConfig options, got NeuMFConfig"):
        TrainConfig(model="sasrec", options=NeuMFConfig())
    with pytest.raises(AttributeError, match="TrainConfig for model 'two_tower' has no field 'max_len'"):
        _ = TrainConfig().max_len


def test_registered_defaults_must_name_fields_the_model_has():
    with pytest.raises(ValueError, match=r"model 'toy': defaults \['max_len'\] are neither common "
                                         "fields nor settings of ModelConfig"):
        register_model("toy", task="retrieval_loo", defaults={"dim": 8, "max_len": 3})


@pytest.mark.parametrize("model", ["two_tower", "sasrec", "neumf"])
def test_cards_with_the_older_flat_config_still_load(model, tmp_path):
    card = json.loads((CARDS / f"{model}.json").read_text())
    flat = card["config"]
    assert len(flat) == 22 and "options" not in flat
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "card.json").write_text(json.dumps(card))
    torch.manual_seed(0)
    weights = build_model(model, **card["model_args"]).state_dict()
    torch.save(weights, tmp_path / "checkpoint" / "model.pt")

    loaded = load_checkpoint(tmp_path)
    common = {k: v for k, v in flat.items() if k in TrainConfig.__dataclass_fields__}
    assert {k: getattr(loaded.config, k) for k in common} == common
    own = {name: flat[name] for name in loaded.config.options.names()}
    assert json.loads(loaded.config.to_json())["options"] == own
    assert all(torch.equal(weights[k], v) for k, v in loaded.model.state_dict().items())
    if model == "sasrec":
        assert (loaded.config.max_len, loaded.config.options.dropout) == (6, 0.2)
    # a key that was never a config field is still refused
    with pytest.raises(UnknownSettingError, match=r"unknown config keys \['dimension'\]"):
        TrainConfig.from_saved({**flat, "dimension": 3})


def test_help_lists_every_flag_and_each_models_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--dim", "--lr-schedule", "--device", "--max-len", "--output-embedding", "--reg",
                 "--negatives", "--loss", "--pretrain-epochs", "--mlp-dim", "--layers", "--heads",
                 "--dropout"):
        assert flag in text
    defaults = text.split("per-model defaults")[1].splitlines()
    sasrec = next(line for line in defaults if line.strip().startswith("sasrec "))
    assert "--lr 0.005" in sasrec and "--lr-schedule cosine" in sasrec and "--max-len 200" in sasrec
    neumf = next(line for line in defaults if line.strip().startswith("neumf "))
    assert "--negatives 256" in neumf and "--pretrain-epochs 20" in neumf


def test_a_flag_the_model_lacks_is_refused(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--model", "two_tower", "--max-len", "50"]) == 2
    err = capsys.readouterr().err
    assert "model 'two_tower' has no --max-len; its own flags: none" in err
    assert main(["--out", str(tmp_path), "--model", "biased_mf", "--negatives", "3"]) == 2
    assert "model 'biased_mf' has no --negatives; its own flags: --reg" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint").exists()


def test_flags_mirror_field_names():
    import argparse

    from recdeploy.train.cli import add_config_flags, config_from_args
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    config = config_from_args(parser.parse_args(["--model", "sasrec", "--max-len", "50",
                                                 "--output-embedding", "separate", "--lr", "0.002"]))
    assert config == TrainConfig.for_model("sasrec", max_len=50, output_embedding="separate", lr=0.002)
    with pytest.raises(ForeignFlagError, match="model 'neumf' has no --max-len; its own flags: "
                                               "--loss --negatives --reg --pretrain-epochs --mlp-dim"):
        config_from_args(parser.parse_args(["--model", "neumf", "--max-len", "5"]))
