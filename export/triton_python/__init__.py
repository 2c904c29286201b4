"""Sources of the python-backend models. Each file is copied as ``<model>/<version>/model.py``.

They import nothing but numpy (and the backend's own ``triton_python_backend_utils``), so the
repository also loads in the stock NGC Triton container. The numpy functions in each file
are tested directly; the ``TritonPythonModel`` classes are thin adapters over them.
"""
import importlib.util
from pathlib import Path

# model name -> source file; a new python model is a new file here
SOURCES = {path.stem: path for path in sorted(Path(__file__).parent.glob("*.py"))
           if path.name != "__init__.py"}


def python_model_files(name: str) -> dict[str, Path]:
    """The files a python model's version folder needs beside its arrays: ``model.py``."""
    if name not in SOURCES:
        raise KeyError(f"no python model {name!r}; known: {', '.join(SOURCES)}")
    return {"model.py": SOURCES[name]}


def load_python_model(name: str):
    """Import a python-backend model's file (the one the server runs) to call its numpy core."""
    spec = importlib.util.spec_from_file_location(f"recdeploy_triton_{name}", SOURCES[name])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
