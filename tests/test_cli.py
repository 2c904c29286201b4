import importlib.util
import os
import sys

import pytest

from recdeploy.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out


def test_unknown_command_names_valid_ones(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'; valid commands: data, train" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"recdeploy {command}" in capsys.readouterr().out


def test_train_rejects_bad_config(capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path), "--dim", "0"]) == 2
    assert "dim must be >= 1, got 0" in capsys.readouterr().err


def test_stage_folders_import_under_recdeploy_only():
    for stage in ("train", "compress", "export", "serve", "clients", "perf"):
        assert importlib.util.find_spec(f"recdeploy.{stage}") is not None
    # nothing generic like `train` or `export` lands in site-packages
    for folder in (p for p in sys.path if p.endswith("site-packages")):
        for stage in ("train", "export", "perf", "serve", "clients", "compress"):
            assert not os.path.exists(os.path.join(folder, stage))
