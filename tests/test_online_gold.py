"""Gold items (honeypots) in the online loop: ``make_task(..., gold=...)`` fits the risk's
calibrator (T and eps of crowdinfer/calibration.py, in JAX inside the jitted update) on the gold
items' posteriors; the EM and the learner never see the gold."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdinfer import calibration as cal
from crowdinfer import online
from crowdinfer.online.risk import bayes_risk, gold_checked_temperature
from crowdinfer.online.session import _fingerprint


def copycat_crowd(seed=0, n=1200, k=3, sources=20, accuracy=0.8):
    """A correlated crowd: ``sources`` independent judges, each judgment entered twice (workers
    ``j`` and ``j + sources`` copy each other).  Dawid-Skene counts every judgment twice, so its
    posterior is too sure (one judgment at accuracy 0.8 looks like two agreeing answers, 0.97);
    the leave-one-annotation-out temperature cannot see it (the copy predicts the held-out answer).
    Two rounds: every item judged once, then half the items a second time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    judges = np.stack([rng.permutation(sources)[:2] for _ in range(n)])
    rounds = []
    for r in range(2):
        label = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, k, n)) % k)
        i = np.flatnonzero(np.ones(n, bool) if r == 0 else rng.random(n) < 0.5)
        rounds.append((np.concatenate([i, i]), np.concatenate([judges[i, r], judges[i, r] + sources]),
                       np.concatenate([label[i], label[i]])))
    return y, rounds, 2 * sources


def run_rounds(config, task, rounds):
    state = online.init(config, task)
    for item, worker, label in rounds:
        state, _ = online.ingest(state, item, worker, label)
        state, report = online.update(config, state, task)
    return state, report


@pytest.fixture(scope="module")
def crowd():
    y, rounds, m = copycat_crowd()
    gold = np.where(np.random.default_rng(1).random(len(y)) < 0.1, y, -1)  # 10% honeypots
    return y, rounds, m, gold


def test_gold_changes_the_risk_only_through_the_calibrator(crowd):
    y, rounds, m, gold = crowd
    cfg_raw = online.preset("ds_model", 3, calibrate_risk=False)
    cfg = online.preset("ds_model", 3)
    raw, _ = run_rounds(cfg_raw, online.make_task(len(y), m, n_classes=3), rounds)
    with_gold, report = run_rounds(cfg, online.make_task(len(y), m, n_classes=3, gold=gold), rounds)
    # the EM never saw the gold: its output is bitwise that of the run without gold
    for field in ("confusion", "counts", "class_prior", "prior_logits"):
        np.testing.assert_array_equal(np.asarray(getattr(with_gold, field)),
                                      np.asarray(getattr(raw, field)), err_msg=field)
    # the risk is the raw posterior under the map fitted on the gold items (same functions, no
    # jit): T and eps by maximum likelihood, T then checked on the finished gold items
    t, eps = cal.fit_calibrator_jax(raw.log_q, jnp.asarray(gold))
    assert float(report["temperature_fitted"]) == pytest.approx(float(t), rel=1e-4)
    assert float(report["floor"]) == pytest.approx(float(eps), abs=1e-5)
    checked = gold_checked_temperature(raw.log_q, jnp.asarray(gold), report["temperature_fitted"],
                                       report["floor"], cfg.risk_threshold)
    assert float(report["temperature"]) == pytest.approx(float(checked), rel=1e-6)
    mapped = cal.calibrate_log_probs_jax(raw.log_q, report["temperature"], report["floor"])
    np.testing.assert_allclose(np.asarray(with_gold.log_q), np.asarray(mapped), atol=1e-5)
    risk, decision = bayes_risk(jnp.exp(mapped))
    np.testing.assert_allclose(np.asarray(with_gold.risk), np.asarray(risk), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(with_gold.decision), np.asarray(raw.decision))
    np.testing.assert_array_equal(np.asarray(with_gold.finished),
                                  np.asarray(with_gold.risk) < cfg.risk_threshold)
    assert float(report["temperature"]) > 1.5  # the copies doubled the evidence: T near 2


