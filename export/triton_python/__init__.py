"""Sources of the python-backend models. Each file is copied as ``<model>/<version>/model.py``.

They import nothing but numpy (and the backend's own ``triton_python_backend_utils``), so the
repository also loads in the stock NGC Triton container. The numpy functions in each file
are tested directly; the ``TritonPythonModel`` classes are thin adapters over them.
"""
from pathlib import Path

# model name -> source file; a new python model is a new file here
SOURCES = {path.stem: path for path in sorted(Path(__file__).parent.glob("*.py"))
           if path.name != "__init__.py"}
