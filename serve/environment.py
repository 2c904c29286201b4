"""Check the Python environment the python backend stub will run in, before starting.

    from recdeploy.serve.environment import check_stub_environment
    info = check_stub_environment(Path(sys.executable).parent)   # {"numpy": "1.26.4", ...}

The stub ignores PYTHONPATH: its embedded interpreter takes its packages from the first
``python3`` on the server's PATH, so that is the interpreter probed here.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

REQUIRED_MODULES = ("numpy", "onnxruntime")

# Prints {"python": "X.Y", "module": "version" or null}; the stub environment's python3 runs it.
_PROBE = """
import importlib, json, sys
found = {"python": "%d.%d" % sys.version_info[:2]}
for name in sys.argv[1:]:
    try:
        found[name] = getattr(importlib.import_module(name), "__version__", "unknown")
    except Exception:
        found[name] = None
print(json.dumps(found))
"""


class StubEnvironmentError(ValueError):
    """The python3 the stub will use cannot run this project's python models."""


class NumpyTooNewError(StubEnvironmentError):
    """numpy >= 2 in the stub's environment: this server then answers with empty tensors."""


def check_stub_environment(python_bin_dir: Path,
                           required: tuple[str, ...] = REQUIRED_MODULES) -> dict[str, str]:
    """Probe ``python_bin_dir/python3``; return {module: version, "python": "X.Y"} or raise."""
    python = Path(python_bin_dir) / "python3"
    if not python.is_file():
        raise StubEnvironmentError(
            f"{python} does not exist: the python backend stub runs the first python3 on "
            f"PATH, so the folder put first must hold one (use a venv's bin folder)")
    modules = tuple(dict.fromkeys(("numpy",) + tuple(required)))
    found = _probe(python, modules)
    missing = [name for name in modules if not found.get(name)]
    if missing:
        raise StubEnvironmentError(
            f"{', '.join(missing)} cannot be imported by {python}; the python backend stub "
            f"takes its packages from that interpreter, so every python model would fail to "
            f"load. Install them there: {python} -m pip install 'numpy<2' onnxruntime")
    # no module is missing: every value left is a version string
    versions = {name: version for name, version in found.items() if version is not None}
    if _major(versions["numpy"]) >= 2:
        raise NumpyTooNewError(
            f"{python} has numpy {versions['numpy']}: with numpy >= 2 in the stub's environment "
            f"this tritonserver (2.51, python backend) returns EMPTY output tensors for every "
            f"inference and reports no error (clients then fail with 'cannot reshape array of "
            f"size 0'). Install numpy<2 there: {python} -m pip install 'numpy<2'")
    return versions


def _probe(python: Path, modules: tuple[str, ...]) -> dict[str, str | None]:
    try:
        result = subprocess.run([str(python), "-c", _PROBE, *modules], capture_output=True,
                                text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StubEnvironmentError(f"could not run {python}: {error}") from error
    lines = result.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if result.returncode == 0 and lines else None
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, dict):
        raise StubEnvironmentError(
            f"probing {python} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-500:]}")
    return found


def _major(version: str) -> int:
    head = version.split(".")[0]
    digits = "".join(ch for ch in head if ch.isdigit())
    return int(digits) if digits else 0
