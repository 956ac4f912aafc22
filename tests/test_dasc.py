"""Deep crowd models and distribution-aware self-training (DASC, seed 004)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer import dasc
from crowdinfer import simulate as sim


# ----------------------------------------------------------------------------- selection
def test_class_quotas_are_inversely_proportional_to_candidate_counts():
    q = np.asarray(dasc.class_quotas(jnp.array([100.0, 200.0, 400.0, 800.0]), 150))
    np.testing.assert_array_equal(q, [80, 40, 20, 10])  # 1/N' = 8:4:2:1 of 150
    # a class with fewer candidates than its quota gives them all; the rest is shared 1/N'
    q = np.asarray(dasc.class_quotas(jnp.array([5.0, 1000.0, 1000.0, 0.0]), 100))
    assert q[0] == 5 and q[3] == 0 and q.sum() == 100 and abs(int(q[1]) - int(q[2])) <= 1
    # never more than there are candidates
    np.testing.assert_array_equal(dasc.class_quotas(jnp.array([3.0, 4.0]), 50), [3, 4])


def _scene(seed=0, n=80, m=12, k=4):
    """Random predictions skewed towards class 0, and 30% of cells observed."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, m, k)) * 2.0
    logits[..., 0] += 1.5
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), -1)
    observed = jnp.asarray(rng.random((n, m)) < 0.3)
    return log_probs, observed


def test_dasc_selection_follows_eq_3_4_and_skips_observed_cells():
    log_probs, observed = _scene()
    n_select = 120
    chosen, pseudo = dasc.select_pseudo_annotations(jax.random.key(0), log_probs, observed,
                                                    n_select, "dasc")
    chosen, pseudo, observed = map(np.asarray, (chosen, pseudo, observed))
    assert not (chosen & observed).any()
    assert chosen.sum() == n_select
    cand = ~observed
    n_prime = np.bincount(pseudo[cand], minlength=4)
    got = np.bincount(pseudo[chosen], minlength=4)
    assert n_prime[0] > 2 * n_prime[1:].max()  # the skew the selection must undo
    ideal = n_select * (1 / n_prime) / (1 / n_prime).sum()
    assert np.all(np.abs(got - ideal) < 1.0), (got, ideal)
    assert got[0] == got.min()  # the majority prediction is selected least
    # within each class, the least-entropy candidates are the ones taken
    ent = np.asarray(dasc.entropy(log_probs))
    for c in range(4):
        taken = ent[chosen & (pseudo == c)]
        left = ent[cand & ~chosen & (pseudo == c)]
        assert taken.max() <= left.min()


def test_confidence_and_random_selection():
    log_probs, observed = _scene(1)
    ent = np.asarray(dasc.entropy(log_probs))
    chosen, _ = dasc.select_pseudo_annotations(jax.random.key(0), log_probs, observed, 50,
                                               "confidence")
    chosen, observed_np = np.asarray(chosen), np.asarray(observed)
    assert chosen.sum() == 50 and not (chosen & observed_np).any()
    assert ent[chosen].max() <= ent[~observed_np & ~chosen].min()
    a, _ = dasc.select_pseudo_annotations(jax.random.key(0), log_probs, observed, 50, "random")
    b, _ = dasc.select_pseudo_annotations(jax.random.key(1), log_probs, observed, 50, "random")
    a, b = np.asarray(a), np.asarray(b)
    assert a.sum() == 50 and not (a & observed_np).any() and (a != b).any()
    # more requested than free cells: every free cell, and nothing else
    full = np.ones((80, 12), bool)
    full[:2, :3] = False
    for rule in dasc.SELECTIONS:
        c, _ = dasc.select_pseudo_annotations(jax.random.key(0), log_probs, jnp.asarray(full),
                                              50, rule)
        np.testing.assert_array_equal(np.asarray(c), ~full)
    with pytest.raises(ValueError, match="rule"):
        dasc.select_pseudo_annotations(jax.random.key(0), log_probs, observed, 5, "greedy")


