from __future__ import annotations

import sys

import pytest

from recdeploy.serve.backends import PYTHON_BASED_BACKENDS, compose_backend_dir
from recdeploy.serve.locate import find_triton_install


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_is_python_backend_with_stub_plus_onnxruntime(tmp_path):
    install = find_triton_install(environ={})
    dest = compose_backend_dir(tmp_path / "backends", install)
    assert files_under(dest) == [
        "onnxruntime/model.py",
        "python/libtriton_python.so",
        "python/triton_python_backend_stub",
        "python/triton_python_backend_utils.py",
        "pytorch/model.py",
        "pytorch_python/model.py",
    ]
    stub = install.stub_for(sys.version_info[:2])
    assert (dest / "python" / "triton_python_backend_stub").read_bytes() == stub.read_bytes()
    assert (dest / "onnxruntime" / "model.py").read_text() == \
        PYTHON_BASED_BACKENDS["onnxruntime"].read_text()


def test_more_python_based_backends_slot_in_by_name(tmp_path):
    source = tmp_path / "torch_model.py"
    source.write_text("class TritonPythonModel: pass\n")
    dest = compose_backend_dir(tmp_path / "b", backends={**PYTHON_BASED_BACKENDS, "pytorch": source})
    assert (dest / "pytorch" / "model.py").read_text() == source.read_text()
    assert (dest / "onnxruntime" / "model.py").is_file()


def test_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "leftover").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        compose_backend_dir(tmp_path)
