"""The per-item layout of CrowdData (``slots``): built only where it pays, and every kernel and
engine gives the row path's answer to float tolerance (only the order of additions differs)."""
import jax.numpy as jnp
import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer import ops
from crowdinfer.annotations import slot_layout
from crowdinfer.inference.loop import Spec, run
from crowdinfer.models import class_prior, dawid_skene, majority_vote

K = 3


def uneven(per_item_max: int, seed: int = 0, n_items: int = 120):
    """Items with 1..per_item_max annotations (mostly per_item_max - 1 or more), rows shuffled."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(max(per_item_max - 2, 1), per_item_max + 1, n_items)
    counts[0], counts[1] = per_item_max, 1
    item = np.repeat(np.arange(n_items), counts)
    worker = rng.integers(0, 15, len(item))
    truth = rng.integers(0, K, n_items)
    label = np.where(rng.random(len(item)) < 0.7, truth[item], rng.integers(0, K, len(item)))
    order = rng.permutation(len(item))
    return ci.Annotations.from_arrays(item[order], worker[order], label[order])


def test_layout_holds_each_items_annotations_and_marks_empty_slots():
    item = np.array([0, 0, 1, 2, 2, 2])
    worker = np.array([1, 0, 2, 0, 1, 2])
    label = np.array([1, 0, 1, 1, 0, 1])
    slots = slot_layout(item, worker, label, None, 3, 3, 2)
    empty = 3 * 2
    np.testing.assert_array_equal(slots, [[1 * 2 + 1, 2 * 2 + 1, 0 * 2 + 1],
                                          [0 * 2 + 0, empty, 1 * 2 + 0],
                                          [empty, empty, 2 * 2 + 1]])
    # rows of weight 0 are left out; any other weight than 0/1 means no layout
    w = np.array([1, 0, 1, 1, 1, 1], np.float32)
    assert slot_layout(item, worker, label, w, 3, 3, 2, max_fill=2.0)[1, 0] == empty
    assert slot_layout(item, worker, label, w * 0.5 + 0.5, 3, 3, 2, max_fill=2.0) is None


def test_layout_is_left_out_when_it_would_not_pay():
    # one item with 40 annotations, 99 with 1: 40 * 100 slots for 139 annotations
    item = np.concatenate([np.zeros(40, int), np.arange(1, 100)])
    z = np.zeros(len(item), int)
    assert slot_layout(item, z, z, None, 100, 1, 2) is None
    # above 16 slots the number is rounded up to a multiple of 8
    item = np.repeat(np.arange(10), 17)
    z = np.zeros(len(item), int)
    assert slot_layout(item, z, z, None, 10, 1, 2, max_fill=2.0).shape == (24, 10)


@pytest.mark.parametrize("per_item", [4, 21])  # unrolled, and blocks of 8 slots in a loop
def test_kernels_agree_with_the_row_path(per_item):
    data = uneven(per_item).to_device(sharding=None)
    assert data.slots is not None
    rows = data.rows_only()
    rng = np.random.default_rng(1)
    q = rng.dirichlet(np.ones(K), data.n_items).astype(np.float32)
    log_conf = jnp.log(rng.dirichlet(np.ones(K), (data.n_workers, K)).astype(np.float32))
    np.testing.assert_allclose(ops.expected_confusion_counts(data, q),
                               ops.expected_confusion_counts(rows, q), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ops.vote_counts(data), ops.vote_counts(rows))
    lik = lambda r: ops.gather_log_confusion(r, log_conf)  # noqa: E731
    np.testing.assert_allclose(ops.item_sum(data, lik), ops.item_sum(rows, lik), rtol=1e-5)
    np.testing.assert_allclose(ops.mean_annotation_likelihood(data, lik, q),
                               ops.mean_annotation_likelihood(rows, lik(rows), q), rtol=1e-5)


@pytest.mark.parametrize("part", ["map", "vb"])
def test_em_and_vb_loops_agree_with_the_row_path(part):
    data = uneven(6, seed=2).to_device(sharding=None)
    make = dawid_skene.map_part if part == "map" else dawid_skene.vb_part
    spec = Spec(make(np.ones((K, K), np.float32) * (1.0 if part == "vb" else 2.0)),
                class_prior.part("em", K, concentration=2.0))
    start = majority_vote.soft(data)
    a = run(spec, data, start)  # the soft rule: from the expected counts
    b = run(spec, data.rows_only(), start)
    assert int(a.iteration) == int(b.iteration) > 3
    np.testing.assert_allclose(a.log_q, b.log_q, atol=1e-4)
    np.testing.assert_allclose(a.history, b.history, rtol=1e-5)  # the objectives
    np.testing.assert_allclose(a.likelihood, b.likelihood, rtol=1e-5)


@pytest.mark.parametrize("model", ["community_bcc", "one_coin"])  # no sufficient statistics
def test_other_models_fit_the_same_with_the_layout(model, monkeypatch):
    ann = uneven(5, seed=3)
    assert ann.to_device().slots is not None  # what fit uses (one device)
    with_slots = ci.fit(ann, model)
    monkeypatch.setattr("crowdinfer.annotations.slot_layout", lambda *a, **k: None)
    without = ci.fit(ann, model)
    assert with_slots.n_iter == without.n_iter
    np.testing.assert_allclose(with_slots.label_probs, without.label_probs, atol=1e-4)
