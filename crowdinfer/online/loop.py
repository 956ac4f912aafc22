"""Algorithm 1 of seed 000 as pure functions over a :class:`~crowdinfer.online.state.State`.

    state = init(config, task)
    while not finished(config, state):
        proposal = propose(config, state)                 # which items, which workers
        state, receipt = ingest(state, items, workers, labels)   # answers, in any order
        state, report = update(config, state, task)       # EM + learner + calibration + risk

``update`` is one ``jax.jit`` (static ``config``): it compiles again only when the annotation
buffer moves to a new capacity bucket.  One update:

1. **EM** on Dawid-Skene (``inference.loop.run`` with the MAP worker part), the label prior being
   the class proportions (``ds_model``) or the learner's calibrated prediction from the previous
   step; soft (eq. 6) or hard (eq. 5) stopping, at most ``em_max_iter`` iterations, started from
   the soft majority vote on annotated items and the prior elsewhere.  Worker prior: homogeneous
   Dirichlet pseudo-counts (appendix E, strength 10, accuracy 0.7).
2. **Learner** (:mod:`crowdinfer.online.learner`): trained from scratch on the new posterior,
   calibrated, selected; the label posterior is recomputed with its prediction as prior.
3. **Risk** (eq. 4) from the posterior tempered by a gold-free temperature
   (:func:`~crowdinfer.online.risk.loo_temperature`, ``calibrate_risk``; the decisions do not
   change) -- or, when the task holds gold items (``Task.gold``, never seen by the EM or the
   learner), mapped by the calibrator whose ``T`` and ``eps`` maximise the likelihood of those
   gold labels (:func:`crowdinfer.calibration.fit_calibrator_jax`, in the same jit), ``T`` then
   raised until the finished gold items are ``>= 1 - C`` correct by a Wilson lower bound
   (:data:`GOLD_CHECK`) -- the
   finished set, and the early-stopping mark (sec. 4.5.9, counted in answers per
   item: ``state.stall`` holds the number of answers when the finished set last grew; with gold
   items the clock starts when the finished set first holds an item).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from crowdinfer.calibration import calibrate_log_probs_jax, fit_calibrator_jax
from crowdinfer.inference.loop import Spec, run
from crowdinfer.models import class_prior, dawid_skene
from crowdinfer.models.priors import homogeneous
from crowdinfer.ops import expected_confusion_counts, label_posterior, vote_counts

from . import learner as learner_mod
from .config import OnlineConfig
from .risk import bayes_risk, eligible, gold_checked_temperature, loo_temperature, loss_matrix
from .state import State, Task, check_gold
from .state import init as _init_state

__all__ = ["init", "update", "finished", "stop_reason", "worker_prior", "label_accuracy"]


def worker_prior(config: OnlineConfig) -> jnp.ndarray:
    """Pseudo-counts (K, K): the homogeneous prior of appendix E."""
    return jnp.asarray(homogeneous(config.n_classes, config.prior_strength, config.prior_accuracy),
                       jnp.float32)


def init(config: OnlineConfig, task: Task, capacity: int | None = None) -> State:
    """The state before any annotation (checks that the task suits the configuration).
    ``capacity``: initial rows of the annotation buffer (default: every proposal a run can make,
    ``N * max_per_item``, up to 2^18; the buffer doubles when full)."""
    if task.gold is not None:
        if not config.calibrate_risk:
            raise ValueError("the task's gold labels fit the risk's calibrator, which "
                             "calibrate_risk=False turns off: set calibrate_risk=True or give the "
                             "task no gold")
        check_gold(np.asarray(task.gold), task.n_items, config.n_classes)
    if config.learner != "none":
        if task.features.shape[1] == 0:
            raise ValueError(f"learner={config.learner!r} needs item features; use the ds_model "
                             "preset (learner='none') to annotate without them")
        if config.calibration == "prototypes":
            protos = np.asarray(task.proto_labels)
            if protos.size == 0:
                raise ValueError("calibration='prototypes' needs clean prototypes (a few labelled "
                                 "examples per class, sec. 4.5.1); pass them to make_task or use "
                                 "calibration='cv'")
            if protos.max() >= config.n_classes:
                raise ValueError(f"prototype labels must lie in 0..{config.n_classes - 1}")
    return _init_state(config, task, capacity)


def _em_spec(config: OnlineConfig, beta, prior_logits) -> Spec:
    k = config.n_classes
    classes = (class_prior.part("em", k, concentration=2.0) if config.learner == "none"
               else class_prior.part("em", logits=prior_logits))
    return Spec(dawid_skene.map_part(1.0 + beta), classes)


#: With gold items, raise the fitted temperature until the finished gold items are >= 1 - C
#: correct by a Wilson lower bound (one standard error;
#: :func:`~crowdinfer.online.risk.gold_checked_temperature`).  A switch for studies
#: (``experiments/online_calibration.py`` turns it off to show the maximum-likelihood map alone).
GOLD_CHECK = True


@partial(jax.jit, static_argnums=(0, 3))
def _update(config: OnlineConfig, state: State, task: Task, gold_check: bool = True):
    data = state.data
    beta = worker_prior(config)
    annotated = state.item_count > 0
    votes = vote_counts(data)
    prior = state.class_prior[None, :] if config.learner == "none" else jnp.exp(state.prior_logits)
    init_probs = jnp.where(annotated[:, None], votes / jnp.maximum(votes.sum(-1, keepdims=True), 1.0),
                           jnp.broadcast_to(prior, votes.shape))
    em = run(_em_spec(config, beta, state.prior_logits), data, init_probs,
             max_iter=config.em_max_iter, tol=config.em_tol, stop=config.em_stop)
    log_q = em.log_q
    params = em.params
    report = {"em_iterations": em.iteration, "em_converged": em.converged}
    learner, prior_logits = state.learner, state.prior_logits
    class_proportions = params.get("class_prior", state.class_prior)
    if config.learner != "none":
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 2 * state.step + 1)
        learner, prior_logits, learner_report = learner_mod.fit(
            config, task, jnp.exp(log_q), annotated, state.learner, state.prior_logits, key
        )
        report.update(learner_report)
        log_lik = dawid_skene.MAP.log_lik(data, em.workers)
        log_q, _ = label_posterior(data, log_lik, prior_logits)
    counts = expected_confusion_counts(data, jnp.exp(log_q))
    if config.calibrate_risk and task.gold is not None:  # honeypots: T and eps fitted on them
        fitted, floor = fit_calibrator_jax(log_q, task.gold)
        temperature = (gold_checked_temperature(log_q, task.gold, fitted, floor,
                                                config.risk_threshold, loss_matrix(config))
                       if gold_check else fitted)
        log_q = calibrate_log_probs_jax(log_q, temperature, floor)
        report.update(temperature=temperature, floor=floor, temperature_fitted=fitted)
    elif config.calibrate_risk:  # issue 14: a posterior that keeps seed 000's promise (risk < C)
        temperature = loo_temperature(data, dawid_skene.MAP.log_lik(data, em.workers), log_q,
                                      counts, beta)
        log_q = jax.nn.log_softmax(log_q / temperature, axis=-1)
        report["temperature"] = temperature
    q = jnp.exp(log_q)
    risk, decision = bayes_risk(q, loss_matrix(config))
    done = risk < config.risk_threshold
    size = done.sum().astype(jnp.int32)
    grew = size > state.best_finished
    if task.gold is not None:  # the calibrated finished set starts empty: the clock of the early
        grew = grew | (jnp.maximum(size, state.best_finished) == 0)  # stop starts at its first item
    new = state._replace(
        log_q=log_q,
        confusion=params["confusion"],
        counts=counts,
        class_prior=class_proportions,
        prior_logits=prior_logits,
        learner=learner,
        risk=risk,
        decision=decision,
        finished=done,
        step=state.step + 1,
        best_finished=jnp.maximum(size, state.best_finished),
        # ``stall`` holds the number of answers at the finished set's last growth (see stop_reason)
        stall=jnp.where(grew, state.n_annotations, state.stall),
    )
    report.update({"finished": size, "eligible": eligible(config, new).sum(),
                   "annotations": state.n_annotations})
    return new, report


def update(config: OnlineConfig, state: State, task: Task):
    """Re-estimate labels, skills and the learner from all annotations so far.
    Returns ``(state, report)``; ``report`` holds scalars (EM iterations, finished-set size, ...)."""
    return _update(config, state, task, GOLD_CHECK)


def stop_reason(config: OnlineConfig, state: State) -> str | None:
    """Why the run should stop now (``None``: keep going).  Sec. 4.5.9: every item finished or
    at the cap; the finished set has not grown past its maximum while the crowd gave
    ``early_stop`` answers per item of the pool (counted in answers, not steps, so the rule does not
    depend on the step size: issue 14); the budget is spent."""
    if int(state.step) == 0:
        return None
    if int(eligible(config, state).sum()) == 0:
        return "every item is finished or has reached the per-item cap"
    since = int(state.n_annotations) - int(state.stall)  # answers since the last growth
    n_items = int(state.item_count.shape[0])
    if config.early_stop is not None and since >= config.early_stop * n_items:
        return (f"the finished set has not grown for {since} answers "
                f"({since / n_items:.2f} per item >= early_stop={config.early_stop})")
    if config.budget is not None and int(state.n_annotations) >= config.budget:
        return f"the budget of {config.budget} annotations is spent"
    return None


def finished(config: OnlineConfig, state: State) -> bool:
    return stop_reason(config, state) is not None


def label_accuracy(state: State, gold) -> float:
    """Accuracy of the current decisions against gold classes (negative gold = unknown)."""
    gold = np.asarray(gold)
    known = gold >= 0
    return float(np.mean(np.asarray(state.decision)[known] == gold[known]))
