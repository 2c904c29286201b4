"""Find the Triton Inference Server this project runs.

    from recdeploy.serve.locate import find_triton_install
    install = find_triton_install()      # TritonInstall(server_bin=..., ...)

By default the server comes from the ``nvidia-pytriton==0.7.0`` wheel, which ships the real
tritonserver 2.51.0, its python backend, python backend stubs for Python 3.8-3.13 and the
shared libraries they need. ``TRITONSERVER`` (and ``TRITON_BACKEND_DIR``) point elsewhere,
e.g. at the GPU bundle built by ``shared/device/make-gpu-bundle.sh``.
"""
from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = ("install it with `pip install nvidia-pytriton==0.7.0` (it ships tritonserver "
                "2.51.0), or set TRITONSERVER=/path/to/bin/tritonserver and "
                "TRITON_BACKEND_DIR=/path/to/backends")
STUB_NAME = "triton_python_backend_stub"


class TritonNotFoundError(RuntimeError):
    """The tritonserver binary, its python backend or a stub for this Python is missing."""


@dataclass(frozen=True)
class TritonInstall:
    server_bin: Path
    # the folder that holds python/ (the python backend); Triton's --backend-directory
    backends_dir: Path
    # python_backend_stubs/ with one <X.Y>/triton_python_backend_stub per Python version;
    # None when the python backend folder already holds the stub (the GPU bundle)
    stubs_dir: Path | None
    # the bundled shared libraries; copies of the stub/backend outside the wheel lose their
    # rpath and find them through LD_LIBRARY_PATH instead. None: rely on the environment.
    libs_dir: Path | None

    @property
    def python_backend_dir(self) -> Path:
        return self.backends_dir / "python"

    def stub_for(self, version: tuple[int, int]) -> Path:
        """The python backend stub built for Python ``version`` (major, minor)."""
        tag = f"{version[0]}.{version[1]}"
        candidates = [self.stubs_dir / tag / STUB_NAME] if self.stubs_dir else []
        candidates.append(self.python_backend_dir / STUB_NAME)
        for candidate in candidates:
            if candidate.is_file() and stub_python_version(candidate) in (None, tuple(version)):
                return candidate
        available = sorted(p.parent.name for p in self.stubs_dir.glob(f"*/{STUB_NAME}")) \
            if self.stubs_dir else []
        raise TritonNotFoundError(
            f"no python backend stub for Python {tag}: looked at "
            f"{', '.join(str(c) for c in candidates)}; stubs exist for "
            f"{', '.join(available) or 'no version'}. Run recdeploy with one of those Pythons.")


def stub_python_version(stub: Path) -> tuple[int, int] | None:
    """The Python a stub binary links (``libpython3.X.so``), or None when it does not say."""
    match = re.search(rb"libpython(\d+)\.(\d+)\.so", stub.read_bytes())
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_triton_install(environ: Mapping[str, str] | None = None) -> TritonInstall:
    """Locate tritonserver: ``$TRITONSERVER`` if set, else the nvidia-pytriton wheel."""
    env = os.environ if environ is None else environ
    if env.get("TRITONSERVER"):
        return _from_environment(env)
    return _from_pytriton()


def _from_environment(environ: Mapping[str, str]) -> TritonInstall:
    server_bin = Path(environ["TRITONSERVER"])
    _require_file(server_bin, "TRITONSERVER")
    # bundle layout: <root>/bin/tritonserver, <root>/backends/python, <root>/libs
    root = server_bin.parent.parent
    backends_dir = Path(environ.get("TRITON_BACKEND_DIR") or root / "backends")
    _require_python_backend(backends_dir, "TRITON_BACKEND_DIR")
    stubs_dir = root / "python_backend_stubs"
    libs_dir = Path(environ["TRITON_LIBS_DIR"]) if environ.get("TRITON_LIBS_DIR") else root / "libs"
    return TritonInstall(server_bin=server_bin, backends_dir=backends_dir,
                         stubs_dir=stubs_dir if stubs_dir.is_dir() else None,
                         libs_dir=libs_dir if libs_dir.is_dir() else None)


def _from_pytriton() -> TritonInstall:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotFoundError(f"the pytriton package is not installed; {INSTALL_HINT}")
    package = Path(next(iter(spec.submodule_search_locations)))
    triton = package / "tritonserver"
    server_bin = triton / "bin" / "tritonserver"
    _require_file(server_bin, "the nvidia-pytriton wheel")
    backends_dir = triton / "backends"
    _require_python_backend(backends_dir, "the nvidia-pytriton wheel")
    stubs_dir = triton / "python_backend_stubs"
    if not stubs_dir.is_dir():
        raise TritonNotFoundError(f"{stubs_dir} is missing (a broken nvidia-pytriton install?); "
                                  f"{INSTALL_HINT}")
    libs_dir = package.parent / "nvidia_pytriton.libs"
    return TritonInstall(server_bin=server_bin, backends_dir=backends_dir, stubs_dir=stubs_dir,
                         libs_dir=libs_dir if libs_dir.is_dir() else None)


def _require_file(path: Path, source: str) -> None:
    if not path.is_file() or not os.access(path, os.X_OK):
        raise TritonNotFoundError(f"tritonserver binary {path} (from {source}) does not exist "
                                  f"or is not executable; {INSTALL_HINT}")


def _require_python_backend(backends_dir: Path, source: str) -> None:
    library = backends_dir / "python" / "libtriton_python.so"
    if not library.is_file():
        raise TritonNotFoundError(f"the python backend {library} (from {source}) is missing; "
                                  f"{INSTALL_HINT}")