def test_the_jax_fit_is_the_numpy_fit():
    rng = np.random.default_rng(3)
    n, k = 800, 4
    y = rng.integers(0, k, n)
    logits = 2.5 * rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    q = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gold = np.where(rng.random(n) < 0.3, y, -1)
    ref = cal.fit_calibrator(q, gold)
    t, eps = jax.jit(cal.fit_calibrator_jax)(jnp.log(jnp.asarray(q, jnp.float32)), jnp.asarray(gold))
    has = gold >= 0
    z = cal._log_probs(q[has])
    got = -cal._neg_log_lik((np.log(float(t)), float(eps)), z, gold[has], k)[0]
    assert got == pytest.approx(ref.log_lik, abs=1e-5)
    assert float(t) == pytest.approx(ref.temperature, rel=0.02)
    assert float(eps) == pytest.approx(ref.floor, abs=0.01)


def test_calibrated_finished_set_keeps_the_promise_on_a_correlated_crowd(crowd):
    """Seed 000: items with risk < C = 0.1 are >= 90% correct.  On the copycat crowd the raw and
    the gold-free risks break it; the gold-calibrated risk keeps it (scored on the non-gold
    items) with a finished set that is not empty."""
    y, rounds, m, gold = crowd
    scored = gold < 0

    def precision(config, task):
        state, _ = run_rounds(config, task, rounds)
        done = np.asarray(state.finished) & scored
        return float(np.mean(np.asarray(state.decision)[done] == y[done])), int(done.sum())

    raw = precision(online.preset("ds_model", 3, calibrate_risk=False),
                    online.make_task(len(y), m, n_classes=3))
    loo = precision(online.preset("ds_model", 3), online.make_task(len(y), m, n_classes=3))
    gold_cal = precision(online.preset("ds_model", 3),
                         online.make_task(len(y), m, n_classes=3, gold=gold))
    assert raw[0] < 0.9 and loo[0] < 0.9, (raw, loo)
    assert gold_cal[0] >= 0.9 and gold_cal[1] >= 100, gold_cal


def wilson_lower(right, n, z=1.0):
    p = right / n
    return (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def test_the_check_raises_t_to_the_first_grid_point_that_keeps_the_promise():
    """A posterior too sure of its confident items (levels of evidence, each less often right than
    it claims): at T = 1 the finished gold items are < 90% right; the check raises T to the first
    point of its grid where their Wilson lower bound (one standard error) reaches 90% (the point
    before falls short), and never lowers it."""
    rng = np.random.default_rng(5)
    n, k = 2000, 3
    y = rng.integers(0, k, n)
    level = rng.integers(0, 6, n)
    accuracy = np.array([0.6, 0.75, 0.82, 0.88, 0.94, 0.98])[level]
    top = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, k, n)) % k)
    logits = np.zeros((n, k))
    logits[np.arange(n), top] = 1.0 + level
    log_q = jnp.asarray(logits - np.log(np.exp(logits).sum(1, keepdims=True)), jnp.float32)
    gold = jnp.asarray(np.where(rng.random(n) < 0.2, y, -1))

    def finished(temp):  # (right, count) of the finished gold items
        risk, decision = bayes_risk(jnp.exp(cal.calibrate_log_probs_jax(log_q, temp, 0.0)))
        done = np.asarray((risk < 0.1) & (gold >= 0))
        return int(np.sum(np.asarray(decision)[done] == np.asarray(gold)[done])), int(done.sum())

    right, count = finished(1.0)
    assert right / count < 0.9
    checked = float(gold_checked_temperature(log_q, gold, 1.0, 0.0, 0.1))
    assert checked > 1.0
    right, count = finished(checked)
    assert wilson_lower(right, count) >= 0.9 and right / count >= 0.92 and count >= 50
    assert wilson_lower(*finished(checked / 2 ** 0.25)) < 0.9
    # a start that already keeps the promise is kept
    assert float(gold_checked_temperature(log_q, gold, 2 * checked, 0.0, 0.1)) == pytest.approx(2 * checked)


