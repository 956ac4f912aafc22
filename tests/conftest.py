"""Shared fixtures: the real datasets of ../shared/data (read in place, never copied)."""
import functools
import os
import warnings

import pytest

# In-process CLI calls must not turn JAX's persistent compilation cache on for the rest of the test
# process (every later compile would then be written to ~/.cache; tests that check the cache set
# their own folder and unset this).
os.environ.setdefault("CROWDINFER_NO_CACHE", "1")

import crowdinfer as ci

DATA = ci.datasets.shared_data_dir()


@functools.lru_cache(maxsize=None)
def _load(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zencrowd_in's duplicate rows are collapsed, by policy
        return ci.datasets.load(DATA / name)


@pytest.fixture(scope="session")
def dataset():
    """``dataset(name)`` loads ``../shared/data/<name>``; fails loudly if the folder is missing."""
    if not (DATA / "rte" / "annotations.csv").exists():
        pytest.fail(
            f"the real datasets are missing: expected {DATA} (the shared/data folder beside the "
            "repository) or set CROWDINFER_DATA to a folder in that layout",
            pytrace=False,
        )
    return _load


@pytest.fixture(scope="module", autouse=True)
def _fresh_jax_caches():
    """Drop JAX's compiled executables after each test module.  One process compiles several
    hundred programs over the suite; once, late in a run, XLA's CPU compiler segfaulted
    (test_weights' EBCC fit, which passes alone): keeping only one module's programs alive bounds
    what accumulates."""
    yield
    import jax

    jax.clear_caches()
