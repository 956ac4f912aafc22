"""Worker analytics: importance (seed 000 sec. 4.5.5, Fig. 12) and contribution by the gradient of a
validation loss through a differentiable aggregation (seed 003, R3, eq. 5).

* :func:`worker_importance` -- a weighted sum of each worker's per-class reliability (the diagonal
  of its confusion), the weights inversely proportional to the model's per-class accuracy: a worker
  is important when it is reliable on the classes the machine gets wrong.  Fig. 12 compares it with
  the number of annotations each worker was given (:func:`importance_table`).
* :func:`annotation_gradients` / :func:`worker_contribution` -- the aggregation (Dawid-Skene EM,
  unrolled for a fixed number of iterations from the weighted soft majority vote) is a
  differentiable function of the annotations' weights ``CrowdData.weight``.  The validation loss
  is the cross-entropy of the aggregated labels of items with known labels; its gradient with
  respect to each weight says how the loss would move if the annotation counted more.  A worker's
  contribution is ``-sum`` of its annotations' gradients: positive when its answers lower the
  validation loss.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from crowdinfer.annotations import CrowdData
from crowdinfer.inference import loop
from crowdinfer.inference.loop import Spec
from crowdinfer.models import class_prior, dawid_skene
from crowdinfer.ops import vote_counts

__all__ = ["worker_importance", "importance_table", "prototype_class_accuracy", "aggregate_weighted", "annotation_gradients",
           "integrated_gradients", "worker_contribution"]


def worker_importance(confusion, class_accuracy) -> np.ndarray:
    """``importance_j = sum_k w_k conf_j[k, k]`` with ``w_k`` proportional to ``1 / acc_k`` (the
    model's accuracy on class k), normalised to sum to 1."""
    conf = np.asarray(confusion, dtype=np.float64)
    acc = np.clip(np.asarray(class_accuracy, dtype=np.float64), 1e-3, 1.0)
    if conf.ndim != 3 or conf.shape[1:] != (len(acc), len(acc)):
        raise ValueError(f"confusion must be (M, {len(acc)}, {len(acc)}), got {conf.shape}")
    w = (1.0 / acc) / np.sum(1.0 / acc)
    return np.diagonal(conf, axis1=1, axis2=2) @ w


def prototype_class_accuracy(config, state, task) -> np.ndarray:
    """The learner's accuracy on the prototypes of each class (the weights of the importance)."""
    from .learner import predict_log_probs

    if config.learner == "none" or task.proto_labels.shape[0] == 0:
        raise ValueError("the model's per-class accuracy needs a learner and prototypes")
    log_p = predict_log_probs(config, state.learner["params"], task.proto_features,
                              state.learner["temperature"])
    right = np.asarray(jnp.argmax(log_p, -1) == task.proto_labels, dtype=float)
    labels = np.asarray(task.proto_labels)
    return np.array([right[labels == k].mean() if np.any(labels == k) else 1.0
                     for k in range(config.n_classes)])


def importance_table(state, class_accuracy) -> pd.DataFrame:
    """Per worker: importance, annotations given, and their ranks (Fig. 12 right)."""
    imp = worker_importance(state.confusion, class_accuracy)
    count = np.asarray(state.worker_count)
    frame = pd.DataFrame({"importance": imp, "annotations": count})
    frame["importance_rank"] = frame["importance"].rank(ascending=False)
    frame["annotations_rank"] = frame["annotations"].rank(ascending=False)
    return frame


@partial(jax.jit, static_argnames=("n_iter",))
def aggregate_weighted(data: CrowdData, weight, prior_counts, log_prior, n_iter: int = 20):
    """Dawid-Skene MAP-EM from the weighted soft majority vote, ``n_iter`` iterations of the
    shared loop's :func:`~crowdinfer.inference.loop.step` unrolled (a ``lax.scan``, so it is
    reverse-differentiable in ``weight``).  Returns ``log q`` (N, K)."""
    d = CrowdData(data.item, data.worker, data.label, weight, data.n_items, data.n_workers,
                  data.n_classes)
    votes = vote_counts(d)
    q0 = (votes + 1e-3) / (votes + 1e-3).sum(-1, keepdims=True)
    # the label prior is fixed: log_prior as logits (log_softmax leaves a log distribution as is)
    logits = jnp.broadcast_to(log_prior, (d.n_items, d.n_classes))
    spec = Spec(dawid_skene.map_part(1.0 + prior_counts), class_prior.part("em", logits=logits))
    state = loop.init(spec, d, q0, max_iter=n_iter, stop="hard")
    state, _ = jax.lax.scan(lambda s, _: (loop.step(spec, d, s, stop="hard"), None), state, None,
                            length=n_iter - 1)
    return jnp.log(jnp.maximum(jnp.exp(state.log_q), 1e-30))


def annotation_gradients(data: CrowdData, valid_items, valid_labels, prior_counts=None,
                         log_prior=None, n_iter: int = 20, loss_kind: str = "accuracy"):
    """``d loss / d weight_n`` for every annotation row (padding rows get 0), where ``loss`` is the
    mean cross-entropy of the aggregated labels of ``valid_items`` against ``valid_labels``."""
    k = data.n_classes
    prior_counts = jnp.zeros((k, k)) if prior_counts is None else jnp.asarray(prior_counts)
    log_prior = jnp.full((k,), -jnp.log(k)) if log_prior is None else jnp.asarray(log_prior)
    items = jnp.asarray(valid_items, jnp.int32)
    labels = jnp.asarray(valid_labels, jnp.int32)

    def loss(w):
        log_q = aggregate_weighted(data, w, prior_counts, log_prior, n_iter=n_iter)
        if loss_kind == "nll":
            return -jnp.mean(log_q[items, labels])
        return -jnp.mean(jnp.exp(log_q[items, labels]))

    grad = jax.grad(loss)(data.weight)
    return grad * (data.weight > 0)


def integrated_gradients(data: CrowdData, valid_items, valid_labels, steps: int = 16, **kwargs):
    """Path-integrated gradients: ``w_n * mean_a dL/dw_n (a w)`` over ``a`` in (0, 1] (midpoint
    rule).  Unlike the local gradient they do not saturate once the aggregation is confident, and
    they add up to the whole change of the loss, ``L(w) - L(0)`` (Aumann-Shapley attribution)."""
    total = jnp.zeros_like(data.weight)
    for a in (np.arange(steps) + 0.5) / steps:
        scaled = CrowdData(data.item, data.worker, data.label, data.weight * a, data.n_items,
                           data.n_workers, data.n_classes)
        total = total + annotation_gradients(scaled, valid_items, valid_labels, **kwargs)
    return total / steps * data.weight


def worker_contribution(data: CrowdData, valid_items, valid_labels, method: str = "integrated",
                        **kwargs) -> np.ndarray:
    """Per worker: how much its annotations lower the validation loss (positive = helpful).
    ``method="integrated"`` (default): minus the sum of its annotations' integrated gradients;
    ``"gradient"``: minus the sum of the local gradients at the full weights (seed 003 eq. 5, a
    marginal value that fades for workers whose answers are already outvoted or redundant)."""
    if method == "integrated":
        g = integrated_gradients(data, valid_items, valid_labels, **kwargs)
    elif method == "gradient":
        g = annotation_gradients(data, valid_items, valid_labels, **kwargs)
    else:
        raise ValueError(f"method must be 'integrated' or 'gradient', got {method!r}")
    return -np.asarray(jax.ops.segment_sum(g, data.worker, data.n_workers))
