"""Compose the ``--backend-directory`` that tritonserver runs with.

    from recdeploy.serve.backends import compose_backend_dir
    backend_dir = compose_backend_dir(Path("/tmp/backends"))

The result holds ``python/`` (the python backend of the installed server, with the stub built
for the running Python copied in as ``python/triton_python_backend_stub``) and, beside it,
one folder per python-based backend holding a ``model.py``. Triton looks a model's backend
up as ``<backend-dir>/<name>/``; finding a ``model.py`` there instead of a
``libtriton_<name>.so``, it loads the model through the python backend running that file.
``platform: "onnxruntime_onnx"`` maps to the backend name ``onnxruntime``, so the ONNX model
configs the stock NGC container serves natively load here unchanged.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from recdeploy.serve.locate import STUB_NAME, TritonInstall, find_triton_install

SOURCES = Path(__file__).parent / "python_backends"

# backend name -> the model.py source in python_backends/. ``platform: pytorch_libtorch``
# maps to backend ``pytorch``: the same file runs TorchScript there (torch in the stub env).
PYTHON_BASED_BACKENDS: dict[str, Path] = {
    "onnxruntime": SOURCES / "onnxruntime_model.py",
    "pytorch": SOURCES / "onnxruntime_model.py",
}


def compose_backend_dir(dest: Path, install: TritonInstall | None = None,
                        python_version: tuple[int, int] | None = None,
                        backends: dict[str, Path] | None = None) -> Path:
    """Write the backend directory into ``dest`` (created; must be empty) and return it."""
    install = install or find_triton_install()
    python_version = python_version or sys.version_info[:2]
    backends = PYTHON_BASED_BACKENDS if backends is None else backends
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"backend directory {dest} is not empty; pass a fresh folder")
    stub = install.stub_for(python_version)
    python_dir = dest / "python"
    shutil.copytree(install.python_backend_dir, python_dir,
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    if stub != python_dir / STUB_NAME:
        shutil.copy2(stub, python_dir / STUB_NAME)
    for name, source in backends.items():
        (dest / name).mkdir()
        shutil.copy2(source, dest / name / "model.py")
    return dest
