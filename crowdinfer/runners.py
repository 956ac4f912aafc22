"""The runners behind :func:`crowdinfer.fit`: each turns ``fit``'s options into a model's parts
(:mod:`crowdinfer.inference.loop`: a worker part and a label-prior part, each with its typed
hyperparameters -- Dirichlet/Beta concentrations, prior logits, gold offset), runs one engine, and
wraps the result in a :class:`~crowdinfer.Posterior`.  The registry itself is in
:mod:`crowdinfer.fit`.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import identifiability
from .annotations import Annotations
from .inference import mcmc
from .inference import svi as svi_engine
from .inference.loop import ClassPart, Spec, WorkerPart, as_state, model_hyper, run
from .models import class_prior as label_prior
from .models import (
    community_bcc,
    dawid_skene,
    glad,
    learned_prior,
    majority_vote,
    one_coin,
    priors,
)
from .ops import expected_confusion_counts, label_posterior, standardise
from .options import LearnedPriorOptions, LoopOptions, PriorOptions, SviOptions
from .posterior import Posterior
from .selection import annotation_folds

__all__ = ["loop_runner", "nuts_runner", "svi_runner", "community_runner", "glad_runner",
           "majority_vote_runner", "label_prior_part", "run_loop", "em_start"]


def label_prior_part(annotations: Annotations, method: str, concentration: float,
                     prior_logits=None) -> ClassPart:
    """The label-prior part of ``annotations`` for ``method`` (checked ``prior_logits``: fixed
    per-item logits; else the class proportions with Dirichlet ``concentration``), gold items
    clamped when the annotations carry gold (``fit(use_gold=True)``)."""
    if prior_logits is not None:
        logits = jnp.asarray(prior_logits, dtype=jnp.float32)
        want = (annotations.n_items, annotations.n_classes)
        if logits.shape != want:
            raise ValueError(f"prior_logits must have shape {want}, got {logits.shape}")
        if not bool(jnp.all(jnp.isfinite(logits))):
            raise ValueError("prior_logits contain NaN or inf")
        prior_logits = logits
    return label_prior.part(method, annotations.n_classes, concentration=concentration,
                            logits=prior_logits, gold=annotations.gold)


def _group(group: type, options: dict):
    """The options of ``group`` taken out of ``options``, as a validated ``group`` object."""
    return group(**{k: options.pop(k) for k in group.names() if k in options})


def run_loop(model_name: str, method: str, spec: Spec, annotations: Annotations,
             loop: LoopOptions = LoopOptions(), *, options: dict,
             classifier: dict | None = None, start=None, data=None) -> Posterior:
    """Run the coordinate-ascent loop (EM or VB) on ``spec`` from ``start`` (default: the soft
    majority vote), with the ``loop`` options, and wrap the result; ``classifier`` describes a
    learned prior for prediction; ``data``: the annotations on the device, if already there."""
    data = annotations.to_device() if data is None else data
    callback = _progress_callback(loop.max_iter, method.upper()) if loop.progress else None
    gold = getattr(spec.classes.hyper, "gold_offset", None)
    state = run(
        spec,
        data,
        label_prior.clamp_probs(majority_vote.soft(data), gold) if start is None else start,
        max_iter=loop.max_iter,
        tol=loop.tol,
        stop=loop.stop,
        callback=callback,
    )
    if callback is not None:
        callback.close()
    return _posterior(model_name, method, spec, annotations, state, options,
                      None if classifier is None else {**classifier,
                                                       "params": state.classes.net})


def _posterior(model_name: str, method: str, spec: Spec, annotations: Annotations, state,
               options: dict, classifier: dict | None) -> Posterior:
    """The :class:`~crowdinfer.Posterior` of a loop ``state`` of ``spec`` (as :func:`run_loop`
    returns it); ``classifier``: the learned prior's description, its ``params`` included."""
    proportions = spec.classes.proportions(state.classes)
    state = jax.device_get(state)
    n_iter = int(state.iteration)
    return Posterior(
        annotations=annotations,
        model=model_name,
        method=method,
        # float64 exp on the host: float32 would flush probabilities below e^-87 to 0 (a high
        # calibration temperature raises them again)
        label_probs=np.exp(np.asarray(state.log_q, dtype=np.float64)),
        confusion=np.asarray(spec.workers.confusion(state.workers, annotations.n_classes)),
        class_prior=None if proportions is None else np.asarray(proportions),
        history=np.asarray(state.history[:n_iter]),
        n_iter=n_iter,
        converged=bool(state.converged),
        params={k: jax.tree.map(np.asarray, v) for k, v in state.params.items()},
        options={**options, "hyper": jax.device_get(model_hyper(spec))},
        classifier=classifier,
    )