def test_imbalance_ratio_counts_only_masked_cells():
    labels = jnp.array([[0, 1, 1], [1, 2, 2], [2, 2, 0]])
    mask = jnp.array([[True, True, True], [True, True, True], [True, True, False]])
    assert float(dasc.imbalance_ratio(labels, mask, 3)) == pytest.approx(4 / 1)  # 0:1 1:3 2:4
    assert float(dasc.imbalance_ratio(labels, jnp.ones((3, 3), bool), 3)) == pytest.approx(2.0)
    assert np.isinf(float(dasc.imbalance_ratio(labels, mask, 4)))  # class 3 absent
    stacked = dasc.imbalance_ratio(jnp.stack([labels, labels]), jnp.stack([mask, mask]), 3)
    np.testing.assert_allclose(stacked, [4.0, 4.0])


# ----------------------------------------------------------------------------- losses
@pytest.mark.parametrize("model, loss", [("crowdlayer", "ce"), ("anno_reg", "ce"), ("wdn", "ce"),
                                         ("crowdlayer", "focal")])
def test_missing_annotations_contribute_nothing(model, loss):
    n, m, k, d = 16, 5, 3, 7
    rng = np.random.default_rng(0)
    net = dasc.network(model, k, m, dasc.Config(dropout=0.0))
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    params = net.init(jax.random.key(0), x)
    if model == "crowdlayer":  # move W away from the identity so every label matters
        params = {**params, "worker_maps": params["worker_maps"] + jnp.asarray(
            rng.normal(size=(m, k, k)), jnp.float32)}
    labels = rng.integers(0, k, size=(n, m))
    mask = rng.random((n, m)) < 0.4
    weights = jnp.asarray(mask, jnp.float32)
    other = np.where(mask, labels, rng.integers(-1, k, size=(n, m)))  # any label where missing
    other[~mask & (other == labels)] = -1

    def value_and_grad(lab):
        return jax.value_and_grad(dasc.crowd_loss, argnums=1)(
            net, params, x, jnp.asarray(lab, jnp.int32), weights, None, loss, 2.0, False)

    v1, g1 = value_and_grad(np.where(mask, labels, -1))
    v2, g2 = value_and_grad(other)
    assert np.isfinite(float(v1)) and float(v1) == float(v2)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(a, b)
    # ...while an observed cell does count
    flipped = np.where(mask, labels, -1)
    i, j = np.argwhere(mask)[0]
    flipped[i, j] = (flipped[i, j] + 1) % k
    assert float(value_and_grad(flipped)[0]) != float(v1)


def test_imbalance_baseline_weights_balance_the_classes():
    labels = np.array([[0, 0, 0], [0, 1, -1], [0, 2, 2]], dtype=np.int32)
    mask = labels >= 0
    per_class = lambda w: np.bincount(labels[mask], weights=w[mask], minlength=3)  # noqa: E731
    np.testing.assert_array_equal(dasc.loss_weights(labels, mask, 3, "ce"), mask)
    np.testing.assert_allclose(per_class(dasc.loss_weights(labels, mask, 3, "reweighting")),
                               [5.0, 5.0, 5.0])
    copies = dasc.loss_weights(labels, mask, 3, "resampling", seed=3)
    np.testing.assert_array_equal(per_class(copies), [5, 5, 5])
    assert (copies[mask] >= 1).all() and (copies[~mask] == 0).all()
    assert np.all(copies == np.round(copies))


