"""Sources of the python-backend models. Each file is copied as ``<model>/<version>/model.py``,
with the shared core ``recdeploy_triton_core.py`` beside it (and the store module; criteo_features
also gets the row cache ``recdeploy_cache.py``, see ``EXTRAS``).

They import nothing but numpy, the core (found beside ``model.py``: the stub puts the version
folder on ``sys.path``) and the backend's own ``triton_python_backend_utils``, so the
repository also loads in the stock NGC Triton container; the one exception is ``ann_search``
(the ``recommend_ann_*`` entries), which needs ``faiss-cpu`` in the stub's environment. The numpy functions are tested
directly; the ``TritonPythonModel`` classes are thin adapters over them.
"""
import importlib.util
import sys
from pathlib import Path

# the numpy core every model imports; copied into each version folder, never a model itself
CORE = Path(__file__).parent / "recdeploy_triton_core.py"
# the feature stores (file / Redis) the lookups read through; copied beside the core
STORE = Path(__file__).parent / "recdeploy_store.py"
SHARED = (CORE, STORE)
# the row cache over a memory-mapped table (cached tables); only the models named here get it
CACHE = Path(__file__).parent / "recdeploy_cache.py"
EXTRAS = {"criteo_features": (CACHE,)}

# model name -> source file; a new python model is a new file here
SOURCES = {path.stem: path for path in sorted(Path(__file__).parent.glob("*.py"))
           if path.name not in ("__init__.py", CORE.name, STORE.name, CACHE.name)}


def python_model_files(name: str) -> dict[str, Path]:
    """The files a python model's version folder needs beside its arrays: ``model.py``, the
    core, the store module and the model's extras (``EXTRAS``)."""
    if name not in SOURCES:
        raise KeyError(f"no python model {name!r}; known: {', '.join(SOURCES)}")
    return {"model.py": SOURCES[name], **{path.name: path for path in (*SHARED, *EXTRAS.get(name, ()))}}


def load_core(path: Path = CORE):
    """A shared module (the core by default) under the name the model files import, as the
    stub finds it."""
    module = sys.modules.get(path.stem)
    if module is None or Path(getattr(module, "__file__", "")) != path:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path} as a module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    return module


def load_store():
    """The store module (FileStore, RedisStore, open_store) as the lookups import it."""
    return load_core(STORE)


def load_python_model(name: str):
    """Import a python-backend model's file (the one the server runs) to call its numpy core."""
    for path in (*SHARED, *EXTRAS.get(name, ())):
        load_core(path)
    spec = importlib.util.spec_from_file_location(f"recdeploy_triton_{name}", SOURCES[name])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {SOURCES[name]} as a module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
