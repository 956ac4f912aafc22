"""Proposal-bias simulation (SPA) and correction (CleverLabel), seed 002."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from crowdinfer import correction as cc

ALPHA = 1e-6  # family-wise false-alarm rate of every statistical check below
M = 2000  # items of the larger simulated tasks (one shape: each jitted kernel compiles once)


def _binomial_interval(n, p, n_tests):
    """Exact two-sided binomial interval holding with probability >= 1 - ALPHA / n_tests."""
    tail = ALPHA / (2 * n_tests)
    return stats.binom.ppf(tail, n, p), stats.binom.isf(tail, n, p)


def _dirichlet_items(seed, n_items, n_classes, concentration=1.0):
    return np.random.default_rng(seed).dirichlet(np.full(n_classes, concentration), n_items)


# 7 items, 4 classes: ordinary, one-hot at the proposal, zero mass at the proposal, zero classes
P = np.array([
    [0.4, 0.3, 0.2, 0.1],
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 0.5, 0.5, 0.0],
    [0.1, 0.0, 0.9, 0.0],
    [0.25, 0.25, 0.25, 0.25],
    [0.0, 0.0, 0.3, 0.7],
    [0.05, 0.05, 0.05, 0.85],
])
RHO = np.array([0, 0, 0, 2, 3, 3, 1])


# --------------------------------------------------------------------------- SPA
@pytest.mark.parametrize("delta", [0.0, 0.35, 1.0])
def test_spa_acceptance_rate_is_eq1_within_binomial_bounds(delta):
    n = 4000
    a = np.asarray(cc.acceptance_probability(P, RHO, delta))
    np.testing.assert_allclose(a, delta + (0.99 - delta) * P[np.arange(7), RHO], rtol=1e-6)
    counts = np.asarray(cc.simulate_proposal_acceptance(jax.random.key(1), P, RHO, n, delta))
    labels = np.asarray(cc.simulate_proposal_annotations(jax.random.key(2), P, RHO, n, delta))
    per_annotation = (labels == RHO[:, None]).sum(axis=1)
    for accepted in (counts[np.arange(7), RHO], per_annotation):
        lo, hi = _binomial_interval(n, a, n_tests=2 * 7 * 3)
        assert ((accepted >= lo) & (accepted <= hi)).all(), (accepted / n, a)
    assert (counts.sum(axis=1) == n).all() and (counts == np.round(counts)).all()


def test_spa_rejected_votes_follow_the_ground_truth_of_the_other_classes():
    n, delta = 20000, 0.2
    counts = np.asarray(cc.simulate_proposal_acceptance(jax.random.key(3), P, RHO, n, delta))
    labels = np.asarray(cc.simulate_proposal_annotations(jax.random.key(4), P, RHO, n, delta))
    by_annotation = np.stack([(labels == k).sum(axis=1) for k in range(4)], axis=1)
    others = P.copy()
    others[np.arange(7), RHO] = 0.0
    for votes in (counts, by_annotation):
        rejected = votes.sum(axis=1) - votes[np.arange(7), RHO]
        for i in range(7):
            if others[i].sum() == 0:  # one-hot at the proposal: a rejection is a uniform slip
                share = np.where(np.arange(4) == RHO[i], 0.0, 1.0 / 3)
            else:
                share = others[i] / others[i].sum()
            for k in range(4):
                if k == RHO[i]:
                    continue
                lo, hi = _binomial_interval(rejected[i], share[k], n_tests=2 * 7 * 3)
                assert lo <= votes[i, k] <= hi, (i, k, votes[i], share)
    # zero-probability classes other than the proposal are never chosen (except the slip of a
    # one-hot proposal); a proposal of zero probability is still accepted with probability delta
    assert counts[2, 3] == counts[3, 1] == counts[3, 3] == 0 and counts[2, 0] > 0
    assert counts[5, 0] == counts[5, 1] == 0
    assert counts[1, 1:].sum() > 0  # 1* = 0.99: even a certain proposal is sometimes rejected


def test_spa_corner_cases_are_exact():
    key = jax.random.key(5)
    # 1* = 1: a one-hot proposal (item 1) is always accepted, whatever delta
    for delta in (0.0, 0.5, 1.0):
        c = cc.simulate_proposal_acceptance(key, P, RHO, 500, delta, upper=1.0)
        np.testing.assert_array_equal(c[1], [500, 0, 0, 0])
    # delta = 0 and P(proposal) = 0 (item 2): never accepted
    c = cc.simulate_proposal_acceptance(key, P, RHO, 500, 0.0)
    assert c[2, 0] == 0 and c[2].sum() == 500
    # delta = 1 = 1*: A = 1, always accepted; delta = 1 > 1* = 0.99: A = 1 - 0.01 P(proposal)
    c = np.asarray(cc.simulate_proposal_acceptance(key, P, RHO, 500, 1.0, upper=1.0))
    np.testing.assert_array_equal(c[np.arange(7), RHO], 500)
    c = np.asarray(cc.simulate_proposal_acceptance(key, P, RHO, 500, 1.0))
    assert c[2, 0] == 500
    # the expected vote distribution: A at the proposal, the rest in proportion to P
    p_b = np.asarray(cc.spa_distribution(P, RHO, 0.3))
    a = np.asarray(cc.acceptance_probability(P, RHO, 0.3))
    np.testing.assert_allclose(p_b[np.arange(7), RHO], a, rtol=1e-6)
    np.testing.assert_allclose(p_b[1], [0.99, 0.01 / 3, 0.01 / 3, 0.01 / 3], rtol=1e-5)
    np.testing.assert_allclose(p_b[3], [0.1 * (1 - a[3]) / 0.1, 0.0, a[3], 0.0], rtol=1e-5)
    # per-item numbers of annotations, including zero
    c = cc.simulate_proposal_acceptance(key, P, RHO, np.array([0, 3, 7, 1, 1, 1, 1]), 0.3)
    np.testing.assert_array_equal(c.sum(axis=1), [0, 3, 7, 1, 1, 1, 1])
    np.testing.assert_allclose(cc.soft_label(c)[0], 0.25)  # no votes: uniform


def test_spa_is_reproducible_from_its_key():
    a = cc.simulate_proposal_acceptance(jax.random.key(7), P, RHO, 50, 0.3)
    b = cc.simulate_proposal_acceptance(jax.random.key(7), P, RHO, 50, 0.3)
    c = cc.simulate_proposal_acceptance(jax.random.key(8), P, RHO, 50, 0.3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    x = cc.simulate_proposal_annotations(jax.random.key(7), P, RHO, 50, 0.3)
    np.testing.assert_array_equal(x, cc.simulate_proposal_annotations(jax.random.key(7), P, RHO, 50, 0.3))


def test_spa_biases_toward_the_proposal_and_simulated_proposals_have_their_accuracy():
    p = _dirichlet_items(0, M, 5, concentration=0.5)
    rho = np.asarray(cc.simulate_proposals(jax.random.key(9), p, 0.7))
    right = rho == p.argmax(axis=1)
    lo, hi = _binomial_interval(M, 0.7, n_tests=1)
    assert lo <= right.sum() <= hi
    biased = cc.soft_label(cc.simulate_proposal_acceptance(jax.random.key(10), p, rho, 200, 0.2))
    lift = np.asarray(biased)[np.arange(M), rho] - p[np.arange(M), rho]
    assert lift.mean() > 0.1 and (lift > 0).mean() > 0.9


# --------------------------------------------------------------------------- CB, BC, CleverLabel
def test_bias_correction_recovers_the_unbiased_distribution_as_n_grows():
    p = _dirichlet_items(1, M, 5)
    rho = cc.simulate_proposals(jax.random.key(11), p, 0.8)
    delta = 0.3
    kl_bc, kl_spa = [], []
    for n in (10, 100, 1000, 10000):
        runs = [cc.simulate_proposal_acceptance(jax.random.key(100 * n + r), p, rho, n, delta)
                for r in range(3)]
        kl_bc.append(np.mean([cc.kl_divergence(p, cc.bias_correction(c, rho, delta)).mean() for c in runs]))
        kl_spa.append(np.mean([cc.kl_divergence(p, cc.soft_label(c)).mean() for c in runs]))
    assert all(a > b for a, b in zip(kl_bc, kl_bc[1:])), kl_bc
    assert kl_bc[-1] < 2e-3, kl_bc
    assert kl_spa[-1] > 20 * kl_bc[-1], (kl_spa, kl_bc)  # the uncorrected bias does not vanish


def test_bias_correction_formula_by_hand():
    counts = np.array([[6.0, 3.0, 1.0, 0.0], [0.0, 0.0, 4.0, 0.0], [0.0, 2.0, 2.0, 0.0],
                       [0.0, 0.0, 0.0, 0.0]])
    rho = np.array([0, 2, 0, 1])
    q = np.asarray(cc.bias_correction(counts, rho, delta=0.2, upper=0.9))
    b = (0.6 - 0.2) / 0.7
    np.testing.assert_allclose(q[0], [b, (1 - b) * 0.75, (1 - b) * 0.25, 0.0], rtol=1e-6)
    np.testing.assert_allclose(q[1], [0, 0, 1, 0])          # all accepted: B clamps to 1
    np.testing.assert_allclose(q[2], [0, 0.5, 0.5, 0])      # none accepted: B clamps to 0
    np.testing.assert_allclose(q[3], [0.25] * 4)            # no votes: uniform


def test_class_blending_identity_and_formula():
    p = _dirichlet_items(2, 7, 4)
    conf = cc.estimate_class_confusion(cc.sample_annotations(jax.random.key(12), p, 10))
    np.testing.assert_allclose(cc.class_blending(p, conf, mu=1.0), p, atol=1e-6)
    np.testing.assert_allclose(cc.class_blending(p, conf, mu=0.0), np.asarray(conf)[p.argmax(1)], atol=1e-6)
    c = np.array([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.0, 1.0]])
    out = cc.class_blending(np.array([[0.2, 0.5, 0.3]]), c, mu=0.75)
    np.testing.assert_allclose(out, [[0.75 * 0.2 + 0.025, 0.75 * 0.5 + 0.175, 0.75 * 0.3 + 0.05]], rtol=1e-6)


def test_estimate_class_confusion_by_hand():
    counts = np.array([[8.0, 2.0, 0.0], [6.0, 0.0, 4.0], [1.0, 9.0, 0.0], [0.0, 0.0, 0.0]])
    c = np.asarray(cc.estimate_class_confusion(counts))
    np.testing.assert_allclose(c, [[0.7, 0.1, 0.2], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)
    p = _dirichlet_items(3, M, 5, concentration=0.3)
    c = np.asarray(cc.simulate_class_confusion(jax.random.key(13), p))  # 100 items x 10 votes
    np.testing.assert_allclose(c.sum(axis=1), 1.0, atol=1e-5)
    assert (np.diag(c) == c.max(axis=1)).all()  # the most likely class dominates its own row


def test_clever_label_is_blending_of_the_correction():
    p = _dirichlet_items(4, 7, 4)
    rho = cc.simulate_proposals(jax.random.key(14), p, 0.9)
    counts = cc.simulate_proposal_acceptance(jax.random.key(15), p, rho, 20, 0.1)
    conf = cc.estimate_class_confusion(cc.sample_annotations(jax.random.key(16), p, 10))
    np.testing.assert_allclose(
        cc.clever_label(counts, rho, conf, delta=0.1, mu=0.75),
        cc.class_blending(cc.bias_correction(counts, rho, 0.1), conf, 0.75), atol=1e-7)
    # one annotation: BC returns the vote, so CleverLabel equals SPA + CB
    one = cc.simulate_proposal_acceptance(jax.random.key(17), p, rho, 1, 0.1)
    np.testing.assert_allclose(cc.bias_correction(one, rho, 0.1), one)


@pytest.mark.parametrize("delta", [0.0, 0.25, 0.6])
def test_estimate_offset_recovers_a_known_delta(delta):
    p = _dirichlet_items(5, M, 5)
    rho = cc.simulate_proposals(jax.random.key(18), p, 0.8)
    unbiased = cc.sample_annotations(jax.random.key(19), p, 10)
    biased = cc.simulate_proposal_acceptance(jax.random.key(20), p, rho, 10, delta)
    # 10 unbiased votes per item make p_hat noisy; without the errors-in-variables terms the
    # estimate would be biased upward by about 0.02-0.06 here. Bounds: 5 standard deviations.
    assert abs(float(cc.estimate_offset(unbiased, biased, rho)) - delta) < 0.035
    exact = cc.sample_annotations(jax.random.key(21), p, 100000)  # p_hat = P, nearly
    assert abs(float(cc.estimate_offset(exact, biased, rho)) - delta) < 0.03


def test_estimate_offset_needs_uncertain_proposals():
    counts = np.array([[5.0, 0.0], [0.0, 5.0]])
    with pytest.raises(ValueError, match="not identifiable"):
        cc.estimate_offset(counts, counts, np.array([0, 1]))


# --------------------------------------------------------------------------- every output is a distribution
@st.composite
def _problem(draw):
    k = draw(st.sampled_from([2, 3, 5]))
    weights = np.array(draw(st.lists(st.lists(st.integers(0, 4), min_size=k, max_size=k),
                                     min_size=6, max_size=6)), dtype=np.float64)
    weights[weights.sum(axis=1) == 0, draw(st.integers(0, k - 1))] = 1.0  # allow one-hot, not empty
    rho = np.array(draw(st.lists(st.integers(0, k - 1), min_size=6, max_size=6)), dtype=np.int32)
    votes = np.array(draw(st.lists(st.lists(st.integers(0, 6), min_size=k, max_size=k),
                                   min_size=6, max_size=6)), dtype=np.float32)
    return (weights / weights.sum(axis=1, keepdims=True), rho, votes,
            draw(st.floats(0.0, 0.98)), draw(st.floats(0.0, 1.0)), draw(st.integers(0, 30)),
            draw(st.integers(0, 2**31 - 1)))


def _assert_distributions(q):
    q = np.asarray(q)
    assert np.isfinite(q).all() and (q >= 0).all()
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_problem())
def test_every_output_is_a_probability_distribution(problem):
    p, rho, votes, delta, mu, n, seed = problem
    counts = cc.simulate_proposal_acceptance(jax.random.key(seed), p, rho, n, delta)
    assert (np.asarray(counts).sum(axis=1) == n).all()
    conf = cc.estimate_class_confusion(votes)
    for q in (cc.soft_label(counts), conf, cc.class_blending(p, conf, mu),
              cc.bias_correction(counts, rho, delta), cc.bias_correction(votes, rho, delta),
              cc.clever_label(counts, rho, conf, delta, mu), cc.clever_label(votes, rho, conf, delta, mu)):
        _assert_distributions(q)
    kl = np.asarray(cc.kl_divergence(p, cc.soft_label(counts)))
    assert np.isfinite(kl).all() and (kl >= -1e-6).all()


# --------------------------------------------------------------------------- budgets and metrics
def test_budget_conversions():
    assert cc.proposal_annotations(1.0, 1.0) == 1
    assert cc.proposal_annotations(1.0, 2.5) == 2          # 2 cost 0.8, a third would cost 1.2
    assert cc.proposal_annotations(0.4, 2.5) == 1          # 0.4 * 2.5 is 1 despite rounding
    assert cc.proposal_annotations(1.0, 10.0) == 10
    assert cc.proposal_annotations(0.5, 10.0, initial_supervision=1.0) == 0
    assert cc.proposal_annotations(1.5, 10.0, initial_supervision=1.0) == 5
    np.testing.assert_array_equal(cc.proposal_annotations(np.array([0.1, 0.3, 2.0]), 10.0), [1, 3, 20])
    for s in (1.0, 2.5, 10.0):
        for n in range(60):
            assert cc.proposal_annotations(cc.annotation_budget(n, s, 0.2, 0.5), s, 0.2, 0.5) == n
    assert cc.annotation_budget(5, 2.5, initial_supervision=1.0) == pytest.approx(3.0)


def test_metrics_by_hand():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.25, 0.75, 0.0], [0.0, 1.0, 0.0]])
    kl = np.asarray(cc.kl_divergence(p, q))
    assert kl[0] == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75), rel=1e-4)
    eps = 1e-5
    assert kl[1] == pytest.approx(np.log((1 + 2 * eps) / eps), rel=1e-4)  # smoothed, not infinite
    full = np.array([[0.2, 0.3, 0.5]])
    np.testing.assert_allclose(cc.kl_divergence(full, full), 0.0, atol=1e-7)
    # zeros in the estimate are lifted to eps and renormalised: a floor of log(1 + zeros * eps)
    np.testing.assert_allclose(cc.kl_divergence(p, p), np.log1p([eps, 2 * eps]), rtol=1e-2)
    labels = np.array([1, 0])
    assert float(cc.accuracy(q, labels)) == 0.5
    # confidences 0.75 (right) and 1.0 (wrong); 4 bins: (0.5, 0.75] and (0.75, 1]
    assert float(cc.expected_calibration_error(q, labels, n_bins=4)) == pytest.approx(0.5 * 0.25 + 0.5 * 1.0)
    est = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 0, 0, 0, 1, 1])
    # bin (0.8, 0.9]: acc 0.5 vs conf 0.9; bin (0.5, 0.6]: acc 0.6 vs conf 0.6
    assert float(cc.expected_calibration_error(est, y, n_bins=10)) == pytest.approx(2 / 7 * 0.4, abs=1e-6)


# --------------------------------------------------------------------------- clear errors
@pytest.mark.parametrize("delta", [-0.1, 1.5, float("nan")])
def test_offset_outside_unit_interval_is_rejected(delta):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"delta .* must lie in \[0, 1\]"):
        cc.simulate_proposal_acceptance(key, P, RHO, 5, delta)
    with pytest.raises(ValueError, match=r"delta .* must lie in \[0, 1\]"):
        cc.simulate_proposal_annotations(key, P, RHO, 5, delta)
    with pytest.raises(ValueError, match=r"delta .* must lie in \[0, 1\]"):
        cc.bias_correction(np.ones((7, 4)), RHO, delta)


def test_bad_inputs_get_clear_errors():
    key = jax.random.key(0)
    bad = P.copy()
    bad[3] = [0.5, 0.6, 0.0, 0.0]
    with pytest.raises(ValueError, match="label_dist row 3 sums to 1.1, not 1"):
        cc.simulate_proposal_acceptance(key, bad, RHO, 5, 0.1)
    neg = P.copy()
    neg[2] = [-0.1, 0.6, 0.5, 0.0]
    with pytest.raises(ValueError, match="label_dist row 2 has a negative probability"):
        cc.simulate_proposals(key, neg, 0.9)
    nan = P.copy()
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="truth row 1 contains NaN"):
        cc.kl_divergence(nan, P)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        cc.sample_annotations(key, P[0], 5)
    with pytest.raises(ValueError, match=r"proposals must have shape \(7,\)"):
        cc.simulate_proposal_acceptance(key, P, RHO[:5], 5, 0.1)
    with pytest.raises(ValueError, match=r"proposals\[1\] = 4 is not a class in 0..3"):
        cc.bias_correction(np.ones((7, 4)), np.array([0, 4, 0, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="integer class indices"):
        cc.bias_correction(np.ones((7, 4)), RHO.astype(float))
    with pytest.raises(ValueError, match=r"confusion must have shape \(4, 4\)"):
        cc.class_blending(P, np.eye(3))
    with pytest.raises(ValueError, match="confusion row 0 sums to 2"):
        cc.class_blending(P, np.eye(4) + np.eye(4)[[1, 0, 2, 3]] * np.array([[1], [0], [0], [0]]))
    with pytest.raises(ValueError, match=r"mu .* must lie in \[0, 1\]"):
        cc.class_blending(P, np.eye(4), mu=1.2)
    with pytest.raises(ValueError, match="counts row 0 has a negative"):
        cc.soft_label(-np.ones((2, 3)))
    with pytest.raises(ValueError, match="bias correction needs delta < upper"):
        cc.bias_correction(np.ones((7, 4)), RHO, delta=0.99)
    with pytest.raises(ValueError, match="n_annotations must be non-negative integers"):
        cc.simulate_proposal_acceptance(key, P, RHO, -3, 0.1)
    with pytest.raises(ValueError, match=r"truth \(7, 4\) and estimate \(3, 4\) must have the same shape"):
        cc.kl_divergence(P, P[:3])
    with pytest.raises(ValueError, match="speedup S must be > 0"):
        cc.proposal_annotations(1.0, 0.0)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        cc.sample_annotations(0, P, 5)


def test_checks_are_skipped_under_jit_and_vmap():
    """The public functions compose with jax transformations (validation runs on concrete input)."""
    p, rho = jnp.asarray(P, jnp.float32), jnp.asarray(RHO)
    keys = jax.random.split(jax.random.key(0), 4)
    spa = jax.jit(jax.vmap(lambda k: cc.simulate_proposal_acceptance(k, p, rho, 100, 0.2)))
    counts = spa(keys)
    assert counts.shape == (4, 7, 4) and (counts.sum(axis=-1) == 100).all()
    bc = jax.jit(jax.vmap(lambda c: cc.bias_correction(c, rho, 0.2)))(counts)
    np.testing.assert_allclose(bc.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.slow  # a learned-classifier fit on labelme: ~35 s
def test_learned_classifier_supplies_proposals_and_corrections_feed_back(dataset):
    """Issue 5 item 4: the toolkit's own classifier proposes; corrected soft labels go back in."""
    import crowdinfer as ci

    d = dataset("labelme")
    post = ci.fit(d.annotations, label_prior="classifier")
    proposals = cc.proposals_from_posterior(post, d.test.features)
    assert proposals.shape == (1188,) and (proposals == d.test.gold).mean() >= 0.8
    np.testing.assert_array_equal(cc.proposals_from_posterior(post), post.labels)
    # proposal-guided votes on the test items, corrected, fed back as a per-item prior
    truth = np.asarray(jax.nn.one_hot(d.test.gold, 8)) * 0.9 + 0.1 / 8
    counts = cc.simulate_proposal_acceptance(jax.random.key(0), truth, proposals, 20, 0.2)
    corrected = np.asarray(cc.bias_correction(counts, proposals, delta=0.2))
    logits = cc.as_prior_logits(corrected)
    np.testing.assert_allclose(np.exp(logits).sum(-1), 1.0, atol=1e-9)
    assert (logits.argmax(-1) == d.test.gold).mean() > (proposals == d.test.gold).mean()
    with pytest.raises(ValueError):
        cc.as_prior_logits(np.array([[0.5, 0.6]]))
