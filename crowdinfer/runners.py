"""The runners behind :func:`crowdinfer.fit`: each turns ``fit``'s options into a model's
``hyper`` (Dirichlet/Beta concentrations, label-prior settings), runs one engine, and wraps the
result in a :class:`~crowdinfer.Posterior`.  The registry itself is in :mod:`crowdinfer.fit`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import identifiability
from .annotations import Annotations
from .inference import mcmc
from .inference import svi as svi_engine
from .inference.loop import ClassPart, Spec, WorkerPart, run
from .models import class_prior as label_prior
from .models import (
    community_bcc,
    dawid_skene,
    glad,
    learned_prior,
    majority_vote,
    priors,
)
from .ops import expected_confusion_counts, label_posterior, standardise
from .posterior import Posterior

__all__ = ["loop_runner", "nuts_runner", "svi_runner", "community_runner", "glad_runner",
           "majority_vote_runner"]


def _label_prior_hyper(annotations: Annotations, concentration: float, prior_logits) -> dict:
    """The label-prior entries of ``hyper``: the class Dirichlet concentration, or per-item logits."""
    hyper = {"class_concentration": jnp.full((annotations.n_classes,), concentration, jnp.float32)}
    if prior_logits is not None:
        logits = jnp.asarray(prior_logits, dtype=jnp.float32)
        want = (annotations.n_items, annotations.n_classes)
        if logits.shape != want:
            raise ValueError(f"prior_logits must have shape {want}, got {logits.shape}")
        if not bool(jnp.all(jnp.isfinite(logits))):
            raise ValueError("prior_logits contain NaN or inf")
        hyper["prior_logits"] = logits
    if annotations.gold is not None and (annotations.gold >= 0).any():  # clamped (fit's use_gold)
        hyper["gold_offset"] = jnp.asarray(label_prior.gold_offset(annotations.gold, annotations.n_classes))
    return hyper


CLASS_PARTS = {"em": label_prior.MAP, "vb": label_prior.VB}


def _run_loop(
    model_name: str,
    method: str,
    workers: WorkerPart,
    hyper: dict,
    annotations: Annotations,
    *,
    max_iter: int = 100,
    tol: float = 1e-5,
    stop: str = "soft",
    progress: bool = False,
    options: dict,
    classes: ClassPart | None = None,
    classifier: dict | None = None,
) -> Posterior:
    """Run the coordinate-ascent loop (EM or VB) and wrap the result.

    ``classes`` is the label-prior part (default: fixed logits if ``hyper`` has them, else the
    class proportions for ``method``); ``classifier`` describes a learned prior for prediction.
    """
    data = annotations.to_device()
    if classes is None:
        classes = label_prior.FIXED if "prior_logits" in hyper else CLASS_PARTS[method]
    spec = Spec(workers, label_prior.clamp(classes) if "gold_offset" in hyper else classes)
    callback = _progress_callback(max_iter, method.upper()) if progress else None
    state = run(
        spec,
        data,
        hyper,
        label_prior.clamp_probs(majority_vote.soft(data), hyper),
        max_iter=int(max_iter),
        tol=float(tol),
        stop=stop,
        callback=callback,
    )
    if callback is not None:
        callback.close()
    proportions = classes.proportions(state.params)
    state = jax.device_get(state)
    n_iter = int(state.iteration)
    return Posterior(
        annotations=annotations,
        model=model_name,
        method=method,
        label_probs=np.exp(np.asarray(state.log_q, dtype=np.float64)),
        confusion=np.asarray(workers.confusion(state.params, annotations.n_classes)),
        class_prior=None if proportions is None else np.asarray(proportions),
        history=np.asarray(state.history[:n_iter]),
        n_iter=n_iter,
        converged=bool(state.converged),
        params={k: jax.tree.map(np.asarray, v) for k, v in state.params.items()
                if not k.startswith("_")},
        options={**options, "hyper": jax.device_get(hyper)},
        classifier=None if classifier is None else {**classifier, "params": state.params["net"]},
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


def _confusion_hyper(annotations, offset: float, one_coin_prior: bool, *, prior=priors.DEFAULT_PRIOR,
                     strength=None, accuracy=priors.DEFAULT_ACCURACY, class_prior=1.0, prior_logits=None):
    """``hyper`` (Dirichlet/Beta concentrations) of a confusion model from the prior options.

    Priors are given as pseudo-counts ``beta``; the concentration is ``offset + beta``.  Dawid-Skene
    and one-coin use ``offset = 1`` so that the EM mode adds ``beta`` to the counts; BCC uses
    ``offset = 0``, as Kim & Ghahramani do -- with ``1 + beta``, K uniform pseudo-answers per row
    would swamp sparse workers in VB.
    """
    counts = priors.resolve(annotations, prior, strength, accuracy)
    counts = identifiability.tie_unidentified(annotations, counts)  # workers nobody overlaps
    if not np.isfinite(class_prior) or class_prior < 0:
        raise ValueError("class_prior pseudo-count must be >= 0")
    if offset == 0 and (np.any(counts <= 0) or class_prior <= 0):
        raise ValueError(
            f"this model needs strictly positive prior pseudo-counts (prior={prior!r} has zeros); "
            "use e.g. prior='pooled' or 'symmetric'"
        )
    hyper = _label_prior_hyper(annotations, offset + class_prior, prior_logits)
    if one_coin_prior:
        k = annotations.n_classes
        right = np.trace(counts, axis1=-2, axis2=-1) / k  # pseudo right answers per row
        hyper["correct"] = jnp.asarray(offset + right, jnp.float32)
        hyper["wrong"] = jnp.asarray(offset + counts.sum((-2, -1)) / k - right, jnp.float32)
    else:
        hyper["confusion"] = jnp.asarray(offset + counts, jnp.float32)
    recorded = dict(prior=prior if isinstance(prior, str) else "array", strength=strength,
                    accuracy=accuracy, class_prior=class_prior)
    return hyper, recorded


_PRIOR_OPTIONS = ("prior", "strength", "accuracy", "class_prior", "prior_logits")


def _split_options(options: dict) -> tuple[dict, dict]:
    prior = {k: options.pop(k) for k in _PRIOR_OPTIONS if k in options}
    return prior, options


def _classifier_prior(annotations: Annotations, hyper: dict, features=None, hidden=(128,),
                      classifier_steps: int = 20, learning_rate: float = 1e-3,
                      weight_decay: float = 1e-4, seed: int = 0, folds: int = 5):
    """Set up the learned label prior: standardised features in ``hyper``, the class part, and
    what prediction on new items needs."""
    x = annotations.features if features is None else np.asarray(features, np.float32)
    if x is None:
        raise ValueError("label_prior='classifier' needs item features: attach them to the "
                         "annotations (items=..., features=...) or pass features=")
    if x.shape[0] != annotations.n_items or x.ndim != 2:
        raise ValueError(f"features must have shape ({annotations.n_items}, d), got {x.shape}")
    z, mean, std = standardise(x)
    hyper["features"] = jnp.asarray(z)
    hyper["train_mask"] = jnp.asarray(annotations.annotations_per_item() > 0, jnp.float32)
    hyper["fold"] = jnp.asarray(
        np.random.default_rng(seed).permutation(annotations.n_items) % max(int(folds), 1), jnp.int32)
    hidden = tuple(int(h) for h in hidden)
    part = learned_prior.classifier_part(annotations.n_classes, hidden, int(classifier_steps),
                                         float(learning_rate), float(weight_decay), int(seed),
                                         int(folds))
    return part, {"hidden": hidden, "mean": mean, "std": std}


def loop_runner(model_name: str, method: str, workers: WorkerPart, offset: float,
                 one_coin_prior: bool = False):
    """A runner for EM or VB on a confusion model; ``label_prior="classifier"`` learns the label
    prior from item features (see :mod:`crowdinfer.models.learned_prior`)."""

    def runner(annotations, *, label_prior: str = "proportions", features=None,
               hidden=(128,), classifier_steps: int = 20, learning_rate: float = 1e-3,
               weight_decay: float = 1e-4, seed: int = 0, folds: int = 5,
               **options) -> Posterior:
        prior_options, options = _split_options(options)
        hyper, recorded = _confusion_hyper(annotations, offset, one_coin_prior, **prior_options)
        classes = classifier = None
        if label_prior == "classifier":
            classes, classifier = _classifier_prior(
                annotations, hyper, features, hidden, classifier_steps, learning_rate,
                weight_decay, seed, folds)
            recorded.update(label_prior="classifier", hidden=classifier["hidden"],
                            classifier_steps=classifier_steps, learning_rate=learning_rate,
                            weight_decay=weight_decay, seed=seed, folds=folds)
        elif label_prior != "proportions":
            raise ValueError(f"label_prior must be 'proportions' or 'classifier', got {label_prior!r}")
        return _run_loop(model_name, method, workers, hyper, annotations, options=recorded,
                         classes=classes, classifier=classifier, **options)

    return runner


# Models whose likelihood is unchanged by permuting the latent classes, and the axis of each sample
# site that indexes the latent class: their NUTS draws are relabelled (mcmc.relabel).  One-coin has
# no such symmetry (its accuracy is tied to the observed label), so its draws are left alone.
LATENT_CLASS_AXES = {dawid_skene: {"confusion": -2, "class_prior": -1}}


def nuts_runner(model_name: str, module, offset: float, one_coin_prior: bool = False):
    """NUTS on the label-marginalised NumPyro model, started from the EM estimate."""

    def runner(annotations, *, num_warmup: int = 500, num_samples: int = 500, num_chains: int = 4,
               seed: int = 0, progress: bool = False, **prior_options) -> Posterior:
        hyper, recorded = _confusion_hyper(annotations, offset, one_coin_prior, **prior_options)
        em_hyper, _ = _confusion_hyper(annotations, 1.0, one_coin_prior, **prior_options)
        start = _run_loop(model_name, "em", module.MAP, em_hyper, annotations, options={})
        init = {k: jnp.asarray(v) for k, v in start.params.items()}
        data = annotations.to_device()
        draws = mcmc.nuts(module.model, data, hyper, init, key=jax.random.key(seed),
                          num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                          progress=progress)
        classes = label_prior.FIXED if "prior_logits" in hyper else label_prior.MAP
        probs = mcmc.draw_label_probs(module.MAP.log_lik, label_prior.clamp(classes).log_prior,
                                      data, hyper, draws)
        switched = 0.0
        if module in LATENT_CLASS_AXES:  # undo label switching: align every draw to EM
            draws, probs, perms = mcmc.relabel(draws, probs, start.label_probs,
                                               LATENT_CLASS_AXES[module])
            switched = float(np.mean(np.any(perms != np.arange(perms.shape[-1]), axis=-1)))
        diagnostics = mcmc.convergence(draws)
        confusion = jax.vmap(jax.vmap(lambda d: module.MAP.confusion(d, annotations.n_classes)))(
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


def _svi_run(model_name: str, model_fn, workers: WorkerPart, hyper: dict, init: dict,
             annotations: Annotations, *, guide: str = "map", num_steps: int = 2000,
             learning_rate: float = 0.05, batch_items: int | None = None, seed: int = 0,
             recorded: dict) -> Posterior:
    """SVI on a NumPyro model, then the shared E-step with the fitted parameters."""
    params, losses, chunks = svi_engine.svi(model_fn, annotations, hyper, init, guide=guide,
                                            num_steps=num_steps, learning_rate=learning_rate,
                                            batch_items=batch_items, seed=seed)
    classes = label_prior.clamp(label_prior.FIXED if "prior_logits" in hyper else label_prior.MAP)
    if chunks is None:
        data = annotations.to_device()
        log_q, _ = label_posterior(data, workers.log_lik(data, params),
                                   classes.log_prior(data, params, hyper))
        label_probs = np.exp(np.asarray(log_q, dtype=np.float64))
    else:
        label_probs = svi_engine.chunked_label_probs(chunks, workers.log_lik, classes.log_prior,
                                                     params, hyper).astype(np.float64)
    recorded.update(guide=guide, num_steps=num_steps, learning_rate=learning_rate,
                    batch_items=batch_items, seed=seed, hyper=jax.device_get(hyper))
    return Posterior(
        annotations=annotations,
        model=model_name,
        method="svi",
        label_probs=label_probs,
        confusion=np.asarray(workers.confusion(params, annotations.n_classes)),
        class_prior=None if "prior_logits" in hyper else np.asarray(params["class_prior"]),
        history=-losses,
        n_iter=int(num_steps),
        converged=bool(np.isfinite(losses[-1])),
        params=jax.tree.map(np.asarray, params),
        options=recorded,
    )


_SVI_OPTIONS = ("guide", "num_steps", "learning_rate", "batch_items", "seed")


def svi_runner(model_name: str, module, offset: float, one_coin_prior: bool = False):
    """SVI for a confusion model, started from its EM estimate -- or, with minibatches (data that
    is never processed whole), from the prior mean, whose dominant diagonal anchors the labels."""

    def runner(annotations, **options) -> Posterior:
        svi_options = {k: options.pop(k) for k in _SVI_OPTIONS if k in options}
        hyper, recorded = _confusion_hyper(annotations, offset, one_coin_prior, **options)
        if svi_options.get("batch_items") is not None and "gold_offset" in hyper:
            raise ValueError("minibatch SVI (batch_items=) cannot clamp gold labels: pass "
                             "use_gold=False, or fit without batch_items")
        if svi_options.get("batch_items") is None:
            em_hyper, _ = _confusion_hyper(annotations, 1.0, one_coin_prior, **options)
            start = _run_loop(model_name, "em", module.MAP, em_hyper, annotations, options={})
            init = {k: jnp.asarray(v) for k, v in start.params.items()}
        else:
            init = _prior_mean(annotations, hyper)
        return _svi_run(model_name, module.model, module.MAP, hyper, init, annotations,
                        recorded=recorded, **svi_options)

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
    hyper = _label_prior_hyper(annotations, 1.0 + class_prior, prior_logits)
    hyper["community_prior"] = jnp.asarray(
        np.broadcast_to(1.0 + base, (communities,) + base.shape), jnp.float32)
    hyper["deviation"] = jnp.float32(deviation)
    start = loop_runner("dawid_skene", "em", dawid_skene.MAP, 1.0)(
        annotations, prior=prior, strength=strength, accuracy=accuracy, class_prior=class_prior,
        prior_logits=prior_logits)
    centres, sizes = community_bcc.kmeans(start.confusion, annotations.annotations_per_worker(),
                                          communities)
    recorded = dict(communities=communities, deviation=deviation, prior=prior, strength=strength,
                    class_prior=class_prior)
    if method == "vb":
        hyper["community_init"] = jnp.asarray(centres, jnp.float32)
        return _run_loop("community_bcc", "vb", community_bcc.VB, hyper, annotations,
                         options=recorded, **engine_options)
    init = {"confusion": jnp.asarray(start.confusion), "community_confusion": jnp.asarray(centres),
            "community_sizes": jnp.asarray(sizes)}
    if "class_prior" in start.params:
        init["class_prior"] = jnp.asarray(start.params["class_prior"])
    engine_options.setdefault("guide", "normal")  # the joint MAP of a hierarchy over-shrinks
    post = _svi_run("community_bcc", community_bcc.model, dawid_skene.MAP, hyper, init,
                    annotations, recorded=recorded, **engine_options)
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
    hyper = _label_prior_hyper(annotations, 1.0 + (class_prior or 0.0), prior_logits)
    hyper.update(alpha_mean=jnp.float32(alpha_mean), alpha_scale=jnp.float32(alpha_scale),
                 beta_mean=jnp.float32(beta_mean), beta_scale=jnp.float32(beta_scale))
    recorded = dict(alpha_mean=alpha_mean, alpha_scale=alpha_scale, beta_mean=beta_mean,
                    beta_scale=beta_scale, class_prior=class_prior)
    workers = glad.map_part(int(m_steps), float(learning_rate))
    return _run_loop("glad", "em", workers, hyper, annotations, options=recorded, **options)


def majority_vote_runner(annotations, *, ties: str = "split") -> Posterior:
    """Soft majority vote; the confusions are each worker's answers against it (plus 0.01
    smoothing), so ``worker_skills`` works for the baseline too."""
    if ties not in ("split", "first"):
        raise ValueError("ties must be 'split' (soft vote) or 'first'")
    data = annotations.to_device()
    q = majority_vote.soft(data)
    if ties == "first":
        q = jax.nn.one_hot(majority_vote.hard(data, "first"), annotations.n_classes)
    q = label_prior.clamp_probs(q, _label_prior_hyper(annotations, 1.0, None))  # gold items
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