def test_the_learner_never_sees_the_gold():
    rng = np.random.default_rng(0)
    n, k, d, m = 240, 3, 4, 8
    means = 2.0 * rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    x = means[y] + rng.normal(size=(n, d))
    py = np.repeat(np.arange(k), 3)
    px = means[py] + rng.normal(size=(len(py), d))
    gold = np.where(np.arange(n) % 5 == 0, y, -1)
    cfg = online.preset("efficient_annotation", k, train_steps=20, eval_every=10)
    item = np.repeat(np.arange(n), 2)
    worker = np.concatenate([rng.permutation(m)[:2] for _ in range(n)])
    label = np.where(rng.random(2 * n) < 0.75, y[item], rng.integers(0, k, 2 * n))
    states = []
    for g in (None, gold):
        task = online.make_task(x, m, px, py, k, gold=g)
        state, _ = online.ingest(online.init(cfg, task), item, worker, label)
        states.append(online.update(cfg, state, task)[0])
    a, b = states
    for field in ("confusion", "counts", "class_prior", "prior_logits", "decision"):
        np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)),
                                      err_msg=field)
    for la, lb in zip(jax.tree_util.tree_leaves(a.learner), jax.tree_util.tree_leaves(b.learner)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
    assert not np.array_equal(np.asarray(a.risk), np.asarray(b.risk))  # only the risk moved


def test_with_gold_the_early_stop_waits_for_the_first_finished_item():
    """The gold-calibrated finished set starts empty (the check withholds items until the gold
    vouches for them); the early-stop clock (answers per item without growth) starts when it first
    holds an item.  Without gold the clock runs from the start, as before."""
    rng = np.random.default_rng(2)
    n, m, k = 400, 10, 3
    y = rng.integers(0, k, n)
    cfg = online.preset("ds_model", k, early_stop=0.5)
    item, worker = np.arange(n), rng.integers(0, m, n)
    label = rng.integers(0, k, n)  # a crowd that knows nothing: nothing can be finished
    reasons = []
    for gold in (None, np.where(np.arange(n) % 10 == 0, y, -1)):
        task = online.make_task(n, m, n_classes=k, gold=gold)
        state, _ = online.ingest(online.init(cfg, task), item, worker, label)
        state, report = online.update(cfg, state, task)
        assert int(report["finished"]) == 0
        reasons.append(online.stop_reason(cfg, state))
    assert "1.00 per item >= early_stop=0.5" in reasons[0]
    assert reasons[1] is None


def test_gold_is_checked():
    with pytest.raises(ValueError, match=r"gold must give one class per item of the pool \(50,\)"):
        online.make_task(50, 4, n_classes=3, gold=np.zeros(49, int))
    with pytest.raises(ValueError, match="gold must hold integer class codes"):
        online.make_task(50, 4, n_classes=3, gold=np.zeros(50))
    with pytest.raises(ValueError, match=r"gold must be -1 \(unknown\) or 0..2; items \[7\] hold \[3\]"):
        online.make_task(50, 4, n_classes=3, gold=np.where(np.arange(50) == 7, 3, 0))
    with pytest.raises(ValueError, match=r"items \[0\] hold \[-2\]"):
        online.make_task(50, 4, n_classes=3, gold=np.where(np.arange(50) == 0, -2, 0))
    with pytest.raises(ValueError, match=r"at least 10 items \(the calibrator fits two parameters\), got 9"):
        online.make_task(50, 4, n_classes=3, gold=np.where(np.arange(50) < 9, 1, -1))
    # without n_classes at make_task, init checks the classes against the configuration
    task = online.make_task(50, 4, gold=np.where(np.arange(50) < 20, 4, -1))
    with pytest.raises(ValueError, match=r"gold must be -1 \(unknown\) or 0..2"):
        online.init(online.preset("ds_model", 3), task)
    ok = online.make_task(50, 4, n_classes=3, gold=np.where(np.arange(50) < 20, 1, -1))
    with pytest.raises(ValueError, match="calibrate_risk=False turns off"):
        online.init(online.preset("ds_model", 3, calibrate_risk=False), ok)


def test_without_gold_the_task_and_its_fingerprint_are_as_before():
    cfg = online.preset("ds_model", 3)
    plain = online.make_task(50, 4, n_classes=3)
    assert plain.gold is None and len(jax.tree_util.tree_leaves(plain)) == 3
    assert "gold" not in _fingerprint(cfg, plain)
    gold = online.make_task(50, 4, n_classes=3, gold=np.where(np.arange(50) < 20, 1, -1))
    assert '"gold": [20, ' in _fingerprint(cfg, gold)
    assert gold._replace(n_workers=8).gold is gold.gold  # a session growing its workers keeps it
