"""Out-of-core Dawid-Skene from Parquet: exact EM equals in-memory EM, chunk by chunk."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crowdinfer as ci
from crowdinfer import outofcore


@pytest.fixture(scope="module")
def task():
    return ci.datasets.synthetic(n_items=1500, n_workers=25, n_classes=3, annotations_per_item=4,
                                 worker_activity=1.0, seed=5)


def _write(ann, path, row_group=1000, order=None):
    order = np.argsort(ann.item, kind="stable") if order is None else order
    table = pa.table({"item": ann.item[order], "worker": ann.worker[order],
                      "label": ann.label[order]})
    pq.write_table(table, path, row_group_size=row_group)
    return path


@pytest.mark.parametrize("prior,stop,tol", [("pooled", "soft", 1e-6), ("none", "objective", 0.0)])
def test_em_from_parquet_equals_in_memory_em(task, tmp_path, prior, stop, tol):
    ann = task.annotations
    path = _write(ann, tmp_path / "ann.parquet")
    kw = dict(prior=prior, stop=stop, tol=tol, max_iter=12 if tol == 0 else 30)
    mem = ci.fit(ann, "dawid_skene", **kw)
    # chunks of at most 999 rows: many cuts, items carried over between Parquet batches
    ooc = outofcore.em(str(path), rows=999, progress=False, **kw)
    assert ooc.n_iter == mem.n_iter and ooc.converged == mem.converged
    np.testing.assert_allclose(ooc.history, mem.history, rtol=2e-5)
    np.testing.assert_allclose(ooc.label_probs, mem.label_probs, atol=2e-4)
    np.testing.assert_allclose(ooc.confusion, mem.confusion, atol=2e-4)
    np.testing.assert_allclose(ooc.class_prior, mem.class_prior, atol=2e-4)


def test_sizes_found_in_the_file_and_hard_rule(task, tmp_path):
    ann = task.annotations
    path = _write(ann, tmp_path / "ann.parquet")
    assert outofcore.sizes(str(path)) == (ann.n_items, ann.n_workers, ann.n_classes)
    mem = ci.fit(ann, "dawid_skene", stop="hard")
    ooc = outofcore.em(str(path), stop="hard", rows=4096, progress=False)
    assert ooc.n_iter == mem.n_iter
    assert np.array_equal(ooc.label_probs.argmax(1), mem.label_probs.argmax(1))


def test_single_pass_svi_labels_like_em(task, tmp_path):
    ann = task.annotations
    path = _write(ann, tmp_path / "ann.parquet")
    res = outofcore.svi(str(path), rows=256, steps_per_chunk=5, progress=False)
    em = ci.fit(ann, "dawid_skene")
    assert res.n_iter == 5 * len(list(outofcore.chunks(str(path), 256)))
    agree = (res.label_probs.argmax(1) == em.labels).mean()
    assert agree > 0.95, agree
    # one pass of ~120 minibatch steps labels within 0.01 of EM (0.873 vs 0.877 here)
    assert (res.label_probs.argmax(1) == ann.gold).mean() > em.accuracy() - 0.01


def test_bad_files_raise(task, tmp_path):
    ann = task.annotations
    shuffled = _write(ann, tmp_path / "shuffled.parquet",
                      order=np.random.default_rng(0).permutation(ann.n_annotations))
    with pytest.raises(ValueError, match="sorted by item"):
        outofcore.em(str(shuffled), progress=False)
    path = _write(ann, tmp_path / "ann.parquet")
    with pytest.raises(ValueError, match="more than 3 annotations"):
        outofcore.em(str(path), rows=3, progress=False)
    with pytest.raises(ValueError, match="codes out of range"):
        outofcore.em(str(path), n_workers=2, progress=False)
    pq.write_table(pa.table({"item": [0], "label": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing \\['worker'\\]"):
        outofcore.em(str(tmp_path / "bad.parquet"), progress=False)
    pq.write_table(pa.table({"item": ann.item.astype(str), "worker": ann.worker,
                             "label": ann.label}), tmp_path / "ids.parquet")
    with pytest.raises(ValueError, match="\\['item'\\] must hold integer codes"):
        outofcore.em(str(tmp_path / "ids.parquet"), progress=False)