# ----------------------------------------------------------------------------- synthetic recovery
@pytest.fixture(scope="module")
def synthetic_task():
    """3 well separated classes in 8-d; 6 workers with known confusions, each answering 70% of
    the items: accurate, class-0-to-1 flipper, cyclic confuser, near-random, two decent ones."""
    rng = np.random.default_rng(0)
    n, k, d = 1200, 3, 8
    truth = rng.integers(0, k, n)
    centers = rng.normal(size=(k, d)) * 3.0
    x = (centers[truth] + rng.normal(size=(n, d))).astype(np.float32)
    eye = np.eye(k)
    conf = np.stack([
        0.95 * eye + 0.025 * (1 - eye),
        np.array([[0.2, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) * 0.94 + 0.02,
        np.roll(eye, 1, axis=1) * 0.7 + eye * 0.3,
        np.full((k, k), 1 / 3) * 0.7 + eye * 0.3,
        0.8 * eye + 0.1 * (1 - eye),
        0.85 * eye + 0.075 * (1 - eye),
    ])
    conf /= conf.sum(-1, keepdims=True)
    m = len(conf)
    answered = rng.random((n, m)) < 0.7
    item, worker = np.nonzero(answered)
    cdf = np.cumsum(conf[worker, truth[item]], -1)
    label = (rng.random(len(item))[:, None] > cdf).sum(-1)
    ann = ci.Annotations.from_arrays(item, worker, label, n_items=n, n_workers=m, n_classes=k,
                                     gold=truth, features=x)
    return ann, conf, truth


SYNTH_CONFIG = dasc.Config(hidden=32, dropout=0.0, batch_size=256, epochs=80,
                           learning_rate=1e-2, weight_decay=0.0)


@pytest.mark.parametrize("model", dasc.BASE_MODELS)
def test_base_models_recover_known_confusions(synthetic_task, model):
    ann, conf, truth = synthetic_task
    net = dasc.train_base(ann, model, seeds=1, config=SYNTH_CONFIG)
    assert net.accuracy(ann.features, truth)[0] > 0.97
    learned = net.worker_confusions(ann.features, truth)[0]
    err = np.abs(learned - conf).max()
    assert err < 0.1, (model, err, np.round(learned, 2))
    if model in ("crowdlayer", "anno_reg"):  # and the parameters themselves
        assert np.abs(net.confusions()[0] - conf).max() < 0.15
    if model == "wdn":  # the learned worker weights fit eq. 7 better than uniform weights
        heads = np.log(net.annotator_probs(ann.features)[0])  # (N, M, K)
        labels, mask = dasc.dense_annotations(ann)
        target = (np.eye(3)[np.where(mask, labels, 0)] * mask[..., None]).sum(1)
        target /= np.maximum(target.sum(-1, keepdims=True), 1)

        def eq7(v):
            mix = jax.nn.logsumexp(heads + jax.nn.log_softmax(v)[None, :, None], axis=1)
            return -float(jnp.sum(target * mix)) / len(target)

        learned = net.params["worker_weights"][0]
        assert eq7(learned) < eq7(jnp.zeros_like(learned))


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def labelme(dataset):
    return dataset("labelme")


def test_labelme_crowdlayer_and_self_training(labelme):
    d = labelme
    ann = d.annotations
    net = dasc.train_base(ann, "crowdlayer", seeds=1)
    acc = net.accuracy(d.test.features, d.test.gold)[0]
    assert acc > 0.80, acc  # the paper's 10x larger augmented set: 0.840
    truth_r = np.bincount(ann.gold).max() / np.bincount(ann.gold).min()
    ratios = {}
    for rule in ("dasc", "confidence"):
        st = dasc.self_train(ann, "crowdlayer", rule, n_select=1000, iterations=1, seeds=1,
                             eval_data=(d.test.features, d.test.gold))
        h = st.history
        assert h["ratio"].shape == h["accuracy"].shape == (1, 2)
        assert h["ratio"][0, 0] == pytest.approx(2.48, abs=0.01)  # the observed annotations
        assert h["accuracy"][0, 0] == pytest.approx(acc)  # iteration 0 is the plain model
        np.testing.assert_array_equal(h["n_pseudo"][0], [0, 1000])
        observed = dasc.dense_annotations(ann)[1]
        np.testing.assert_array_equal(st.labels[0][observed], dasc.dense_annotations(ann)[0][
            observed])  # observed annotations are never overwritten
        ratios[rule] = h["ratio"][0, 1]
    # confidence piles pseudo-annotations onto the majority classes; DASC rebalances them
    assert ratios["confidence"] > 4.0 and ratios["dasc"] < truth_r + 0.3, (ratios, truth_r)


def test_aggregate_then_learn(labelme):
    d = labelme
    net = dasc.train_aggregated(d.annotations, "dawid_skene", seeds=1)
    assert net.accuracy(d.test.features, d.test.gold)[0] > 0.78


def test_bad_inputs_raise(labelme):
    ann = labelme.annotations
    with pytest.raises(ValueError, match="model"):
        dasc.train_base(ann, "resnet")
    with pytest.raises(ValueError, match="loss"):
        dasc.train_base(ann, "wdn", loss="hinge")
    with pytest.raises(ValueError, match="selection"):
        dasc.self_train(ann, selection="best")
    with pytest.raises(ValueError, match="n_select"):
        dasc.self_train(ann, n_select=0)
    with pytest.raises(ValueError, match="features"):
        dasc.train_base(ci.Annotations.from_arrays([0, 1], [0, 1], [0, 1]))
    with pytest.raises(ValueError, match="seeds"):
        dasc.train_base(ann, seeds=0)
    with pytest.raises(ValueError, match="epochs"):
        dasc.Config(epochs=0)
    with pytest.raises(ValueError, match="method"):
        dasc.train_aggregated(ann, "glad")


# ----------------------------------------------------------------------------- simulate
def test_long_tailed_counts_decay_exponentially():
    counts = sim.long_tailed_counts([400, 200, 300, 60], ratio=10.0)
    np.testing.assert_array_equal(counts, [400, 86, 185, 40])  # head = the largest class
    np.testing.assert_array_equal(counts[[0, 2, 1, 3]],
                                  np.floor(400 * 10.0 ** (-np.arange(4) / 3)))
    limited = sim.long_tailed_counts([10, 100, 100], ratio=4.0, order=[0, 1, 2])
    np.testing.assert_array_equal(limited, [10, 5, 2])  # n_max capped by the head's 10 items
    with pytest.raises(ValueError, match="ratio"):
        sim.long_tailed_counts([10, 10], 0.5)
    with pytest.raises(ValueError, match="empty"):
        sim.long_tailed_counts([10, 10], 20.0)


def test_long_tailed_subset_of_labelme(labelme):
    ann = labelme.annotations
    lt = sim.long_tailed(ann, 5.0, seed=1)
    sizes = np.bincount(lt.gold, minlength=8)
    np.testing.assert_array_equal(
        sizes, sim.long_tailed_counts(np.bincount(ann.gold, minlength=8), 5.0))
    assert sizes.max() / sizes.min() == pytest.approx(5.0, rel=0.05)
    assert lt.n_workers == ann.n_workers and lt.n_items == sizes.sum()
    # every kept item keeps exactly its annotations, gold and features
    pos = {item: i for i, item in enumerate(ann.item_ids)}
    old = {(pos[i], w, lab) for i, w, lab in zip(ann.item_ids[ann.item], ann.worker, ann.label)}
    new = {(pos[i], w, lab) for i, w, lab in zip(lt.item_ids[lt.item], lt.worker, lt.label)}
    kept = {pos[i] for i in lt.item_ids}
    assert new == {t for t in old if t[0] in kept}
    rows = np.array([pos[i] for i in lt.item_ids])
    np.testing.assert_array_equal(lt.features, ann.features[rows])
    np.testing.assert_array_equal(lt.gold, ann.gold[rows])


def test_remove_annotations(labelme):
    ann = labelme.annotations
    sparse = sim.remove_annotations(ann, 0.4, seed=0)
    assert sparse.n_annotations == ann.n_annotations - round(0.4 * ann.n_annotations)
    assert sparse.n_items == ann.n_items and sparse.n_workers == ann.n_workers
    old = set(zip(ann.item, ann.worker, ann.label))
    assert set(zip(sparse.item, sparse.worker, sparse.label)) <= old
    np.testing.assert_array_equal(sparse.gold, ann.gold)
    assert sparse.features is ann.features or np.array_equal(sparse.features, ann.features)
    other = sim.remove_annotations(ann, 0.4, seed=1)
    assert set(zip(other.item, other.worker)) != set(zip(sparse.item, sparse.worker))
    with pytest.raises(ValueError, match="fraction"):
        sim.remove_annotations(ann, 1.0)