def _progress_callback(max_iter: int, name: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=max_iter, desc=name, unit="it", leave=False)

    def callback(iteration, objective):
        bar.n = int(iteration)
        bar.set_postfix(objective=f"{float(objective):.4g}", refresh=False)
        bar.refresh()

    callback.close = bar.close
    return callback


def _confusion_spec(annotations, method: str, workers: WorkerPart, offset: float,
                    one_coin_prior: bool, options: PriorOptions = PriorOptions(), data=None):
    """The parts of a confusion model (``workers``, a part template, given its Dirichlet/Beta
    concentrations) from the prior ``options``, and the options to record.

    Priors are given as pseudo-counts ``beta``; the concentration is ``offset + beta``.  Dawid-Skene
    and one-coin use ``offset = 1`` so that the EM mode adds ``beta`` to the counts; BCC uses
    ``offset = 0``, as Kim & Ghahramani do -- with ``1 + beta``, K uniform pseudo-answers per row
    would swamp sparse workers in VB.  ``data``: the annotations on the device, if the caller
    has them (the pooled prior is worked out there).
    """
    prior, strength, class_prior = options.prior, options.strength, options.class_prior
    counts = priors.resolve(annotations, prior, strength, options.accuracy, data)
    counts = identifiability.tie_unidentified(annotations, counts)  # workers nobody overlaps
    if not np.isfinite(class_prior) or class_prior < 0:
        raise ValueError("class_prior pseudo-count must be >= 0")
    if offset == 0 and (np.any(counts <= 0) or class_prior <= 0):
        raise ValueError(
            f"this model needs strictly positive prior pseudo-counts (prior={prior!r} has zeros); "
            "use e.g. prior='pooled' or 'symmetric'"
        )
    classes = label_prior_part(annotations, method, offset + class_prior, options.prior_logits)
    if one_coin_prior:
        k = annotations.n_classes
        right = np.trace(counts, axis1=-2, axis2=-1) / k  # pseudo right answers per row
        hyper = one_coin.AccuracyHyper(jnp.asarray(offset + right, jnp.float32),
                                       jnp.asarray(offset + counts.sum((-2, -1)) / k - right,
                                                   jnp.float32))
    else:
        hyper = dawid_skene.ConfusionHyper(jnp.asarray(offset + counts, jnp.float32))
    recorded = dict(prior=prior if isinstance(prior, str) else "array", strength=strength,
                    accuracy=options.accuracy, class_prior=class_prior)
    return Spec(workers.with_hyper(hyper), classes), recorded


