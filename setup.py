"""Each stage folder (train/, export/, ...) is the package recdeploy.<stage>.

recdeploy/<stage> is a symbolic link to ../<stage>, so the source tree itself has the import
layout: an editor's "go to definition", a type checker and ``PYTHONPATH=.`` all resolve
``recdeploy.train.data`` to train/data.py with no install hook. setuptools follows the links
when it discovers packages and copies the files into the wheel. The package list is
discovered, not written by hand: a hand-written list silently drops a new subpackage.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["recdeploy", "recdeploy.*"]),
    package_data={"": ["*.json"], "recdeploy.serve": ["native/*.h", "native/*.cc"]},
)
