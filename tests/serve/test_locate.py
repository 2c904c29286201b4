from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from recdeploy.serve.locate import STUB_NAME, TritonNotFoundError, find_triton_install


def test_finds_the_server_from_the_pytriton_wheel():
    install = find_triton_install(environ={})
    assert install.server_bin.name == "tritonserver" and os.access(install.server_bin, os.X_OK)
    assert (install.backends_dir / "python" / "libtriton_python.so").is_file()
    assert install.stub_for(sys.version_info[:2]) == \
        install.stubs_dir / f"{sys.version_info[0]}.{sys.version_info[1]}" / STUB_NAME
    assert list(install.libs_dir.glob("libtritonserver-*.so"))


def test_missing_stub_version_names_the_available_ones():
    install = find_triton_install(environ={})
    with pytest.raises(TritonNotFoundError, match=r"no python backend stub for Python 3\.99.*3\.11"):
        install.stub_for((3, 99))


def fake_bundle(root: Path) -> Path:
    """The GPU bundle's layout: bin/tritonserver, backends/python (stub inside), libs/."""
    server = root / "bin" / "tritonserver"
    server.parent.mkdir(parents=True)
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    python = root / "backends" / "python"
    python.mkdir(parents=True)
    (python / "libtriton_python.so").write_bytes(b"")
    (python / STUB_NAME).write_bytes(b"stub")
    (root / "libs").mkdir()
    return server


def test_environment_override_uses_the_bundle_layout(tmp_path):
    server = fake_bundle(tmp_path)
    install = find_triton_install(environ={"TRITONSERVER": str(server)})
    assert install.server_bin == server
    assert install.backends_dir == tmp_path / "backends"
    assert install.stubs_dir is None and install.libs_dir == tmp_path / "libs"
    assert install.stub_for((3, 12)) == tmp_path / "backends" / "python" / STUB_NAME


def test_environment_override_honours_backend_dir(tmp_path):
    server = fake_bundle(tmp_path / "a")
    (tmp_path / "a" / "backends").rename(tmp_path / "elsewhere")
    install = find_triton_install(environ={"TRITONSERVER": str(server),
                                           "TRITON_BACKEND_DIR": str(tmp_path / "elsewhere")})
    assert install.backends_dir == tmp_path / "elsewhere"


def test_environment_override_to_a_missing_binary_says_how_to_fix(tmp_path):
    with pytest.raises(TritonNotFoundError,
                       match=r"nope \(from TRITONSERVER\) does not exist.*nvidia-pytriton==0\.7\.0"):
        find_triton_install(environ={"TRITONSERVER": str(tmp_path / "nope")})


def test_missing_python_backend_is_named(tmp_path):
    server = fake_bundle(tmp_path)
    (tmp_path / "backends" / "python" / "libtriton_python.so").unlink()
    with pytest.raises(TritonNotFoundError, match=r"python backend .*libtriton_python\.so"):
        find_triton_install(environ={"TRITONSERVER": str(server)})


def test_a_bundled_stub_for_another_python_is_refused(tmp_path):
    server = fake_bundle(tmp_path)
    (tmp_path / "backends" / "python" / STUB_NAME).write_bytes(b"\0libpython3.12.so.1.0\0")
    install = find_triton_install(environ={"TRITONSERVER": str(server)})
    assert install.stub_for((3, 12)).is_file()
    with pytest.raises(TritonNotFoundError, match=r"no python backend stub for Python 3\.11"):
        install.stub_for((3, 11))
