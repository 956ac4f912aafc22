"""Proposal-guided annotation: its simulation (SPA) and the correction of its bias (CleverLabel).

Seed 002 (Schmarje et al., "Label Smarter, Not Harder: CleverLabel"). Notation: item ``x`` has an
unbiased label distribution ``P(L^x = k)`` over ``K`` classes (``label_dist``, shape (N, K)) and
one proposed class ``rho_x`` (``proposals``, shape (N,)). Annotators who see the proposal produce
biased votes; ``P(L_b^x = k)`` is their distribution and ``counts[x, k]`` how many of them chose
``k``.

* SPA (section 2.1, Algorithm 1, eq. 1): a proposal is accepted with probability
  ``A = delta + (1* - delta) P(L^x = rho_x)``, otherwise the vote is drawn from the remaining
  classes in proportion to ``P``. ``1*`` (argument ``upper``) is the upper end of the linear
  interpolation: the acceptance probability of a proposal that is certainly right. It is "close to
  one" and the paper uses 0.99 (section 2.3): even a certain proposal is rejected 1% of the time.
  :func:`spa_distribution` is the resulting distribution of one biased vote, ``P(L_b^x = k)``.
* CB, class blending (section 2.2): ``mu P_b(k) + (1 - mu) c(k_hat, k)``.
* BC, bias correction (section 2.2): invert eq. 1 for the proposed class, keep the shares of the
  rejected votes for the others.
* CleverLabel: CB applied to the output of BC.
* Budgets (section 3.2), the offset ``delta`` from paired data, and the metrics of the evaluation
  (KL divergence to the soft ground truth, accuracy, expected calibration error).
* The toolkit as a proposal source: :func:`proposals_from_posterior` (a learned-prior classifier
  proposes labels for unannotated items) and :func:`as_prior_logits` (corrected distributions fed
  back to ``crowdinfer.fit`` as a per-item prior).

Every public function validates concrete inputs and raises a ValueError that names the problem;
called on tracers (inside ``jit``/``vmap``) it skips the checks. The numerical work is done by
jitted kernels; random functions take an explicit ``jax.random`` key and are reproducible from it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "UPPER",
    "acceptance_probability",
    "spa_distribution",
    "simulate_proposal_acceptance",
    "simulate_proposal_annotations",
    "simulate_proposals",
    "sample_annotations",
    "soft_label",
    "estimate_class_confusion",
    "simulate_class_confusion",
    "class_blending",
    "bias_correction",
    "clever_label",
    "estimate_offset",
    "annotation_budget",
    "proposal_annotations",
    "kl_divergence",
    "accuracy",
    "expected_calibration_error",
    "proposals_from_posterior",
    "as_prior_logits",
]

UPPER = 0.99
"""``1*`` of eq. 1: the acceptance probability of a proposal whose class has probability one."""

_SUM_ATOL = 1e-3  # how far a row of probabilities may sum from 1 before it is rejected


# --------------------------------------------------------------------------- validation
def _traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in xs)


def _as_matrix(x, name: str) -> np.ndarray:
    """``x`` as a float (items, classes) array with at least one item and two classes."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (items, classes), got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 2:
        raise ValueError(f"{name} needs at least one item and two classes, got shape {a.shape}")
    return a


def _check_distributions(p, name: str) -> None:
    """(N, K) rows that are probability distributions: finite, >= 0, summing to 1 (+- 1e-3)."""
    if _traced(p):
        return
    a = _as_matrix(p, name)
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
    if bad.size:
        raise ValueError(f"{name} row {bad[0]} contains NaN or inf")
    bad = np.flatnonzero((a < 0).any(axis=1))
    if bad.size:
        raise ValueError(f"{name} row {bad[0]} has a negative probability: {a[bad[0]].min():.6g}")
    sums = a.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _SUM_ATOL)
    if bad.size:
        raise ValueError(f"{name} row {bad[0]} sums to {sums[bad[0]]:.6g}, not 1: every row must "
                         "be a probability distribution over the classes")


