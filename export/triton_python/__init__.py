"""Sources of the python-backend models. Each file is copied as ``<model>/<version>/model.py``.

They import nothing but numpy (and the backend's own ``triton_python_backend_utils``), so the
repository also loads in the stock NGC Triton container. The numpy functions in each file
are tested directly; the ``TritonPythonModel`` classes are thin adapters over them.
"""
from pathlib import Path

SOURCES = {
    "feature_lookup": Path(__file__).with_name("feature_lookup.py"),
    "topk": Path(__file__).with_name("topk.py"),
}