def _classifier_prior(annotations: Annotations, spec: Spec, data, crowd,
                      options: LearnedPriorOptions, loop: LoopOptions):
    """The learned label prior (models/learned_prior.py) from stage 1 (``crowd``: the converged
    loop state of ``spec``, the model without the classifier, on ``data``): the cross-fitted
    classifiers, their weight, and the guard on held-out annotations, which runs the model without
    the classifier on each half of every item's answers.  Returns the part (in place of
    ``spec.classes``, whose gold offset it keeps) and what prediction on new items needs, the
    fold classifiers, weight and verdict (``params``) included."""
    features, seed, folds = options.features, options.seed, options.folds
    x = annotations.features if features is None else np.asarray(features, np.float32)
    if x is None:
        raise ValueError("label_prior='classifier' needs item features: attach them to the "
                         "annotations (items=..., features=...) or pass features=")
    if x.shape[0] != annotations.n_items or x.ndim != 2:
        raise ValueError(f"features must have shape ({annotations.n_items}, d), got {x.shape}")
    z, mean, std = standardise(x)
    hidden = tuple(int(h) for h in options.hidden)
    n, k = annotations.n_items, annotations.n_classes
    gold = getattr(spec.classes.hyper, "gold_offset", None)
    target, log_lik, base = learned_prior.crowd_evidence(spec, data, crowd)
    train_mask = jnp.asarray(annotations.annotations_per_item() > 0, jnp.float32)
    fold = jnp.asarray(np.random.default_rng(seed).permutation(n) % max(int(folds), 1), jnp.int32)
    decays = (learned_prior.DECAYS if options.weight_decay is None
              else (float(options.weight_decay),))
    train = learned_prior.trainer(k, hidden, int(options.classifier_steps),
                                  float(options.learning_rate), int(seed), int(folds))
    params, log_probs, decay, _ = train(jnp.asarray(z), target, train_mask, fold,
                                        jnp.asarray(decays, jnp.float32))
    iterations = learned_prior.LBFGS_ROUNDS * int(options.classifier_steps)
    weight = learned_prior.fit_weight(log_probs, log_lik, learned_prior.evidence_mask(
        train_mask, gold), {"scale": jnp.zeros(()), "bias": base}, max_iter=iterations)
    # the guard: each half of every item's answers predicted from the other half, with and
    # without the classifier's prior (its weight refitted on the other half's evidence)
    half = annotation_folds(annotations, 2, seed)  # as the default's holdout splits them
    pad = data.weight.shape[0] - annotations.n_annotations
    weights = annotations.weights
    rows = data.rows_only()
    gain = jnp.zeros(n)
    counted = np.zeros(n, bool)
    halves = []  # per half: crowd log likelihoods, log theta of every answer, held-out weights
    flip_gain, flip_counted = jnp.zeros(n), np.zeros(n, bool)  # the items whose label it changes
    for h in (0, 1):
        fitted = np.concatenate([weights * (half != h), np.zeros(pad, np.float32)])
        held = np.concatenate([weights * (half == h), np.zeros(pad, np.float32)])
        part = dataclasses.replace(rows, weight=jnp.asarray(fitted))
        state = run(spec, part, label_prior.clamp_probs(majority_vote.soft(part), gold),
                    max_iter=loop.max_iter, tol=loop.tol, stop=loop.stop)
        _, lik_h, base_h = learned_prior.crowd_evidence(spec, part, state)
        seen = jnp.asarray(np.bincount(annotations.item[half != h], minlength=n) > 0, jnp.float32)
        weight_h = learned_prior.fit_weight(log_probs, lik_h, learned_prior.evidence_mask(
            seen, gold), {"scale": jnp.zeros(()), "bias": base_h}, max_iter=iterations)
        item_held = learned_prior.evidence_mask(jnp.asarray(
            np.bincount(annotations.item[half == h], minlength=n) > 0, jnp.float32), gold)
        confusion = spec.workers.confusion(state.workers, k)
        gain_h = item_held * learned_prior.held_out_gain(
            log_probs, weight_h, base_h, lik_h, confusion, rows.worker, rows.label, rows.item,
            jnp.asarray(held))
        gain = gain + gain_h
        counted |= np.asarray(item_held) > 0
        flip = item_held * learned_prior.flipped(log_probs, weight_h, base_h, lik_h)
        flip_gain = flip_gain + flip * gain_h
        flip_counted |= np.asarray(flip) > 0
        log_theta = jnp.log(jnp.maximum(confusion[rows.worker, :, rows.label], 1e-30))
        halves.append((jnp.where(seen[:, None] > 0, lik_h, 0.0), log_theta,
                       jnp.asarray(held) * item_held[rows.item], weight_h["bias"]))
    # kept only if the held-out answers gain, overall and on the items whose label it changes
    verdict = learned_prior.guard_test(np.asarray(gain), counted)
    flips = learned_prior.guard_test(np.asarray(flip_gain), flip_counted)
    evidence_scale = weight["scale"]
    kept = verdict["kept"] and flips["kept"]
    if kept:
        # a chosen by the held-out answers of both halves; b by the full data's evidence at that a
        lik_hs, theta_hs, held_hs, bias_hs = (jnp.stack(v) for v in zip(*halves))
        scale = learned_prior.held_out_weight(
            log_probs, lik_hs, theta_hs, rows.item, held_hs,
            {"scale": weight["scale"], "bias": bias_hs}, max_iter=iterations)
        weight = learned_prior.fit_bias(log_probs, log_lik, learned_prior.evidence_mask(
            train_mask, gold), scale, weight["bias"], max_iter=iterations)
    kept = kept and float(weight["scale"]) > 0  # a = 0: nothing to keep
    if not kept:  # recorded as a = 0 (the runner returns stage 1 itself)
        weight = {"scale": jnp.zeros(()), "bias": base}
    net = {"folds": params, "weight": weight, "decay": decay,
           "guard": {"gain": jnp.float32(verdict["gain"]), "se": jnp.float32(verdict["se"]),
                     "flip_gain": jnp.float32(flips["gain"]), "flip_se": jnp.float32(flips["se"]),
                     "flipped": jnp.int32(flip_counted.sum()),
                     "evidence_scale": jnp.float32(evidence_scale), "kept": jnp.asarray(kept)}}
    hyper = learned_prior.LearnedHyper(
        log_probs=log_probs, net=net, gold_offset=gold,
        class_concentration=getattr(spec.classes.hyper, "class_concentration", None))
    return (learned_prior.classifier_part().with_hyper(hyper),
            {"hidden": hidden, "mean": mean, "std": std, "params": net})


