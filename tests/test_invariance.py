"""Relabelling workers or items changes nothing; permuting class names permutes the output."""
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crowdinfer as ci


@pytest.fixture(scope="module", params=["dog", "web"])
def frame(request, dataset):
    ann = dataset(request.param).annotations
    return ann.to_dataframe(), ann.gold_labels()


def _by_item(post):
    df = post.to_pandas(probabilities=True).set_index("item").sort_index()
    return df


def test_relabelling_workers_and_items_changes_nothing(frame):
    df, _ = frame
    rng = np.random.default_rng(0)
    workers = df.worker.unique()
    wmap = dict(zip(workers, [f"w{v}" for v in rng.permutation(len(workers))]))
    items = df.item.unique()
    imap = dict(zip(items, rng.permutation(len(items)) + 10_000))
    renamed = df.assign(worker=df.worker.map(wmap), item=df.item.map(imap)).sample(frac=1, random_state=1)
    a = _by_item(ci.fit(ci.Annotations.from_dataframe(df), "dawid_skene"))
    b = _by_item(ci.fit(ci.Annotations.from_dataframe(renamed), "dawid_skene"))
    b.index = b.index.map({v: k for k, v in imap.items()})
    b = b.sort_index()
    assert (a.label.to_numpy() == b.label.to_numpy()).mean() > 0.999
    np.testing.assert_allclose(a.filter(like="p_").to_numpy(), b.filter(like="p_").to_numpy(), atol=1e-3)


def test_permuting_class_names_permutes_the_output(frame):
    df, gold = frame
    classes = sorted(df.label.unique())
    perm = np.random.default_rng(2).permutation(len(classes))
    names = {c: f"class_{classes[p]}" for c, p in zip(classes, perm)}
    a = ci.fit(ci.Annotations.from_dataframe(df), "dawid_skene")
    b = ci.fit(ci.Annotations.from_dataframe(df.assign(label=df.label.map(names))), "dawid_skene")
    la, lb = _by_item(a), _by_item(b)
    assert (la.label.map(names) == lb.label).mean() > 0.999
    for c in classes:
        np.testing.assert_allclose(la[f"p_{c}"], lb[f"p_{names[c]}"], atol=1e-3)
    # worker confusions permute the same way
    order = [list(b.annotations.classes).index(names[c]) for c in classes]
    np.testing.assert_allclose(b.confusion[:, order][:, :, order], a.confusion, atol=1e-3)


# ---------------------------------------------------------------- every model, property-based

N_ITEMS, N_WORKERS, CLASSES = 24, 6, ["a", "b", "c"]
# resolve ``ci.fit`` (the function) before ``ci.MODELS`` imports the ``crowdinfer.fit`` submodule,
# whose import would otherwise leave the package attribute ``fit`` pointing at the module
_FIT = ci.fit


def crowd(seed: int) -> pd.DataFrame:
    """A small crowd task of fixed shape (every worker and class used; compiled once per model)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, N_ITEMS)
    accuracy = rng.uniform(0.35, 0.95, N_WORKERS)
    rows = []
    for i in range(N_ITEMS):
        workers = rng.permutation(N_WORKERS)[:3] if i >= 2 else np.arange(3) + 3 * i
        for j in workers:
            label = truth[i] if rng.random() < accuracy[j] else rng.integers(0, 3)
            rows.append((f"item{i}", f"w{j}", CLASSES[label if i >= 1 else j % 3]))
    return pd.DataFrame(rows, columns=["item", "worker", "label"])


# Where renaming moves a model's output by more than 1e-4, and why (every other model: 1e-4).
LOOSER = {
    # variational EM crawls along flat directions of the population's strength (often 100-200
    # iterations on these 24-item crowds); float32 sums, whose order renaming changes, move where
    # the objective rule stops it: up to 2.0e-3 in a label probability over 16 (seed, renaming)
    # pairs. With tol=1e-8 one pair went to another optimum (0.15 apart): the ridge is flat.
    "hierarchical_ds": 5e-3,
    # the same mechanism, smaller: at its default tolerance VB stops while a confusion still moves
    # by ~1e-4 (seed 2571 / renaming 71: 1.1e-4 at 44 iterations in both runs; with tol=1e-7,
    # 66 iterations, 9e-8). Label flips -- what this test caught before -- are far above this.
    "community_bcc": 5e-4,
}


@pytest.mark.parametrize("model", [  # the default and the model that was not invariant stay fast
    pytest.param(m, marks=() if m in ("dawid_skene", "community_bcc") else pytest.mark.slow)
    for m in sorted(ci.MODELS)])
@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), perm_seed=st.integers(0, 10_000))
def test_every_model_is_invariant_to_renaming_workers_items_and_classes(model, seed, perm_seed):
    """Renaming workers and items changes nothing; renaming the classes permutes the output --
    for every model in the registry with its default engine (labels and worker confusions)."""
    df = crowd(seed)
    rng = np.random.default_rng(perm_seed)
    workers, items = sorted(df.worker.unique()), sorted(df.item.unique())
    wmap = dict(zip(workers, [f"v{p:02d}" for p in rng.permutation(len(workers))]))
    imap = dict(zip(items, [f"x{p:03d}" for p in rng.permutation(len(items))]))
    cmap = dict(zip(CLASSES, [f"k{p}" for p in rng.permutation(3)]))
    renamed = df.assign(worker=df.worker.map(wmap), item=df.item.map(imap), label=df.label.map(cmap))
    renamed = renamed.sample(frac=1.0, random_state=perm_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ci.fit(ci.Annotations.from_dataframe(df, classes=CLASSES), model)
        b = ci.fit(ci.Annotations.from_dataframe(renamed, classes=sorted(cmap.values())), model)
    ib = {v: n for n, v in enumerate(b.annotations.item_ids)}
    ca = [list(b.annotations.classes).index(cmap[c]) for c in a.annotations.classes]
    rows_b = [ib[imap[i]] for i in a.annotations.item_ids]
    atol = LOOSER.get(model, 1e-4)
    np.testing.assert_allclose(b.label_probs[rows_b][:, ca], a.label_probs, atol=atol,
                               err_msg=f"{model}: label probabilities depend on names")
    jb = {v: n for n, v in enumerate(b.annotations.worker_ids)}
    workers_b = [jb[wmap[w]] for w in a.annotations.worker_ids]
    np.testing.assert_allclose(b.confusion[workers_b][:, ca][:, :, ca], a.confusion, atol=atol,
                               err_msg=f"{model}: worker confusions depend on names")