def _check_counts(counts, name: str = "counts") -> None:
    """(N, K) vote counts: finite and >= 0."""
    if _traced(counts):
        return
    a = _as_matrix(counts, name)
    bad = np.flatnonzero(~np.isfinite(a).all(axis=1) | (a < 0).any(axis=1))
    if bad.size:
        raise ValueError(f"{name} row {bad[0]} has a negative, NaN or inf count: {a[bad[0]]}")


def _check_labels(labels, n_items: int, n_classes: int, name: str) -> None:
    """(N,) integer class indices in [0, K)."""
    if _traced(labels):
        return
    a = np.asarray(labels)
    if a.shape != (n_items,):
        raise ValueError(f"{name} must have shape ({n_items},), one class per item, got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {a.dtype}")
    bad = np.flatnonzero((a < 0) | (a >= n_classes))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {a[bad[0]]} is not a class in 0..{n_classes - 1}")


def _check_unit(value, name: str, low_open: bool = False) -> None:
    """A scalar in [0, 1] (or (0, 1] when ``low_open``)."""
    if _traced(value):
        return
    v = np.asarray(value, dtype=np.float64)
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {v.shape}")
    v = float(v)
    ok = (0.0 < v <= 1.0) if low_open else (0.0 <= v <= 1.0)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {v}")


def _check_offset(delta, upper, below_upper: bool = False) -> None:
    _check_unit(delta, "delta (the proposal-acceptance offset)")
    _check_unit(upper, "upper (1* of eq. 1)", low_open=True)
    if below_upper and not _traced(delta, upper) and not float(delta) < float(upper):
        raise ValueError(
            f"bias correction needs delta < upper (1*), got delta={float(delta)} and "
            f"upper={float(upper)}: with delta >= 1* the acceptance rate no longer rises with "
            "P(L = proposal), so it cannot be inverted")


def _check_n_annotations(n, n_items: int) -> None:
    if _traced(n):
        return
    a = np.asarray(n)
    if a.ndim not in (0, 1) or (a.ndim == 1 and a.shape != (n_items,)):
        raise ValueError(f"n_annotations must be a scalar or shape ({n_items},), got {a.shape}")
    if not np.issubdtype(a.dtype, np.integer) or (a < 0).any():
        raise ValueError(f"n_annotations must be non-negative integers, got {n!r}")


def _check_key(key) -> None:
    if _traced(key):
        return
    if not isinstance(key, jax.Array):
        raise ValueError("key must be a jax.random key, e.g. jax.random.key(0)")


# --------------------------------------------------------------------------- kernels
def _one_hot(labels: jax.Array, n_classes: int) -> jax.Array:
    return jax.nn.one_hot(labels, n_classes, dtype=jnp.float32)


def _normalise(p: jax.Array) -> jax.Array:
    """Rows divided by their sums; a row that sums to 0 becomes uniform."""
    total = p.sum(axis=-1, keepdims=True)
    uniform = jnp.full_like(p, 1.0 / p.shape[-1])
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), uniform)


def _without(p: jax.Array, cls: jax.Array) -> jax.Array:
    """``P(L = k | L != cls)``: ``p`` with class ``cls`` removed and renormalised. If the other
    classes have no mass (``p`` is one-hot at ``cls``), uniform over the other ``K - 1`` classes."""
    others = 1.0 - _one_hot(cls, p.shape[-1])
    rest = p * others
    mass = rest.sum(axis=-1, keepdims=True)
    return jnp.where(mass > 0, rest / jnp.where(mass > 0, mass, 1.0), others / (p.shape[-1] - 1))


def _acceptance(p, proposals, delta, upper):
    p_proposed = jnp.take_along_axis(p, proposals[:, None], axis=-1)[:, 0]
    return delta + (upper - delta) * p_proposed


@jax.jit
def _spa_distribution(p, proposals, delta, upper):
    """One SPA vote's distribution: ``A e_rho + (1 - A) P(. | k != rho)``."""
    a = _acceptance(p, proposals, delta, upper)[:, None]
    return a * _one_hot(proposals, p.shape[-1]) + (1.0 - a) * _without(p, proposals)


