from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from recdeploy.serve.environment import NumpyTooNewError, StubEnvironmentError, check_stub_environment


def fake_python(tmp_path: Path, output: str, code: int = 0) -> Path:
    """A bin folder whose python3 is a shell script printing ``output``."""
    python = tmp_path / "bin" / "python3"
    python.parent.mkdir()
    python.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {code}\n")
    python.chmod(0o755)
    return python.parent


def test_the_running_venv_passes():
    found = check_stub_environment(Path(sys.executable).parent)
    assert found["numpy"].startswith("1.") and found["onnxruntime"]
    assert found["python"] == "{}.{}".format(*sys.version_info[:2])


def test_numpy_2_is_refused_with_the_reason(tmp_path):
    bin_dir = fake_python(tmp_path, json.dumps({"numpy": "2.1.3", "onnxruntime": "1.20.0"}))
    with pytest.raises(NumpyTooNewError, match=r"numpy 2\.1\.3.*EMPTY output tensors.*numpy<2"):
        check_stub_environment(bin_dir)


def test_numpy_1_is_accepted(tmp_path):
    bin_dir = fake_python(tmp_path, json.dumps({"numpy": "1.26.4", "onnxruntime": "1.20.0"}))
    assert check_stub_environment(bin_dir) == {"numpy": "1.26.4", "onnxruntime": "1.20.0"}


def test_missing_modules_are_named(tmp_path):
    bin_dir = fake_python(tmp_path, json.dumps({"numpy": "1.26.4", "onnxruntime": None}))
    with pytest.raises(StubEnvironmentError, match=r"onnxruntime cannot be imported by .*python3"):
        check_stub_environment(bin_dir)


def test_a_folder_without_python3_is_refused(tmp_path):
    with pytest.raises(StubEnvironmentError, match=r"python3 does not exist.*first python3 on PATH"):
        check_stub_environment(tmp_path)


def test_a_failing_interpreter_is_reported(tmp_path):
    bin_dir = fake_python(tmp_path, "Segmentation fault", code=139)
    with pytest.raises(StubEnvironmentError, match=r"exit 139.*Segmentation fault"):
        check_stub_environment(bin_dir)