def loop_runner(model_name: str, method: str, workers: WorkerPart, offset: float,
                 one_coin_prior: bool = False):
    """A runner for EM or VB on a confusion model (``workers``: the part template, e.g.
    ``dawid_skene.MAP``); ``label_prior="classifier"`` learns the label prior from item features
    (see :mod:`crowdinfer.models.learned_prior`)."""

    def runner(annotations, **options) -> Posterior:
        options = dict(options)
        prior, learned = _group(PriorOptions, options), _group(LearnedPriorOptions, options)
        loop = LoopOptions(**options)  # anything else is a loop option (or an unknown name)
        identifiability.prepare(annotations)  # its nested fit before this one's data
        data = annotations.to_device()  # once: the pooled prior and the loop both use it
        spec, recorded = _confusion_spec(annotations, method, workers, offset, one_coin_prior,
                                         prior, data)
        if learned.label_prior != "classifier":
            return run_loop(model_name, method, spec, annotations, loop, options=recorded,
                            data=data)
        # two stages and a guard (models/learned_prior.py): the model without the classifier to
        # convergence (exactly fit(annotations, model_name)), the classifier prior learned from
        # it and checked on held-out answers
        first = label_prior.clamp_probs(majority_vote.soft(data),
                                        getattr(spec.classes.hyper, "gold_offset", None))
        crowd = run(spec, data, first, max_iter=loop.max_iter, tol=loop.tol, stop=loop.stop)
        classes, classifier = _classifier_prior(annotations, spec, data, crowd, learned, loop)
        recorded.update(label_prior="classifier", hidden=classifier["hidden"],
                        classifier_steps=learned.classifier_steps,
                        learning_rate=learned.learning_rate, weight_decay=learned.weight_decay,
                        seed=learned.seed, folds=learned.folds)
        if not bool(classifier["params"]["guard"]["kept"]):
            # the guard switched the classifier off: the model without it, stage 1 itself
            return _posterior(model_name, method, spec, annotations, crowd, recorded, classifier)
        # stage 2 is one iteration from stage 1's labels: stage 1's worker parameters, the
        # learned prior's E-step
        post = run_loop(model_name, method, spec._replace(classes=classes), annotations,
                        dataclasses.replace(loop, max_iter=1), options=recorded,
                        classifier=classifier, start=jnp.exp(crowd.log_q), data=data)
        post.n_iter, post.converged = int(crowd.iteration) + 1, bool(crowd.converged)
        post.options["crowd_iterations"] = int(crowd.iteration)  # n_iter without stage 2's one
        return post

    return runner


def em_start(model_name: str, module, one_coin_prior: bool, annotations: Annotations,
             prior: PriorOptions) -> Posterior:
    """The EM estimate that starts NUTS and SVI (the model's MAP part, ``offset = 1``)."""
    spec, _ = _confusion_spec(annotations, "em", module.MAP, 1.0, one_coin_prior, prior)
    return run_loop(model_name, "em", spec, annotations, options={})