@functools.partial(jax.jit, static_argnames="n")
def _spa_annotations(key, p, proposals, n, delta, upper):
    k_accept, k_reject = jax.random.split(key)
    accept = jax.random.uniform(k_accept, (p.shape[0], n)) < _acceptance(p, proposals, delta, upper)[:, None]
    logits = jnp.log(_without(p, proposals))[:, None, :]
    other = jax.random.categorical(k_reject, logits, shape=(p.shape[0], n))
    return jnp.where(accept, proposals[:, None], other).astype(jnp.int32)


@jax.jit
def _proposals(key, p, accuracy):
    k_right, k_wrong = jax.random.split(key)
    top = jnp.argmax(p, axis=-1)
    wrong = jax.random.categorical(k_wrong, jnp.log(_without(p, top)))
    return jnp.where(jax.random.uniform(k_right, top.shape) < accuracy, top, wrong).astype(jnp.int32)


@jax.jit
def _sample(key, p, n):
    """Vote counts of ``n[i]`` independent draws from row ``p[i]``: Multinomial(n[i], p[i])."""
    return jax.random.multinomial(key, n, p)


@jax.jit
def _confusion(counts):
    p_hat = _normalise(counts)
    k = counts.shape[-1]
    has_votes = (counts.sum(axis=-1) > 0).astype(jnp.float32)
    top = _one_hot(jnp.argmax(p_hat, axis=-1), k) * has_votes[:, None]  # (N, K) item -> k_hat
    sums = top.T @ p_hat  # row k_hat: the summed soft labels of the items whose argmax is k_hat
    return jnp.where(top.sum(axis=0)[:, None] > 0, _normalise(sums), jnp.eye(k))


@jax.jit
def _blend(p, confusion, mu):
    return mu * p + (1.0 - mu) * confusion[jnp.argmax(p, axis=-1)]


@jax.jit
def _correct(counts, proposals, delta, upper):
    k = counts.shape[-1]
    proposed = _one_hot(proposals, k)
    n = counts.sum(axis=-1)
    accepted = (counts * proposed).sum(axis=-1)
    rate = accepted / jnp.where(n > 0, n, 1.0)
    b = jnp.clip((rate - delta) / (upper - delta), 0.0, 1.0)
    rejected_share = counts * (1.0 - proposed) / jnp.maximum(n - accepted, 1.0)[:, None]
    q = (1.0 - b)[:, None] * rejected_share + b[:, None] * proposed
    return _normalise(jnp.where((n > 0)[:, None], q, 0.0))


@jax.jit
def _offset_moments(unbiased, biased, proposals, upper):
    k = unbiased.shape[-1]
    proposed = _one_hot(proposals, k)
    n_u, n_b = unbiased.sum(axis=-1), biased.sum(axis=-1)
    used = (n_u >= 2) & (n_b >= 1)
    p_hat = (unbiased * proposed).sum(axis=-1) / jnp.maximum(n_u, 1.0)
    a_hat = (biased * proposed).sum(axis=-1) / jnp.maximum(n_b, 1.0)
    var = p_hat * (1.0 - p_hat) / jnp.maximum(n_u - 1.0, 1.0)  # unbiased estimate of Var(p_hat)
    num = jnp.where(used, (1.0 - p_hat) * (a_hat - upper * p_hat) - upper * var, 0.0).sum()
    den = jnp.where(used, (1.0 - p_hat) ** 2 - var, 0.0).sum()
    return num, den


@jax.jit
def _kl(truth, estimate, eps):
    q = jnp.maximum(estimate, eps)
    q = q / q.sum(axis=-1, keepdims=True)
    terms = jnp.where(truth > 0, truth * (jnp.log(jnp.where(truth > 0, truth, 1.0)) - jnp.log(q)), 0.0)
    return terms.sum(axis=-1)


@functools.partial(jax.jit, static_argnames="n_bins")
def _ece(estimate, labels, n_bins):
    confidence = estimate.max(axis=-1)
    correct = (jnp.argmax(estimate, axis=-1) == labels).astype(jnp.float32)
    bins = jnp.clip(jnp.ceil(confidence * n_bins).astype(jnp.int32) - 1, 0, n_bins - 1)
    gap = jax.ops.segment_sum(correct - confidence, bins, num_segments=n_bins)
    return jnp.abs(gap).sum() / estimate.shape[0]


