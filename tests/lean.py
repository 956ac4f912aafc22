"""Which real datasets a per-dataset test runs in the default (lean) suite.

A test that checks one claim on each of the 12 datasets of ../shared/data (an accuracy against a
published or peer figure) runs three of them by default -- binary, many classes and a skewed
crowd -- and every dataset under ``pytest -m slow`` (run by hand before a release), so that the
default run stays within about 10 minutes on 2 cores."""
import pytest

LEAN = ("rte", "cf", "zencrowd_in")  # binary; 5 classes; binary, skewed classes, busy workers


def lean_or_slow(names, keep=LEAN):
    """``names`` as pytest parameters, those not in ``keep`` marked ``slow``."""
    return [pytest.param(n, marks=() if n in keep else pytest.mark.slow) for n in names]
