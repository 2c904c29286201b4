"""Datasets beyond MovieLens and the synthetic set: one module each, registered with
``@register_dataset("name")`` (``recdeploy.train.data``). Every module here is imported the
first time a dataset is looked up, so a new dataset is one new file.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
