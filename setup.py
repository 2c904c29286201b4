"""Maps each stage folder (train/, export/, ...) onto the import name recdeploy.<stage>.

The package list is computed, not written by hand: a hand-written list silently drops a
new subpackage from the wheel.
"""
from setuptools import find_packages, setup

STAGES = ["train", "compress", "export", "serve", "clients", "perf"]

package_dir = {"recdeploy": "recdeploy"}
packages = ["recdeploy"]
for stage in STAGES:
    package_dir[f"recdeploy.{stage}"] = stage
    packages.append(f"recdeploy.{stage}")
    packages += [f"recdeploy.{stage}.{sub}" for sub in find_packages(stage)]

setup(
    package_dir=package_dir,
    packages=packages,
    package_data={"": ["*.py", "*.json"]},
)