# --------------------------------------------------------------------------- SPA (section 2.1)
def acceptance_probability(label_dist, proposals, delta: float, upper: float = UPPER) -> jax.Array:
    """Eq. 1: ``A = delta + (1* - delta) P(L^x = rho_x)`` per item, shape (N,).

    ``delta`` in [0, 1] is the offset (the acceptance probability of a proposal that is certainly
    wrong); ``upper`` is ``1*`` (0.99 in the paper), the acceptance probability of a proposal that
    is certainly right. ``A`` lies between ``delta`` and ``upper``.
    """
    _check_distributions(label_dist, "label_dist")
    p = jnp.asarray(label_dist, jnp.float32)
    _check_labels(proposals, p.shape[0], p.shape[1], "proposals")
    _check_offset(delta, upper)
    return _acceptance(p, jnp.asarray(proposals, jnp.int32), delta, upper)


def spa_distribution(label_dist, proposals, delta: float, upper: float = UPPER) -> jax.Array:
    """The distribution of one SPA vote, ``P(L_b^x = k)``, shape (N, K) -- what the soft label of
    infinitely many simulated proposal-guided annotations converges to:

        P(L_b^x = k) = A [k = rho_x] + (1 - A) P(L^x = k | k != rho_x),

    with ``A`` of eq. 1 and ``P(L^x = k | k != rho_x) = P(L^x = k) / (1 - P(L^x = rho_x))``.
    When ``P`` is one-hot at the proposal the other classes have no mass; a rejection (probability
    ``1 - 1*``) then goes to one of the other ``K - 1`` classes uniformly at random -- an annotator's
    slip -- so the acceptance rate is exactly ``A`` for every item and eq. 1 can be inverted (BC).
    """
    _check_distributions(label_dist, "label_dist")
    p = jnp.asarray(label_dist, jnp.float32)
    _check_labels(proposals, p.shape[0], p.shape[1], "proposals")
    _check_offset(delta, upper)
    return _spa_distribution(_normalise(p), jnp.asarray(proposals, jnp.int32), delta, upper)


def _n_per_item(n_annotations, n_items: int) -> jax.Array:
    _check_n_annotations(n_annotations, n_items)
    return jnp.broadcast_to(jnp.asarray(n_annotations, jnp.float32), (n_items,))


def simulate_proposal_acceptance(key, label_dist, proposals, n_annotations, delta: float,
                                 upper: float = UPPER) -> jax.Array:
    """SPA (Algorithm 1): the vote counts of ``n_annotations`` proposal-guided annotations per
    item, shape (N, K), float32 (integer valued).

    Each annotation accepts the proposal ``rho_x`` with probability ``A`` of eq. 1 (see
    :func:`acceptance_probability`); otherwise it is drawn from the other classes in proportion to
    their ground-truth probability, ``P(L^x = k | k != rho_x)``. The annotations are independent, so
    the counts are exactly ``Multinomial(n, P_b)`` with ``P_b`` of :func:`spa_distribution`
    (the count at ``rho_x`` is the number of acceptances, since a rejected vote never lands on the
    proposal); they are drawn that way, at a cost that does not grow with ``n``.
    :func:`simulate_proposal_annotations` draws the individual annotations instead.

    Corner cases: a one-hot ``P`` at the proposal has ``A = 1*`` and its rejections are uniform
    slips (see :func:`spa_distribution`); ``P(L^x = rho_x) = 0`` gives ``A = delta``; classes other
    than the proposal with zero probability are never chosen.

    Args:
        key: a ``jax.random`` key.
        label_dist: (N, K) unbiased label distributions ``P(L^x = k)``; rows sum to 1.
        proposals: (N,) integer proposed class per item.
        n_annotations: int, or (N,) ints: annotations per item.
        delta: the offset of eq. 1, in [0, 1].
        upper: ``1*`` of eq. 1, in (0, 1].
    """
    _check_key(key)
    p_b = spa_distribution(label_dist, proposals, delta, upper)
    return _sample(key, p_b, _n_per_item(n_annotations, p_b.shape[0]))


