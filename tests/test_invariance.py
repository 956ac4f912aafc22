"""Relabelling workers or items changes nothing; permuting class names permutes the output."""
import numpy as np
import pytest

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
