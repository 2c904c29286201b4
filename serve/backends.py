"""Compose the ``--backend-directory`` that tritonserver runs with.

    from recdeploy.serve.backends import compose_backend_dir
    backend_dir = compose_backend_dir(Path("/tmp/backends"))

The result holds ``python/`` (the python backend of the installed server, with the stub built
for the running Python copied in as ``python/triton_python_backend_stub``) and, beside it,
one folder per python-based backend holding a ``model.py``. Triton looks a model's backend
up as ``<backend-dir>/<name>/``; finding a ``model.py`` there instead of a
``libtriton_<name>.so``, it loads the model through the python backend running that file.
``platform: "onnxruntime_onnx"`` maps to the backend name ``onnxruntime``, so the ONNX model
configs the stock NGC container serves natively load here unchanged. ``pytorch``
(``platform: "pytorch_libtorch"``) is served natively instead when ``native_backends()``
could build ``serve/native/`` (libtorch inside tritonserver, no stub hop).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from recdeploy.serve.locate import STUB_NAME, TritonInstall, find_triton_install

SOURCES = Path(__file__).parent / "python_backends"

# backend name -> the model.py source in python_backends/. ``platform: pytorch_libtorch``
# maps to backend ``pytorch``: the same file runs TorchScript there (torch in the stub env).
# ``pytorch_python`` is the same again under a name no native backend takes: a config that
# names it runs in the python backend although a native ``pytorch`` serves the others (A/B).
PYTHON_BASED_BACKENDS: dict[str, Path] = {
    "onnxruntime": SOURCES / "onnxruntime_model.py",
    "pytorch": SOURCES / "onnxruntime_model.py",
    "pytorch_python": SOURCES / "onnxruntime_model.py",
}


def compose_backend_dir(dest: Path, install: TritonInstall | None = None,
                        python_version: tuple[int, int] | None = None,
                        backends: dict[str, Path] | None = None,
                        native: dict[str, Path] | None = None) -> Path:
    """Write the backend directory into ``dest`` (created; must be empty) and return it.

    native: backend name -> a built ``libtriton_<name>.so`` (see ``native_backends()``); it
    takes that name's place, so its python-based ``model.py`` is left out.
    """
    native = native or {}
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
        if name in native:
            shutil.copy2(native[name], dest / name / f"libtriton_{name}.so")
        else:
            shutil.copy2(source, dest / name / "model.py")
    return dest


def native_backends(enabled: bool = True, log=None) -> dict[str, Path]:
    """{"pytorch": libtriton_pytorch.so} when the native libtorch backend builds here, else {}.

    ``log(message)`` hears why not (no compiler, a compile error); the python-based backend
    then serves TorchScript, slower but the same answers.
    """
    from recdeploy.serve.native_build import NativeBuildUnavailable, native_backend, native_enabled
    if not (enabled and native_enabled()):
        return {}
    try:
        return {"pytorch": native_backend(verbose=True)}
    except NativeBuildUnavailable as error:
        if log is not None:
            log(f"native libtorch backend unavailable, TorchScript runs in the python backend: {error}")
        return {}
