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
