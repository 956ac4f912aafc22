"""NUTS without label switching: draws are aligned to the EM solution (crowdinfer.inference.mcmc).

The data are Table 1 of Dawid & Skene (1979): 45 patients, 4 classes; observer 1 assessed every
patient three times, observers 2-5 once (the table NumPyro's ``examples/annotation.py`` uses).
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
import pytest
from jax.scipy.special import logsumexp
from numpyro.infer import MCMC, NUTS

import crowdinfer as ci
from crowdinfer.inference import mcmc

# one string per patient: the 7 assessments (observer 1 three times, then observers 2, 3, 4, 5),
# classes 1-4 as printed in the paper
TABLE_1979 = """
1111111 3334334 1122122 2223121 2223222 2223322 1222111 3333433 2222223 2322223
4444444 2223343 1111111 2223212 1211111 1112111 1111111 1111111 2222221 2221322
2222222 2222221 2223222 2212222 1111111 1111111 2322222 1111111 1111111 1121121
1111111 3333233 1111111 2222222 2223232 4334343 2212232 2323233 3333432 1111111
1111111 1212111 2322222 1211111 2222222
""".split()
OBSERVER = [0, 0, 0, 1, 2, 3, 4]
# Dirichlet(1) on every confusion row and on the class proportions: the prior of NumPyro's example
FLAT = dict(prior="symmetric", strength=0.0, class_prior=0.0)


def table() -> np.ndarray:
    """(45, 7) class codes 0-3."""
    return np.array([[int(c) - 1 for c in row] for row in TABLE_1979])


def annotations_1979() -> ci.Annotations:
    y = table()
    rows = [(i, OBSERVER[p], y[i, p]) for i in range(y.shape[0]) for p in range(y.shape[1])]
    df = pd.DataFrame(rows, columns=["item", "worker", "label"])
    return ci.Annotations.from_dataframe(df, duplicates="keep")  # observer 1's repeats all count


def test_the_table_is_the_published_one():
    y = table()
    assert y.shape == (45, 7) and set(np.unique(y)) == {0, 1, 2, 3}
    assert np.bincount(y.ravel(), minlength=4).tolist() == [127, 125, 48, 15]
    ann = annotations_1979()
    assert (ann.n_items, ann.n_workers, ann.n_classes, ann.n_annotations) == (45, 5, 4, 315)


def test_relabel_undoes_known_permutations():
    """Draws that are the reference up to a random class permutation per draw come back exact."""
    rng = np.random.default_rng(0)
    n, k, m, chains, draws = 30, 4, 3, 2, 50
    ref = rng.dirichlet(np.full(k, 0.3), size=n)
    conf = rng.dirichlet(np.ones(k), size=(m, k))
    prior = rng.dirichlet(np.ones(k))
    perms = np.stack([[rng.permutation(k) for _ in range(draws)] for _ in range(chains)])
    # the draw's class a is the reference class perms[a]: its column a holds reference column perms[a]
    probs = np.stack([[ref[:, perms[c, d]] for d in range(draws)] for c in range(chains)])
    sites = {
        "confusion": np.stack([[conf[:, perms[c, d], :] for d in range(draws)] for c in range(chains)]),
        "class_prior": np.stack([[prior[perms[c, d]] for d in range(draws)] for c in range(chains)]),
        "other": np.zeros((chains, draws, 5)),
    }
    out, out_probs, found = mcmc.relabel(sites, probs, ref, {"confusion": -2, "class_prior": -1})
    np.testing.assert_array_equal(found, perms)
    np.testing.assert_allclose(out_probs, np.broadcast_to(ref, out_probs.shape))
    np.testing.assert_allclose(out["confusion"], np.broadcast_to(conf, out["confusion"].shape))
    np.testing.assert_allclose(out["class_prior"], np.broadcast_to(prior, out["class_prior"].shape))
    assert out["other"] is sites["other"]
    assert not np.array_equal(perms, np.broadcast_to(np.arange(k), perms.shape))


def dense_dawid_skene():
    """An independent NumPyro Dawid-Skene on the dense (patients x assessments) table, labels
    summed out by hand: the same posterior as crowdinfer's segment-sum model, written differently."""
    y, observer, k = table(), np.asarray(OBSERVER), 4
    with numpyro.plate("observer", observer.max() + 1, dim=-2), numpyro.plate("true", k, dim=-1):
        beta = numpyro.sample("beta", dist.Dirichlet(jnp.ones(k)))
    pi = numpyro.sample("pi", dist.Dirichlet(jnp.ones(k)))
    log_lik = jnp.log(beta)[observer[None, :], :, y]  # (N, P, K): log p(y_ip | c)
    joint = jnp.log(pi) + log_lik.sum(1)
    numpyro.factor("obs", logsumexp(joint, -1).sum())


@pytest.mark.slow
def test_nuts_on_the_1979_data_has_no_label_switching():
    ann = annotations_1979()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        em = ci.fit(ann, **FLAT)
        post = ci.fit(ann, "dawid_skene", "nuts", num_warmup=300, num_samples=300, num_chains=4,
                      seed=0, **FLAT)
    # the chains did switch (raw r-hat is 2-4 here), and relabelling undid it
    assert post.options["relabelled_draws"] > 0.2
    assert all(d["max_r_hat"] < 1.05 for d in post.diagnostics.values()), post.diagnostics
    # the class proportions sit near the EM estimate, minority classes included
    np.testing.assert_allclose(post.class_prior, em.class_prior, atol=0.03)

    # an independent NumPyro run of the same model, relabelled the same way, agrees
    y, observer = jnp.asarray(table()), jnp.asarray(OBSERVER)
    sampler = MCMC(NUTS(dense_dawid_skene), num_warmup=300, num_samples=300, num_chains=4,
                   chain_method="vectorized", progress_bar=False)
    sampler.run(jax.random.key(1))
    draws = sampler.get_samples(group_by_chain=True)
    answers = jax.nn.one_hot(y, 4)  # (N, P, L)
    log_lik = jnp.einsum("cspkl,npl->csnk", jnp.log(draws["beta"])[:, :, observer], answers)
    joint = jnp.log(draws["pi"])[:, :, None, :] + log_lik
    probs = np.asarray(jax.nn.softmax(joint, -1))
    theirs, probs, perms = mcmc.relabel({"pi": np.asarray(draws["pi"])}, probs, em.label_probs,
                                        {"pi": -1})
    assert np.mean(np.any(perms != np.arange(4), -1)) > 0.2  # NumPyro's chains switch too
    diff = np.abs(probs.mean((0, 1)) - post.label_probs)
    assert diff.mean() < 0.03 and diff.max() < 0.15, (diff.mean(), diff.max())
    np.testing.assert_allclose(theirs["pi"].mean((0, 1)), post.class_prior, atol=0.03)
