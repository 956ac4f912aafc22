"""Package discovery that cannot forget a subpackage.

``crowdinfer/`` and every package under it install as themselves; the top-level ``models/`` folder
(kept at the top of the repository, one generative model per file) installs as ``crowdinfer.models``
with every package under it.  ``tests/test_packaging.py`` builds a wheel and checks that each
``__init__.py`` of the tree is in it.
"""
from setuptools import find_packages, setup

packages = find_packages(include=["crowdinfer", "crowdinfer.*"])
models = ["crowdinfer.models"] + [f"crowdinfer.models.{p}" for p in find_packages("models")]
setup(
    packages=packages + models,
    package_dir={"crowdinfer.models": "models"},
)