def simulate_proposal_annotations(key, label_dist, proposals, n_annotations: int, delta: float,
                                  upper: float = UPPER) -> jax.Array:
    """SPA (Algorithm 1) one annotation at a time: the chosen class of each of ``n_annotations``
    proposal-guided annotations per item, shape (N, n_annotations), int32.

    The same model as :func:`simulate_proposal_acceptance` (same corner cases), written as the
    paper's algorithm: ``r ~ U[0, 1)``; accept if ``r < A`` (the paper's ``r <= A``; with ``<`` the
    float uniforms give ``A = 0`` and ``A = 1`` exactly), else draw from ``P(. | k != rho_x)``.
    ``n_annotations`` is static (one compilation per value). Use it when the individual
    annotations are needed; the vote counts are ``sum_i one_hot(a_i)``.
    """
    _check_key(key)
    _check_distributions(label_dist, "label_dist")
    p = jnp.asarray(label_dist, jnp.float32)
    _check_labels(proposals, p.shape[0], p.shape[1], "proposals")
    if not isinstance(n_annotations, (int, np.integer)) or n_annotations < 0:
        raise ValueError(f"n_annotations must be a non-negative int, got {n_annotations!r}")
    _check_offset(delta, upper)
    return _spa_annotations(key, _normalise(p), jnp.asarray(proposals, jnp.int32), int(n_annotations),
                            jnp.float32(delta), jnp.float32(upper))


def simulate_proposals(key, label_dist, accuracy: float) -> jax.Array:
    """A simulated proposal model of a given accuracy, (N,) int32 proposed classes.

    With probability ``accuracy`` the proposal is the most likely class ``argmax_k P(L^x = k)``
    (ties: the lowest index); otherwise it is another class drawn from ``P`` without its argmax,
    ``P(L^x = k | k != argmax)`` (uniform over the other classes when ``P`` is one-hot). So a wrong
    proposal is a plausible alternative, as a classifier's mistakes on ambiguous images are.
    """
    _check_key(key)
    _check_distributions(label_dist, "label_dist")
    _check_unit(accuracy, "accuracy")
    return _proposals(key, _normalise(jnp.asarray(label_dist, jnp.float32)), jnp.float32(accuracy))


def sample_annotations(key, label_dist, n_annotations) -> jax.Array:
    """Unbiased annotations (the paper's GT baseline): vote counts of ``n_annotations`` draws per
    item from ``P(L^x = k)``, shape (N, K), float32."""
    _check_key(key)
    _check_distributions(label_dist, "label_dist")
    p = jnp.asarray(label_dist, jnp.float32)
    return _sample(key, _normalise(p), _n_per_item(n_annotations, p.shape[0]))


def soft_label(counts) -> jax.Array:
    """The soft label ``P(L^x = k) ~ sum_i a_{i,k}^x / N`` (section 2): counts divided by their row
    sum, shape (N, K). An item with no votes gets the uniform distribution ``1 / K``."""
    _check_counts(counts)
    return _normalise(jnp.asarray(counts, jnp.float32))


# --------------------------------------------------------------------------- CleverLabel (2.2-2.3)
def estimate_class_confusion(counts) -> jax.Array:
    """The class distribution ``c(k_hat, k)`` of class blending, shape (K, K), from repeated
    unbiased annotations of a small set of items (section 2.3: 100 items x 10 annotations).

    Row ``k_hat`` is the mean soft label of the items whose most likely class (argmax of the soft
    label, ties to the lowest index) is ``k_hat``: how often the classes are chosen for an image
    that is "mostly ``k_hat``". Items without votes are ignored. A class that is the argmax of no
    item gets the row ``e_{k_hat}`` (no evidence of any confusion), so every row is a distribution.
    """
    _check_counts(counts)
    return _confusion(jnp.asarray(counts, jnp.float32))


