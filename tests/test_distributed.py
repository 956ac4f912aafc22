"""Sharding the annotation axis over devices gives the single-device answer.

The test process has one CPU device; a subprocess started with two host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=2``) fits the same data."""
import json
import os
import subprocess
import sys

import numpy as np

import crowdinfer as ci

SCRIPT = r"""
import json, sys, warnings
import jax, numpy as np
import crowdinfer as ci
warnings.simplefilter("ignore")
ann = ci.datasets.load(sys.argv[1]).annotations
data = ann.to_device()
out = {"devices": len(jax.devices()), "shards": len(data.item.sharding.device_set)}
for model, method in [("dawid_skene", "em"), ("bcc", "vb"), ("glad", "em")]:
    out[model] = ci.fit(ann, model, method).label_probs.tolist()
print(json.dumps(out))
"""


def test_two_devices_give_the_single_device_answer(dataset):
    ann = dataset("web").annotations
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ci.datasets.shared_data_dir() / "web")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["shards"] == 2
    for model, method in [("dawid_skene", "em"), ("bcc", "vb"), ("glad", "em")]:
        single = ci.fit(ann, model, method).label_probs
        sharded = np.asarray(out[model])
        assert (single.argmax(1) == sharded.argmax(1)).mean() > 0.998, model
        np.testing.assert_allclose(sharded, single, atol=2e-3, err_msg=model)


def test_single_device_data_is_not_sharded():
    data = ci.datasets.synthetic(n_items=100, n_workers=5, seed=0).annotations.to_device()
    assert len(data.item.sharding.device_set) == 1


def test_chunked_annotation_sums_give_the_one_piece_answer(monkeypatch):
    """Above CHUNK_BYTES of (rows, K) intermediates the loop sums the annotations chunk by chunk
    (lax.scan); the posterior is the one-piece posterior."""
    import jax

    from crowdinfer import distributed
    from crowdinfer.models import majority_vote
    from crowdinfer.ops import expected_confusion_counts

    ann = ci.datasets.synthetic(n_items=3000, n_workers=30, n_classes=3, annotations_per_item=7,
                                seed=2).annotations
    data = ann.to_device()
    q = majority_vote.soft(data)
    assert distributed._n_chunks(data.item.shape[0], 1024) > 20
    whole = expected_confusion_counts(data, q)
    chunked = distributed.annotation_sum(expected_confusion_counts, data, q, chunk_bytes=1024 * 12)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)
    one_piece = ci.fit(ann, stop="objective", tol=0.0, max_iter=15)
    monkeypatch.setattr(distributed, "CHUNK_BYTES", 1024 * 12)  # 1024-row chunks
    jax.clear_caches()
    in_chunks = ci.fit(ann, stop="objective", tol=0.0, max_iter=15)
    jax.clear_caches()
    np.testing.assert_allclose(in_chunks.label_probs, one_piece.label_probs, atol=1e-5)
    np.testing.assert_allclose(in_chunks.history, one_piece.history, rtol=1e-5)