def _spec_params(post: Posterior) -> dict:
    return {k: jnp.asarray(v) for k, v in post.params.items()}


# Models whose likelihood is unchanged by permuting the latent classes, and the axis of each sample
# site that indexes the latent class: their NUTS draws are relabelled (mcmc.relabel).  One-coin has
# no such symmetry (its accuracy is tied to the observed label), so its draws are left alone.
LATENT_CLASS_AXES = {dawid_skene: {"confusion": -2, "class_prior": -1}}


def nuts_runner(model_name: str, module, offset: float, one_coin_prior: bool = False):
    """NUTS on the label-marginalised NumPyro model, started from the EM estimate."""

    def runner(annotations, *, num_warmup: int = 500, num_samples: int = 500, num_chains: int = 4,
               seed: int = 0, progress: bool = False, **prior_options) -> Posterior:
        prior = PriorOptions(**prior_options)
        spec, recorded = _confusion_spec(annotations, "em", module.MAP, offset, one_coin_prior,
                                         prior)
        hyper = model_hyper(spec)
        start = em_start(model_name, module, one_coin_prior, annotations, prior)
        data = annotations.to_device()
        draws = mcmc.nuts(module.model, data, hyper, _spec_params(start),
                          key=jax.random.key(seed), num_warmup=num_warmup,
                          num_samples=num_samples, num_chains=num_chains, progress=progress)
        workers, classes = spec
        probs = mcmc.draw_label_probs(
            lambda d, draw: workers.log_lik(d, as_state(workers, draw)),
            lambda d, draw, _: classes.log_prior(d, as_state(classes, draw), classes.hyper),
            data, hyper, draws)
        switched = 0.0
        if module in LATENT_CLASS_AXES:  # undo label switching: align every draw to EM
            draws, probs, perms = mcmc.relabel(draws, probs, start.label_probs,
                                               LATENT_CLASS_AXES[module])
            switched = float(np.mean(np.any(perms != np.arange(perms.shape[-1]), axis=-1)))
        diagnostics = mcmc.convergence(draws)
        confusion = jax.vmap(jax.vmap(lambda d: workers.confusion(
            as_state(workers, d), annotations.n_classes)))(
            {k: jnp.asarray(v) for k, v in draws.items()})
        recorded.update(num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                        seed=seed, hyper=jax.device_get(hyper), relabelled_draws=switched)
        return Posterior(
            annotations=annotations,
            model=model_name,
            method="nuts",
            label_probs=np.asarray(probs.mean((0, 1)), dtype=np.float64),
            confusion=np.asarray(confusion.mean((0, 1))),
            class_prior=draws["class_prior"].mean((0, 1)) if "class_prior" in draws else None,
            history=np.zeros(0),
            n_iter=num_warmup + num_samples,
            converged=all(d["max_r_hat"] < 1.01 for d in diagnostics.values()),
            params={k: v.mean((0, 1)) for k, v in draws.items()},
            options=recorded,
            samples={**draws, "confusion": np.asarray(confusion)},
            diagnostics=diagnostics,
        )

    return runner


def _svi_run(model_name: str, model_fn, spec: Spec, hyper: dict, init: dict,
             annotations: Annotations, options: SviOptions, *, recorded: dict) -> Posterior:
    """SVI on a NumPyro model (``hyper``: its dict) with the SVI ``options``, then the E-step of
    ``spec``'s parts with the fitted parameters."""
    params, losses, chunks = svi_engine.svi(model_fn, annotations, hyper, init,
                                            **dataclasses.asdict(options))
    if chunks is None:
        data = annotations.to_device()
        log_q, _ = label_posterior(data, *svi_engine.e_step_terms(spec, data, params))
        label_probs = np.exp(np.asarray(log_q, dtype=np.float64))
    else:
        label_probs = svi_engine.chunked_label_probs(chunks, spec, params).astype(np.float64)
    recorded.update(**dataclasses.asdict(options), hyper=jax.device_get(hyper))
    return Posterior(
        annotations=annotations,
        model=model_name,
        method="svi",
        label_probs=label_probs,
        confusion=np.asarray(spec.workers.confusion(as_state(spec.workers, params),
                                                    annotations.n_classes)),
        class_prior=None if "prior_logits" in hyper else np.asarray(params["class_prior"]),
        history=-losses,
        n_iter=int(options.num_steps),
        converged=bool(np.isfinite(losses[-1])),
        params=jax.tree.map(np.asarray, params),
        options=recorded,
    )