def simulate_class_confusion(key, label_dist, n_items: int = 100, n_annotations: int = 10) -> jax.Array:
    """Section 2.3: draw ``n_items`` random items (without replacement), sample ``n_annotations``
    unbiased annotations for each from ``label_dist`` and estimate ``c(k_hat, k)`` from them with
    :func:`estimate_class_confusion`."""
    _check_key(key)
    _check_distributions(label_dist, "label_dist")
    p = jnp.asarray(label_dist, jnp.float32)
    if not 1 <= n_items <= p.shape[0] or n_annotations < 1:
        raise ValueError(f"need 1 <= n_items <= {p.shape[0]} and n_annotations >= 1, "
                         f"got n_items={n_items}, n_annotations={n_annotations}")
    k_items, k_votes = jax.random.split(key)
    chosen = jax.random.choice(k_items, p.shape[0], (n_items,), replace=False)
    return _confusion(_sample(k_votes, _normalise(p[chosen]), jnp.full((n_items,), n_annotations, jnp.float32)))


def class_blending(label_dist, confusion, mu: float = 0.75) -> jax.Array:
    """CB (section 2.2): ``mu P_b(L^x = k) + (1 - mu) c(k_hat, k)`` with the most likely class
    ``k_hat = argmax_j P_b(L^x = j)`` (ties: the lowest index), shape (N, K).

    ``mu = 1`` returns ``label_dist``; ``mu = 0`` returns the confusion row of ``k_hat``. The paper
    uses ``mu = 0.75``. ``confusion`` is (K, K) with rows that are distributions (given by experts
    or from :func:`estimate_class_confusion`).
    """
    _check_distributions(label_dist, "label_dist")
    p = jnp.asarray(label_dist, jnp.float32)
    _check_distributions(confusion, "confusion")
    c = jnp.asarray(confusion, jnp.float32)
    if c.shape != (p.shape[1], p.shape[1]):
        raise ValueError(f"confusion must have shape ({p.shape[1]}, {p.shape[1]}), got {c.shape}")
    _check_unit(mu, "mu (the blending weight)")
    return _blend(_normalise(p), _normalise(c), jnp.float32(mu))


def bias_correction(counts, proposals, delta: float = 0.1, upper: float = UPPER) -> jax.Array:
    """BC (section 2.2): an estimate of the unbiased ``P(L^x = k)`` from proposal-guided votes,
    shape (N, K).

    For the proposed class, eq. 1 inverted and clamped to [0, 1]:
    ``B = clip((|M_rho| / N' - delta) / (1* - delta), 0, 1)`` with ``|M_rho|`` the votes for the
    proposal among the item's ``N'`` votes. For ``k != rho``:
    ``P(L^x = k) = (1 - B) P(L_b^x = k | rejected) ~ (1 - B) a_k / (N' - |M_rho|)``.
    The result sums to 1 (up to rounding, which is renormalised away). When every vote accepted the
    proposal, ``B = 1`` (since ``delta < 1*``) and the result is one-hot at ``rho``; an item with no
    votes gets the uniform distribution. With ``N' = 1`` BC returns the vote itself.

    Args:
        counts: (N, K) proposal-guided vote counts.
        proposals: (N,) the class that was proposed for each item.
        delta: the assumed offset (the paper corrects with 0.1, whatever the true offset);
            must be below ``upper``.
        upper: ``1*`` of eq. 1.
    """
    _check_counts(counts)
    c = jnp.asarray(counts, jnp.float32)
    _check_labels(proposals, c.shape[0], c.shape[1], "proposals")
    _check_offset(delta, upper, below_upper=True)
    return _correct(c, jnp.asarray(proposals, jnp.int32), jnp.float32(delta), jnp.float32(upper))


def clever_label(counts, proposals, confusion, delta: float = 0.1, mu: float = 0.75,
                 upper: float = UPPER) -> jax.Array:
    """CleverLabel (section 2.2): class blending applied to the bias-corrected distribution,
    ``CB(BC(counts))``, with ``k_hat`` the argmax of the corrected distribution. Defaults are the
    paper's (section 2.3): ``delta = 0.1``, ``mu = 0.75``, ``1* = 0.99``. Shape (N, K)."""
    return class_blending(bias_correction(counts, proposals, delta, upper), confusion, mu)


