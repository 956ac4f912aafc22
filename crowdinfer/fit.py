"""``crowdinfer.fit``: one entry point over every model and engine, and the model registry."""
from __future__ import annotations

import time
from functools import partial
from typing import Callable, NamedTuple

from . import runners
from .annotations import Annotations
from .models import dawid_skene, one_coin
from .models.priors import resolve as resolve_prior
from .posterior import Posterior

__all__ = ["fit", "MODELS", "resolve_prior"]


class ModelEntry(NamedTuple):
    methods: dict[str, Callable]  # method name -> runner(annotations, **options) -> Posterior
    default_method: str


MODELS: dict[str, ModelEntry] = {
    "dawid_skene": ModelEntry(
        {
            "em": runners.loop_runner("dawid_skene", "em", dawid_skene.MAP, 1.0),
            "nuts": runners.nuts_runner("dawid_skene", dawid_skene, 1.0),
            "svi": runners.svi_runner("dawid_skene", dawid_skene, 1.0),
        },
        "em",
    ),
    "bcc": ModelEntry(
        {
            "vb": runners.loop_runner("bcc", "vb", dawid_skene.VB, 0.0),
            "nuts": runners.nuts_runner("bcc", dawid_skene, 0.0),
            "svi": runners.svi_runner("bcc", dawid_skene, 0.0),
        },
        "vb",
    ),
    "one_coin": ModelEntry(
        {
            "em": runners.loop_runner("one_coin", "em", one_coin.MAP, 1.0, True),
            "nuts": runners.nuts_runner("one_coin", one_coin, 1.0, True),
            "svi": runners.svi_runner("one_coin", one_coin, 1.0, True),
        },
        "em",
    ),
    "community_bcc": ModelEntry(
        {
            "vb": partial(runners.community_runner, method="vb"),
            "svi": partial(runners.community_runner, method="svi"),
        },
        "vb",
    ),
    "glad": ModelEntry({"em": runners.glad_runner}, "em"),
    "majority_vote": ModelEntry({"vote": runners.majority_vote_runner}, "vote"),
}


def fit(annotations: Annotations, model: str = "dawid_skene", method: str | None = None,
        **options) -> Posterior:
    """Infer true labels and worker skills.

    Args:
        annotations: an :class:`~crowdinfer.Annotations` (or a DataFrame with item, worker, label).
        model: ``"dawid_skene"`` (default), ``"bcc"``, ``"community_bcc"``, ``"one_coin"``,
            ``"glad"`` or ``"majority_vote"`` (see ``MODELS``).
        method: the engine -- ``"em"``, ``"vb"``, ``"nuts"``, ``"svi"`` or ``"vote"``; default the
            model's own (the first of ``MODELS[model].methods``).
        **options: depend on the engine --

            priors (confusion models): ``prior`` (default ``"pooled"``, see :func:`resolve_prior`;
            ``"none"`` is classic maximum-likelihood Dawid-Skene), ``strength``, ``accuracy``,
            ``class_prior`` (pseudo-count per class, default 1);

            label prior: ``prior_logits`` (N, K) fixed ``log p(y_i | x_i)`` from any outside model,
            or ``label_prior="classifier"`` (EM/VB) to learn a Flax MLP on ``features`` (default:
            the annotations' own) with ``hidden``, ``classifier_steps``, ``learning_rate``,
            ``weight_decay``, ``folds`` (cross-fitting, default 5), ``seed``;

            EM/VB: ``max_iter`` (100), ``tol`` (1e-5), ``stop`` (``"soft"`` seed 000 eq. 6,
            ``"hard"`` eq. 5, ``"objective"``), ``progress`` (a progress bar);

            NUTS: ``num_warmup``, ``num_samples``, ``num_chains``, ``seed``, ``progress``;

            SVI: ``guide`` (``"map"`` or ``"normal"``), ``num_steps``, ``learning_rate``,
            ``batch_items`` (minibatches of items), ``seed``;

            community BCC: ``communities`` (3), ``deviation`` (2); GLAD: ``alpha_mean``,
            ``alpha_scale``, ``beta_mean``, ``beta_scale``, ``m_steps``, ``learning_rate``.

    Returns:
        a :class:`~crowdinfer.Posterior`.
    """
    import pandas as pd

    if isinstance(annotations, pd.DataFrame):
        annotations = Annotations.from_dataframe(annotations)
    if not isinstance(annotations, Annotations):
        raise TypeError(f"fit needs Annotations or a DataFrame, got {type(annotations).__name__}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    entry = MODELS[model]
    method = entry.default_method if method is None else method
    if method not in entry.methods:
        raise ValueError(
            f"model {model!r} has no method {method!r}; available: {sorted(entry.methods)}"
        )
    start = time.perf_counter()
    try:
        posterior = entry.methods[method](annotations, **options)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise TypeError(f"{model}/{method}: {err}") from None
        raise
    posterior.options["seconds"] = time.perf_counter() - start
    return posterior
