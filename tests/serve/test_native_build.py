"""The native libtorch backend: its build command, cache key, fallbacks, and the built library."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from recdeploy.serve import native_build
from recdeploy.serve.backends import compose_backend_dir, native_backends
from recdeploy.serve.native_build import NativeBuildUnavailable, build_key, compile_argv, find_compiler, native_backend
from recdeploy.serve.server import uses_torchscript

FACTS = {"version": "2.13.0+cpu", "cxx11_abi": 1, "includes": ["/t/include", "/t/include/api"],
         "lib_dir": "/t/lib"}


def test_compile_argv_links_the_wheels_libtorch_with_its_abi_and_an_rpath(tmp_path):
    argv = compile_argv("/usr/bin/g++", FACTS, Path("/src/native/libtorch_backend.cc"), tmp_path / "x.so")
    assert argv[0] == "/usr/bin/g++" and "-shared" in argv and "-fPIC" in argv
    assert "-D_GLIBCXX_USE_CXX11_ABI=1" in argv
    assert "-I/t/include" in argv and "-I/t/include/api" in argv and "-I/src/native" in argv
    assert "-Wl,-rpath,/t/lib" in argv and "-L/t/lib" in argv
    assert argv[-3:] == ["-ltorch", "-ltorch_cpu", "-lc10"]
    assert argv[argv.index("-o") + 1] == str(tmp_path / "x.so")


def test_a_cuda_torch_links_libtorch_cuda_even_though_no_symbol_of_it_is_named(tmp_path):
    """Loading libtorch_cuda registers the CUDA kernels and torch::cuda: without it a KIND_GPU
    instance finds no device, and an --as-needed linker (Ubuntu's default) would drop it."""
    argv = compile_argv("/usr/bin/g++", {**FACTS, "cuda": True}, Path("/src/native/libtorch_backend.cc"),
                        tmp_path / "x.so")
    at = argv.index("-ltorch_cuda")
    assert argv[at - 1] == "-Wl,--no-as-needed" and argv[at + 1] == "-Wl,--as-needed"
    assert "-ltorch_cuda" not in compile_argv("/usr/bin/g++", FACTS, Path("/src/x.cc"), tmp_path / "x.so")
    assert build_key("/usr/bin/g++", {**FACTS, "cuda": True}) != build_key("/usr/bin/g++", FACTS)


def test_build_key_changes_with_torch_and_compiler_and_not_otherwise():
    key = build_key("/usr/bin/g++", FACTS)
    assert key == build_key("/usr/bin/g++", dict(FACTS))
    assert key != build_key("/usr/bin/clang++", FACTS)
    assert key != build_key("/usr/bin/g++", {**FACTS, "version": "2.14.0+cpu"})
    assert key != build_key("/usr/bin/g++", {**FACTS, "cxx11_abi": 0})


def test_no_compiler_is_a_clear_unavailable(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(NativeBuildUnavailable, match="no C\\+\\+ compiler on PATH"):
        find_compiler()


def test_a_compile_error_names_its_log_and_keeps_nothing_half_built(monkeypatch, tmp_path):
    monkeypatch.setattr(native_build, "find_compiler", lambda: "/bin/false")
    monkeypatch.setattr(native_build, "torch_build_facts", lambda: FACTS)
    with pytest.raises(NativeBuildUnavailable, match="compiling the native backend failed"):
        native_backend(cache=tmp_path)
    assert not list(tmp_path.rglob("*.so"))
    assert list(tmp_path.rglob("build.log"))


def test_unavailable_falls_back_to_the_python_based_backend_and_says_why(monkeypatch):
    def unavailable(verbose=False):
        raise NativeBuildUnavailable("no C++ compiler on PATH")

    monkeypatch.setattr(native_build, "native_backend", unavailable)
    heard = []
    assert native_backends(log=heard.append) == {}
    assert "python backend" in heard[0] and "no C++ compiler" in heard[0]


def test_switched_off_by_flag_or_environment(monkeypatch):
    assert native_backends(enabled=False) == {}
    monkeypatch.setenv("RECDEPLOY_NATIVE_BACKEND", "0")
    assert native_backends() == {}


def test_a_native_backend_takes_the_place_of_its_python_based_model_py(tmp_path):
    library = tmp_path / "libtriton_pytorch.so"
    library.write_bytes(b"\x7fELF-not-really")
    dest = compose_backend_dir(tmp_path / "backends", native={"pytorch": library})
    assert (dest / "pytorch" / "libtriton_pytorch.so").read_bytes() == library.read_bytes()
    assert not (dest / "pytorch" / "model.py").exists()
    assert (dest / "onnxruntime" / "model.py").is_file()


def test_only_repositories_with_a_torchscript_model_need_the_build(tmp_path):
    (tmp_path / "scorer").mkdir()
    (tmp_path / "scorer" / "config.pbtxt").write_text('name: "scorer"\nplatform: "onnxruntime_onnx"\n')
    assert not uses_torchscript(tmp_path)
    (tmp_path / "fused").mkdir()
    (tmp_path / "fused" / "config.pbtxt").write_text('name: "fused"\nbackend: "pytorch"\n')
    assert uses_torchscript(tmp_path)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="no C++ compiler here")
def test_the_built_library_exports_the_backend_entry_points_and_is_cached():
    library = native_backend()
    assert library.name == "libtriton_pytorch.so" and library.stat().st_size > 50_000
    assert native_backend() == library                    # the second call reuses the build
    if shutil.which("nm"):
        symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)],
                                 capture_output=True, text=True, check=True).stdout
        for name in ("TRITONBACKEND_Initialize", "TRITONBACKEND_ModelInitialize",
                     "TRITONBACKEND_ModelInstanceInitialize", "TRITONBACKEND_ModelInstanceExecute",
                     "TRITONBACKEND_ModelInstanceFinalize", "TRITONBACKEND_ModelFinalize"):
            assert name in symbols