def estimate_offset(unbiased_counts, biased_counts, proposals, upper: float = UPPER) -> jax.Array:
    """The offset ``delta`` of eq. 1 from items that have both unbiased and proposal-guided votes.

    Eq. 1 says the acceptance rate ``a_x = |M_rho| / N'`` has mean ``delta + (1* - delta) p_x``
    with ``p_x = P(L^x = rho_x)``, i.e. ``a_x - 1* p_x = delta (1 - p_x)``: a line through the
    origin in ``1 - p_x``. Least squares over the items, with ``p_x`` replaced by the unbiased
    estimate ``p_hat`` (``n_x >= 2`` votes) and its sampling noise removed (errors in variables:
    ``v_x = p_hat (1 - p_hat) / (n_x - 1)`` estimates ``Var(p_hat)`` without bias):

        delta_hat = sum_x [(1 - p_hat)(a_x - 1* p_hat) - 1* v_x] / sum_x [(1 - p_hat)^2 - v_x],

    clamped to [0, 1]. Each item with ``n_x >= 2`` unbiased and ``N' >= 1`` biased votes counts
    once. Raises ValueError when ``delta`` is not identifiable (every proposal is certain,
    ``p_hat = 1``, so acceptance says nothing about the offset).
    """
    _check_counts(unbiased_counts, "unbiased_counts")
    _check_counts(biased_counts, "biased_counts")
    u = jnp.asarray(unbiased_counts, jnp.float32)
    b = jnp.asarray(biased_counts, jnp.float32)
    if u.shape != b.shape:
        raise ValueError(f"unbiased_counts {u.shape} and biased_counts {b.shape} must have the same shape")
    _check_labels(proposals, u.shape[0], u.shape[1], "proposals")
    _check_unit(upper, "upper (1* of eq. 1)", low_open=True)
    num, den = _offset_moments(u, b, jnp.asarray(proposals, jnp.int32), jnp.float32(upper))
    if not _traced(num) and not float(den) > 0:
        raise ValueError("delta is not identifiable from these items: it needs items with at least "
                         "2 unbiased and 1 proposal-guided vote whose proposal is not certain")
    return jnp.clip(num / den, 0.0, 1.0)


# --------------------------------------------------------------------------- budgets (3.2)
def _check_budget_args(speedup, initial_supervision, labeled_fraction) -> None:
    if not (np.all(np.isfinite(speedup)) and np.all(np.asarray(speedup) > 0)):
        raise ValueError(f"speedup S must be > 0, got {speedup}")
    _check_unit(initial_supervision, "initial_supervision")
    _check_unit(labeled_fraction, "labeled_fraction", low_open=True)


def annotation_budget(n_annotations, speedup: float, initial_supervision: float = 0.0,
                      labeled_fraction: float = 1.0):
    """The budget of section 3.2, in units of one unbiased annotation per item:
    ``in.sup + labeled_fraction * n_annotations / S``.

    A proposal-guided annotation costs ``1 / S`` of an unbiased one (speed-up ``S``; the paper
    uses 1, 2.5 and 10). ``initial_supervision`` is the fraction of items annotated once without
    proposals first (to train the proposal model; 0 when the proposals come for free) and
    ``labeled_fraction`` the fraction of items that receive the ``n_annotations``.
    """
    _check_budget_args(speedup, initial_supervision, labeled_fraction)
    n = np.asarray(n_annotations)
    if (n < 0).any():
        raise ValueError(f"n_annotations must be >= 0, got {n_annotations}")
    return initial_supervision + labeled_fraction * n / np.asarray(speedup, np.float64)


def proposal_annotations(budget, speedup: float, initial_supervision: float = 0.0,
                         labeled_fraction: float = 1.0):
    """How many proposal-guided annotations per item a budget buys: the largest integer ``n``
    with ``annotation_budget(n, S, ...) <= budget``, i.e.
    ``floor((budget - in.sup) * S / labeled_fraction)`` (0 when the budget does not cover the
    initial supervision). With ``S = 1`` it is the number of unbiased annotations. Works
    elementwise on arrays; returns ints.
    """
    _check_budget_args(speedup, initial_supervision, labeled_fraction)
    b = np.asarray(budget, np.float64)
    if not np.isfinite(b).all() or (b < 0).any():
        raise ValueError(f"budget must be finite and >= 0, got {budget}")
    n = np.floor((b - initial_supervision) * np.asarray(speedup, np.float64) / labeled_fraction + 1e-9)
    n = np.maximum(n, 0).astype(np.int64)
    return int(n) if n.ndim == 0 else n