def svi_runner(model_name: str, module, offset: float, one_coin_prior: bool = False):
    """SVI for a confusion model, started from its EM estimate -- or, with minibatches (data that
    is never processed whole), from the prior mean, whose dominant diagonal anchors the labels."""

    def runner(annotations, **options) -> Posterior:
        options = dict(options)
        svi = _group(SviOptions, options)
        prior = PriorOptions(**options)
        spec, recorded = _confusion_spec(annotations, "em", module.MAP, offset, one_coin_prior,
                                         prior)
        hyper = model_hyper(spec)
        if svi.batch_items is not None and "gold_offset" in hyper:
            raise ValueError("minibatch SVI (batch_items=) cannot clamp gold labels: pass "
                             "use_gold=False, or fit without batch_items")
        if svi.batch_items is None:
            init = _spec_params(em_start(model_name, module, one_coin_prior, annotations, prior))
        else:
            init = _prior_mean(annotations, hyper)
        return _svi_run(model_name, module.model, spec, hyper, init, annotations, svi,
                        recorded=recorded)

    return runner


def _prior_mean(annotations: Annotations, hyper: dict) -> dict:
    """Parameters at the prior mean (confusion models), for starts that must not touch all data."""
    k, m = annotations.n_classes, annotations.n_workers
    init = {"class_prior": jnp.full((k,), 1.0 / k)}
    if "confusion" in hyper:
        conc = jnp.broadcast_to(hyper["confusion"], (m, k, k))
        init["confusion"] = conc / conc.sum(-1, keepdims=True)
    else:
        init["accuracy"] = jnp.broadcast_to(hyper["correct"] / (hyper["correct"] + hyper["wrong"]), (m,))
    return init


def community_runner(annotations, *, method: str, communities: int = 3, deviation: float = 2.0,
                      prior=priors.DEFAULT_PRIOR, strength=None, accuracy=priors.DEFAULT_ACCURACY,
                      class_prior: float = 1.0, prior_logits=None, **engine_options) -> Posterior:
    """Community BCC by VB (default) or SVI, started from Dawid-Skene: the workers' EM
    confusions are clustered (weighted k-means) into the initial communities."""
    if communities < 1 or deviation <= 0:
        raise ValueError("communities must be >= 1 and deviation > 0")
    base = priors.resolve(annotations, prior, strength, accuracy)
    if base.ndim == 3:
        raise ValueError("community BCC takes a prior shared by all workers, shape (K, K)")
    classes = label_prior_part(annotations, method if method == "vb" else "em", 1.0 + class_prior,
                               prior_logits)
    community_prior = jnp.asarray(np.broadcast_to(1.0 + base, (communities,) + base.shape),
                                  jnp.float32)
    prior_options = PriorOptions(prior, strength, accuracy, class_prior, prior_logits)
    start = run_loop("dawid_skene", "em", _confusion_spec(
        annotations, "em", dawid_skene.MAP, 1.0, False, prior_options)[0], annotations, options={})
    centres, sizes = community_bcc.kmeans(start.confusion, annotations.annotations_per_worker(),
                                          communities)
    recorded = dict(communities=communities, deviation=deviation, prior=prior, strength=strength,
                    class_prior=class_prior)
    if method == "vb":
        spec = Spec(community_bcc.vb_part(community_prior, deviation, centres), classes)
        return run_loop("community_bcc", "vb", spec, annotations, LoopOptions(**engine_options),
                        options=recorded)
    init = {"confusion": jnp.asarray(start.confusion), "community_confusion": jnp.asarray(centres),
            "community_sizes": jnp.asarray(sizes)}
    if "class_prior" in start.params:
        init["class_prior"] = jnp.asarray(start.params["class_prior"])
    engine_options.setdefault("guide", "normal")  # the joint MAP of a hierarchy over-shrinks
    spec = Spec(dawid_skene.MAP, classes)
    hyper = {**model_hyper(spec), "community_prior": community_prior,
             "deviation": jnp.float32(deviation)}
    post = _svi_run("community_bcc", community_bcc.model, spec, hyper, init, annotations,
                    SviOptions(**engine_options), recorded=recorded)
    post.params["memberships"] = np.asarray(community_bcc.memberships(post.params, deviation))
    return post


