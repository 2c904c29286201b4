"""Build the native libtorch Triton backend (``serve/native/``) against the installed torch.

    from recdeploy.serve.native_build import native_backend
    library = native_backend()          # Path to libtriton_pytorch.so, built once and cached
    python -m recdeploy.serve.native_build     # build now, print the path (or why not)

The nvidia-pytriton wheel's tritonserver has only the python backend, so a TorchScript
model would pay a stub round trip per execution. This compiles ``libtorch_backend.cc`` with
the C++ compiler on PATH against the torch wheel's own headers and libraries (about 25 s on
2 cores), into ``$RECDEPLOY_CACHE/native/<key>/`` where ``key`` hashes the sources, the
torch version and the compiler, so a changed source or torch rebuilds and an unchanged one
never does. ``NativeBuildUnavailable`` says why it cannot (no compiler, no torch headers, a
compile error); callers then fall back to the python-based backend.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

SOURCES = Path(__file__).parent / "native"
LIBRARY_NAME = "libtriton_pytorch.so"
# 0 turns the native backend off everywhere (the python-based one serves TorchScript then)
ENV_SWITCH = "RECDEPLOY_NATIVE_BACKEND"


class NativeBuildUnavailable(RuntimeError):
    """The native backend cannot be built here; the message says why."""


def native_enabled(environ: Mapping[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get(ENV_SWITCH, "1") != "0"


def find_compiler() -> str:
    for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    raise NativeBuildUnavailable("no C++ compiler on PATH (g++, c++ or clang++; or set CXX)")


def torch_build_facts() -> dict:
    """Include and library folders of the installed torch, its version and C++ ABI."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as error:  # pragma: no cover - torch is a core dependency
        raise NativeBuildUnavailable(f"torch is not importable: {error}") from error
    includes = [Path(p) for p in cpp_extension.include_paths()]
    if not (includes and (includes[0] / "torch" / "script.h").is_file()):
        raise NativeBuildUnavailable(f"the torch wheel has no C++ headers under {includes[:1]}")
    lib_dir = Path(torch.__file__).parent / "lib"
    return {"version": torch.__version__, "cxx11_abi": int(torch._C._GLIBCXX_USE_CXX11_ABI),
            "includes": [str(p) for p in includes], "lib_dir": str(lib_dir),
            "cuda": (lib_dir / "libtorch_cuda.so").is_file()}


def compile_argv(compiler: str, facts: dict, source: Path, output: Path) -> list[str]:
    """The compiler command line: one translation unit, linked against the wheel's libtorch.

    The Triton API symbols stay undefined: tritonserver resolves them when it loads the
    backend. The rpath lets the backend find libtorch without LD_LIBRARY_PATH. A CUDA build
    of torch also links libtorch_cuda, kept with --no-as-needed although no symbol of it is
    named: loading it registers the CUDA kernels, torch::cuda and the AOTInductor CUDA
    runner; without it a KIND_GPU instance finds no CUDA device.
    """
    cuda = ["-Wl,--no-as-needed", "-ltorch_cuda", "-Wl,--as-needed"] if facts.get("cuda") else []
    return [compiler, "-O2", "-std=c++20", "-shared", "-fPIC", "-w",
            f"-D_GLIBCXX_USE_CXX11_ABI={facts['cxx11_abi']}",
            *[f"-I{path}" for path in facts["includes"]], f"-I{source.parent}",
            str(source), "-o", str(output),
            f"-L{facts['lib_dir']}", f"-Wl,-rpath,{facts['lib_dir']}",
            *cuda, "-ltorch", "-ltorch_cpu", "-lc10"]


def build_key(compiler: str, facts: dict) -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCES.glob("*")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(f"{facts['version']}|{facts['cxx11_abi']}|{facts.get('cuda')}|{compiler}|{sys.platform}".encode())
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("RECDEPLOY_CACHE", Path.home() / ".cache" / "recdeploy")) / "native"


def native_backend(cache: Path | None = None, verbose: bool = False) -> Path:
    """libtriton_pytorch.so for the installed torch: cached, else compiled now."""
    if not sys.platform.startswith("linux"):
        raise NativeBuildUnavailable(f"the native backend is built for Linux only, not {sys.platform}")
    compiler = find_compiler()
    facts = torch_build_facts()
    folder = (cache or cache_root()) / build_key(compiler, facts)
    library = folder / LIBRARY_NAME
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"building the native libtorch backend into {folder} (about 25 s) ...", file=sys.stderr)
    # build beside the target and rename: a concurrent build or a killed one never leaves
    # a half-written library where the next run would load it
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        partial = Path(tmp) / LIBRARY_NAME
        argv = compile_argv(compiler, facts, SOURCES / "libtorch_backend.cc", partial)
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            (folder / "build.log").write_text(done.stdout + done.stderr)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise NativeBuildUnavailable(f"compiling the native backend failed (full log: "
                                         f"{folder / 'build.log'}):\n{tail}")
        os.replace(partial, library)
    return library


def main(argv: list[str] | None = None) -> int:
    try:
        print(native_backend(verbose=True))
    except NativeBuildUnavailable as error:
        print(f"native backend unavailable: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
