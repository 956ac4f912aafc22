"""Gold-free calibration: the online risk's leave-one-annotation-out temperature, and the
answers-per-item stopping rule (issue 14, item 4)."""
import jax.numpy as jnp
import pytest

import crowdinfer as ci
from crowdinfer import online
from crowdinfer.fit import fit
from crowdinfer.online.risk import TEMPERATURES, loo_temperature


@pytest.fixture(scope="module")
def crowd():
    task = ci.datasets.synthetic(n_items=400, n_workers=8, n_classes=3, annotations_per_item=5,
                                 accuracy=(0.55, 0.75), seed=5)
    post = fit(task.annotations, "dawid_skene", prior="none")
    data = task.annotations.to_device()
    log_lik = jnp.log(jnp.asarray(post.confusion))[data.worker, :, data.label]
    return task, post, data, log_lik


def test_an_overconfident_posterior_is_cooled(crowd):
    _, post, data, log_lik = crowd
    log_q = jnp.log(jnp.asarray(post.label_probs, jnp.float32))
    t_fit = float(loo_temperature(data, log_lik, log_q))
    t_sharp = float(loo_temperature(data, log_lik, 4.0 * log_q - jnp.log(
        jnp.exp(4.0 * log_q).sum(-1, keepdims=True))))
    assert t_sharp > t_fit and t_sharp >= 2.0
    assert min(TEMPERATURES) == 1.0 and t_fit in TEMPERATURES


def test_early_stop_is_counted_in_answers_per_item():
    with pytest.raises(ValueError, match=r"early_stop must be None or in \(0, max_per_item=3\]"):
        online.preset("ds_model", 3, early_stop=5)
    cfg = online.preset("ds_model", 3, early_stop=0.5, hits_per_step=1, hit_size=5)
    t = online.make_task(1000, 10)
    s = online.init(cfg, t)
    # 40 steps of 5 answers with no growth: 0.2 answers per item -- the old rule (5 steps) would
    # have stopped long ago, this one does not
    s = s._replace(step=jnp.int32(40), n_annotations=jnp.int32(200), stall=jnp.int32(0))
    assert online.stop_reason(cfg, s) is None
    s = s._replace(n_annotations=jnp.int32(500))
    assert "0.50 per item" in online.stop_reason(cfg, s)