def glad_runner(annotations, *, alpha_mean: float = 1.0, alpha_scale: float = 1.0,
                 beta_mean: float = 1.0, beta_scale: float = 1.0, class_prior=None,
                 prior_logits=None, m_steps: int = 25, learning_rate: float = 0.05,
                 **options) -> Posterior:
    """GLAD by generalised EM; the priors are the paper's (Normal(1, 1) on ability and log
    easiness).  As in the paper and crowd-kit, the label prior is uniform and fixed unless
    ``class_prior`` (a pseudo-count: learn the proportions) or ``prior_logits`` is given: with
    per-item easiness free, learning the proportions lets the two trade off (bluebird 0.72 -> 0.69)."""
    if min(alpha_scale, beta_scale) <= 0:
        raise ValueError("alpha_scale and beta_scale must be > 0")
    if class_prior is None and prior_logits is None:
        prior_logits = np.zeros((annotations.n_items, annotations.n_classes), np.float32)
    classes = label_prior_part(annotations, "em", 1.0 + (class_prior or 0.0), prior_logits)
    workers = glad.map_part(glad.GladHyper(alpha_mean, alpha_scale, beta_mean, beta_scale),
                            int(m_steps), float(learning_rate))
    recorded = dict(alpha_mean=alpha_mean, alpha_scale=alpha_scale, beta_mean=beta_mean,
                    beta_scale=beta_scale, class_prior=class_prior)
    return run_loop("glad", "em", Spec(workers, classes), annotations, LoopOptions(**options),
                    options=recorded)


def majority_vote_runner(annotations, *, ties: str = "split") -> Posterior:
    """Soft majority vote; the confusions are each worker's answers against it (plus 0.01
    smoothing), so ``worker_skills`` works for the baseline too."""
    if ties not in ("split", "first"):
        raise ValueError("ties must be 'split' (soft vote) or 'first'")
    data = annotations.to_device()
    q = majority_vote.soft(data)
    if ties == "first":
        q = jax.nn.one_hot(majority_vote.hard(data, "first"), annotations.n_classes)
    q = label_prior.clamp_probs(q, label_prior.gold_array(annotations.gold, annotations.n_classes))
    counts = priors.dirichlet_map(expected_confusion_counts(data, q), 0.01)
    q = np.asarray(q, dtype=np.float64)
    return Posterior(
        annotations=annotations,
        model="majority_vote",
        method="vote",
        label_probs=q,
        confusion=np.asarray(counts),
        class_prior=q.mean(0),
        history=np.zeros(0),
        n_iter=0,
        converged=True,
        options={"ties": ties},
    )


#: The built-in models' engines (default first), named by :data:`crowdinfer.options.REGISTRY`.
RUNNERS = {
    "dawid_skene": {"em": loop_runner("dawid_skene", "em", dawid_skene.MAP, 1.0),
                    "nuts": nuts_runner("dawid_skene", dawid_skene, 1.0),
                    "svi": svi_runner("dawid_skene", dawid_skene, 1.0)},
    "bcc": {"vb": loop_runner("bcc", "vb", dawid_skene.VB, 0.0),
            "nuts": nuts_runner("bcc", dawid_skene, 0.0),
            "svi": svi_runner("bcc", dawid_skene, 0.0)},
    "one_coin": {"em": loop_runner("one_coin", "em", one_coin.MAP, 1.0, True),
                 "nuts": nuts_runner("one_coin", one_coin, 1.0, True),
                 "svi": svi_runner("one_coin", one_coin, 1.0, True)},
    "community_bcc": {"vb": partial(community_runner, method="vb"),
                      "svi": partial(community_runner, method="svi")},
    "glad": {"em": glad_runner},
    "majority_vote": {"vote": majority_vote_runner},
}
