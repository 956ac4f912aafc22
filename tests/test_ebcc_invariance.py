"""EBCC's choice among its restarts (models/ebcc.py): ELBOs the stopping rule cannot tell apart
are ties, won by the lowest-numbered (name-free) restart, so renaming workers, items or classes
cannot change which restart is kept (tests/test_invariance.py checks the output itself)."""
import jax.numpy as jnp

from crowdinfer.models import ebcc


def test_ties_go_to_the_lowest_numbered_restart_and_nan_never_wins():
    elbo = jnp.array([-10.0, -5.0 - 1e-3, jnp.nan, -5.0, -7.0])
    assert int(ebcc.choose(elbo, 0.0)) == 3  # no ties: the highest ELBO
    assert int(ebcc.choose(elbo, 1e-2)) == 1  # 1 and 3 tie
    assert int(ebcc.choose(elbo, 10.0)) == 0  # every finite ELBO ties
    assert int(ebcc.choose(jnp.array([jnp.nan, -jnp.inf, -3.0]), 0.0)) == 2