# --------------------------------------------------------------------------- metrics (3.1)
def kl_divergence(truth, estimate, eps: float = 1e-5) -> jax.Array:
    """``KL(P || Q) = sum_k P_k log(P_k / Q_k)`` per item, shape (N,), between the soft ground
    truth ``P`` and an estimate ``Q`` (section 3.1).

    Terms with ``P_k = 0`` are 0. Zeros in the estimate would make KL infinite, so ``Q`` is
    smoothed first: ``Q' = max(Q, eps) / sum_j max(Q_j, eps)`` with ``eps = 1e-5`` (the clipping
    threshold of the benchmark's KL; unlike it we leave ``P`` untouched and renormalise ``Q'``, so
    ``KL >= 0`` and ``KL = 0`` iff ``Q' = P``). The smoothing costs at most ``log(1 + z eps)`` for
    an estimate with ``z`` zeros (so ``KL(P, P) = log(1 + z eps) < K eps`` when ``P`` has ``z``
    zeros); one annotation that misses a class of mass ``p`` costs about ``p log(p / eps)``.
    Average (mean or median) over items yourself.
    """
    _check_distributions(truth, "truth")
    _check_distributions(estimate, "estimate")
    p = jnp.asarray(truth, jnp.float32)
    q = jnp.asarray(estimate, jnp.float32)
    if p.shape != q.shape:
        raise ValueError(f"truth {p.shape} and estimate {q.shape} must have the same shape")
    if not _traced(eps) and not 0 < eps < 1.0 / p.shape[1]:
        raise ValueError(f"eps must lie in (0, 1/K), got {eps}")
    return _kl(_normalise(p), _normalise(q), jnp.float32(eps))


def accuracy(estimate, labels) -> jax.Array:
    """The fraction of items whose most likely class ``argmax_k Q_k`` (ties: the lowest index)
    equals ``labels`` ((N,) integer classes, e.g. the argmax of the soft ground truth)."""
    _check_distributions(estimate, "estimate")
    q = jnp.asarray(estimate, jnp.float32)
    _check_labels(labels, q.shape[0], q.shape[1], "labels")
    return jnp.mean(jnp.argmax(q, axis=-1) == jnp.asarray(labels))


def expected_calibration_error(estimate, labels, n_bins: int = 15) -> jax.Array:
    """ECE with ``n_bins`` equal-width bins of the confidence ``max_k Q_k``:
    ``sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|``, bin ``b`` holding the confidences in
    ``(b / n_bins, (b + 1) / n_bins]`` (a confidence of exactly 0 goes to the first bin);
    ``acc`` is the fraction of ``argmax_k Q_k == label`` in the bin, ``conf`` its mean confidence.
    """
    _check_distributions(estimate, "estimate")
    q = jnp.asarray(estimate, jnp.float32)
    _check_labels(labels, q.shape[0], q.shape[1], "labels")
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    return _ece(q, jnp.asarray(labels, jnp.int32), int(n_bins))


# ------------------------------------------------------------------ the toolkit as proposal source
def proposals_from_posterior(posterior, features=None) -> np.ndarray:
    """Proposals from the toolkit itself: the argmax of a fitted posterior's learned classifier
    (``fit(..., label_prior="classifier")``) on ``features`` -- e.g. items nobody has annotated yet
    -- or, without ``features``, the posterior's own most probable labels."""
    if features is None:
        return np.asarray(posterior.labels)
    return np.asarray(posterior.predict(features))


def as_prior_logits(label_dist, eps: float = 1e-5) -> np.ndarray:
    """Feed (corrected) label distributions back into inference: logits for
    ``crowdinfer.fit(..., prior_logits=...)``, zeros lifted to ``eps`` so that no class is ruled out
    (the smoothing rule of :func:`kl_divergence`)."""
    p = np.asarray(label_dist, dtype=np.float64)
    _check_distributions(p, "label_dist")
    p = np.maximum(p, eps)
    return np.log(p / p.sum(-1, keepdims=True))
