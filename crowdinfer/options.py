"""Typed, validated options of :func:`crowdinfer.fit`: one frozen dataclass per engine or part.

Every option of ``fit`` belongs to one of these groups; which groups a model/engine takes is
:data:`SCHEMAS` (``options_for(model, method)`` lists the names).  ``fit`` checks every option
before any work: an unknown name raises a ``ValueError`` naming the model, the engine and the
valid options; a value outside its range (NaN, inf, zero, negative, too large) raises a
``ValueError`` naming the option and the allowed range.

=====================  ==============================================================
group                  options (default)
=====================  ==============================================================
:class:`LoopOptions`   EM / VB loop: ``max_iter`` (100), ``tol`` (1e-5), ``stop``
                       (``"soft"`` seed 000 eq. 6, ``"hard"`` eq. 5, ``"objective"``),
                       ``progress`` (False)
:class:`NutsOptions`   NUTS: ``num_warmup`` (500), ``num_samples`` (500),
                       ``num_chains`` (4), ``seed`` (0), ``progress`` (False)
:class:`SviOptions`    SVI: ``guide`` (``"map"`` / ``"normal"``), ``num_steps`` (2000),
                       ``learning_rate`` (0.05), ``batch_items`` (None: full data),
                       ``seed`` (0)
:class:`PriorOptions`  confusion priors: ``prior`` (``"pooled"``, a name or an array of
                       pseudo-counts), ``strength``, ``accuracy`` (0.7),
                       ``class_prior`` (1.0 pseudo-count per class), ``prior_logits``
                       ((N, K) fixed ``log p(y_i | x_i)``)
:class:`LearnedPriorOptions`  ``label_prior`` (``"proportions"`` / ``"classifier"``),
                       ``features``, ``hidden`` ((128,)), ``classifier_steps`` (20),
                       ``learning_rate`` (1e-3), ``weight_decay`` (None: chosen), ``seed``,
                       ``folds`` (5)
:class:`CommunityOptions`  community BCC: ``communities`` (3), ``deviation`` (2.0)
:class:`GladOptions`   GLAD: ``alpha_mean``, ``alpha_scale``, ``beta_mean``,
                       ``beta_scale`` (1.0 each), ``class_prior`` (None: uniform, fixed),
                       ``prior_logits``, ``m_steps`` (25), ``learning_rate`` (0.05)
:class:`VoteOptions`   majority vote: ``ties`` (``"split"`` / ``"first"``)
:class:`CalibrationOptions`  every model and engine (taken by ``fit`` itself):
                       ``calibrate`` (False: probabilities mapped by a temperature and a
                       floor fitted on gold labels, :mod:`crowdinfer.calibration`),
                       ``calibration_folds`` (5)
=====================  ==============================================================

This module imports neither JAX nor NumPy at import time, so the command line can list the models
(:data:`KNOWN_MODELS`) without starting JAX.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, NamedTuple

__all__ = [
    "LoopOptions", "NutsOptions", "SviOptions", "PriorOptions", "LearnedPriorOptions",
    "CommunityOptions", "GladOptions", "VoteOptions", "CalibrationOptions", "SCHEMAS",
    "KNOWN_MODELS", "REGISTRY",
    "Registered", "register",
    "options_for", "validate", "UnknownOptionError", "catalogue", "help_catalogue",
]


class UnknownOptionError(ValueError, TypeError):
    """An option the model/engine does not take (a ``ValueError``; also a ``TypeError``, what
    Python raises for an unexpected keyword argument)."""


# ------------------------------------------------------------------ checks
def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Callable:
    """A finite real in the interval given (``None`` = unbounded on that side)."""
    left = "(-inf" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
    right = "inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
    interval = f"{left}, {right}"

    def check(name, value):
        v = _real(name, value)
        ok = math.isfinite(v)
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo))
        ok = ok and (hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
        return v

    check.allowed = f"a finite number in {interval}"
    return check


def integer(lo: int = 0, hi: int = 2**31 - 1) -> Callable:
    """An integer in ``[lo, hi]`` (an integral float such as ``1e3`` is accepted; the default
    ``hi`` is what an int32 counter on the device holds)."""

    def check(name, value):
        ok = not isinstance(value, bool) and isinstance(value, numbers.Real)
        if ok and not isinstance(value, numbers.Integral):
            ok = math.isfinite(float(value)) and float(value).is_integer()
        if not ok or int(value) < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if int(value) > hi:
            raise ValueError(f"{name} must be an integer <= {hi}, got {value!r}")
        return int(value)

    check.allowed = f"an integer >= {lo} (and <= {hi})"
    return check


def choice(*values) -> Callable:
    def check(name, value):
        if not isinstance(value, str) or value not in values:
            raise ValueError(f"{name} must be one of {list(values)}, got {value!r}")
        return value

    check.allowed = f"one of {list(values)}"
    return check


def boolean(name, value):
    if not isinstance(value, (bool, int)) or value not in (0, 1):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


boolean.allowed = "True or False"


def optional(check: Callable) -> Callable:
    def inner(name, value):
        return None if value is None else check(name, value)

    inner.allowed = f"None or {check.allowed}"
    return inner


def anything(name, value):
    return value  # arrays (priors, logits, features) are checked against the data by the runner


anything.allowed = "see the docstring"


def finite_array(name, value):
    """An array of finite numbers (its shape is checked against the data by the runner)."""
    import numpy as np

    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of finite numbers, got {type(value).__name__}"
                         ) from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be an array of finite numbers: it holds NaN or inf")
    return value


finite_array.allowed = "an array of finite numbers"


def prior_spec(name, value):
    if isinstance(value, str):
        names = ["pooled", "pooled_diagonal", "homogeneous", "worker", "symmetric", "none"]
        if value not in names:
            raise ValueError(f"unknown prior {value!r} (option {name!r}): use one of {names} or "
                             "an array of pseudo-counts")
    return value  # an array of pseudo-counts: shape and sign checked by models.priors.resolve


prior_spec.allowed = "a prior name or an array of pseudo-counts"


def layer_sizes(name, value):
    sizes = (value,) if isinstance(value, numbers.Integral) else value
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of layer widths >= 1, got {value!r}") from None
    return tuple(integer(1)(name, s) for s in sizes)


layer_sizes.allowed = "a tuple of integers >= 1"

SEED = integer(0)
RATE = number(0.0, 1.0, lo_open=True)  # an optimiser step: beyond 1 every engine here diverges


def _opt(default, check: Callable):
    return dataclasses.field(default=default, metadata={"check": check})


class _Group:
    """Base of the option groups: validates (and normalises) every field on construction."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = f.metadata["check"](f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def check(cls, name: str) -> Callable:
        return next(f.metadata["check"] for f in dataclasses.fields(cls) if f.name == name)


# ------------------------------------------------------------------ groups
@dataclasses.dataclass(frozen=True)
class LoopOptions(_Group):
    """The EM / VB coordinate-ascent loop (:mod:`crowdinfer.inference.loop`)."""

    max_iter: int = _opt(100, integer(1))
    tol: float = _opt(1e-5, number(0.0))
    stop: str = _opt("soft", choice("soft", "hard", "objective"))
    progress: bool = _opt(False, boolean)


@dataclasses.dataclass(frozen=True)
class NutsOptions(_Group):
    """NUTS (:mod:`crowdinfer.inference.mcmc`), started from the EM estimate."""

    num_warmup: int = _opt(500, integer(0))
    num_samples: int = _opt(500, integer(1))
    num_chains: int = _opt(4, integer(1))
    seed: int = _opt(0, SEED)
    progress: bool = _opt(False, boolean)


@dataclasses.dataclass(frozen=True)
class SviOptions(_Group):
    """SVI (:mod:`crowdinfer.inference.svi`)."""

    guide: str = _opt("map", choice("map", "normal"))
    num_steps: int = _opt(2000, integer(1))
    learning_rate: float = _opt(0.05, RATE)
    batch_items: int | None = _opt(None, optional(integer(1)))
    seed: int = _opt(0, SEED)


@dataclasses.dataclass(frozen=True)
class PriorOptions(_Group):
    """Dirichlet priors of the confusion models (:mod:`crowdinfer.models.priors`)."""

    prior: Any = _opt("pooled", prior_spec)
    strength: float | None = _opt(None, optional(number(0.0)))
    accuracy: float = _opt(0.7, number(0.0, 1.0, lo_open=True, hi_open=True))
    class_prior: float = _opt(1.0, number(0.0))
    prior_logits: Any = _opt(None, optional(finite_array))


@dataclasses.dataclass(frozen=True)
class LearnedPriorOptions(_Group):
    """The label prior learned from item features (:mod:`crowdinfer.models.learned_prior`)."""

    label_prior: str = _opt("proportions", choice("proportions", "classifier"))
    features: Any = _opt(None, anything)
    hidden: tuple = _opt((128,), layer_sizes)
    classifier_steps: int = _opt(20, integer(1))
    learning_rate: float = _opt(1e-3, RATE)
    weight_decay: float | None = _opt(None, optional(number(0.0)))  # None: cross-validated
    seed: int = _opt(0, SEED)
    folds: int = _opt(5, integer(1))


@dataclasses.dataclass(frozen=True)
class CommunityOptions(_Group):
    """Community BCC (:mod:`crowdinfer.models.community_bcc`)."""

    communities: int = _opt(3, integer(1))
    deviation: float = _opt(2.0, number(0.0, lo_open=True))


@dataclasses.dataclass(frozen=True)
class GladOptions(_Group):
    """GLAD (:mod:`crowdinfer.models.glad`): Normal priors on ability and log easiness."""

    alpha_mean: float = _opt(1.0, number())
    alpha_scale: float = _opt(1.0, number(0.0, lo_open=True))
    beta_mean: float = _opt(1.0, number())
    beta_scale: float = _opt(1.0, number(0.0, lo_open=True))
    class_prior: float | None = _opt(None, optional(number(0.0)))
    prior_logits: Any = _opt(None, optional(finite_array))
    m_steps: int = _opt(25, integer(1))
    learning_rate: float = _opt(0.05, RATE)


@dataclasses.dataclass(frozen=True)
class VoteOptions(_Group):
    """Majority vote (:mod:`crowdinfer.models.majority_vote`)."""

    ties: str = _opt("split", choice("split", "first"))


@dataclasses.dataclass(frozen=True)
class CalibrationOptions(_Group):
    """Label probabilities calibrated on gold labels (:mod:`crowdinfer.calibration`): any model
    and engine, the default too; ``fit`` takes them itself (they are in no :data:`SCHEMAS` row).
    ``calibrate=True`` needs gold labels (``Annotations.gold``) on at least
    ``crowdinfer.calibration.MIN_GOLD`` items; ``calibration_folds``: the cross-fitting folds
    when the fit itself uses the gold (``use_gold=True`` or ``prior="worker"``)."""

    calibrate: bool = _opt(False, boolean)
    calibration_folds: int = _opt(5, integer(2))

    @classmethod
    def take(cls, options: dict) -> "CalibrationOptions":
        """Pop this group's options out of ``options`` (a ``fit`` call's) and check them."""
        given = {n: options.pop(n) for n in cls.names() if n in options}
        out = cls(**given)
        if "calibration_folds" in given and not out.calibrate:
            raise ValueError("calibration_folds is an option of calibrate=True; pass calibrate=True "
                             "(with gold labels in Annotations.gold) or leave it out")
        return out


# ------------------------------------------------------------------ schemas
_CONFUSION_LOOP = (PriorOptions, LearnedPriorOptions, LoopOptions)

#: ``(model, method) -> option groups``.  Register a new engine with :func:`register`.
SCHEMAS: dict[tuple[str, str], tuple[type, ...]] = {
    ("dawid_skene", "em"): _CONFUSION_LOOP,
    ("dawid_skene", "nuts"): (PriorOptions, NutsOptions),
    ("dawid_skene", "svi"): (PriorOptions, SviOptions),
    ("bcc", "vb"): _CONFUSION_LOOP,
    ("bcc", "nuts"): (PriorOptions, NutsOptions),
    ("bcc", "svi"): (PriorOptions, SviOptions),
    ("one_coin", "em"): _CONFUSION_LOOP,
    ("one_coin", "nuts"): (PriorOptions, NutsOptions),
    ("one_coin", "svi"): (PriorOptions, SviOptions),
    ("community_bcc", "vb"): (CommunityOptions, PriorOptions, LoopOptions),
    ("community_bcc", "svi"): (CommunityOptions, PriorOptions, SviOptions),
    ("glad", "em"): (GladOptions, LoopOptions),
    ("majority_vote", "vote"): (VoteOptions,),
}

class Registered(NamedTuple):
    """A model's line in :data:`REGISTRY`."""

    module: str  # the module (JAX side) whose ``RUNNERS[model]`` maps each engine to its runner
    engines: tuple[str, ...]  # default first
    description: str  # one line for ``--help``


#: THE model registry: one line per model.  It names the module that holds the model's runners
#: (imported by :mod:`crowdinfer.fit`, which builds ``MODELS`` from it), the engines (default
#: first) and the line ``--help`` prints -- without importing JAX.  A new model is one file of
#: ``models/`` (its NumPyro model, its parts, ``RUNNERS`` and its option groups, registered with
#: :func:`register`) plus one line here.
REGISTRY: dict[str, Registered] = {
    "dawid_skene": Registered("crowdinfer.runners", ("em", "nuts", "svi"),
                              "a full KxK confusion matrix per worker (one of the default's candidates)"),
    "bcc": Registered("crowdinfer.runners", ("vb", "nuts", "svi"),
                      "Bayesian classifier combination (IBCC): Dawid-Skene, fully Bayesian"),
    "one_coin": Registered("crowdinfer.runners", ("em", "nuts", "svi"),
                           "one accuracy per worker, errors spread evenly"),
    "community_bcc": Registered("crowdinfer.runners", ("vb", "svi"),
                                "workers in communities that share a confusion"),
    "glad": Registered("crowdinfer.runners", ("em",), "worker ability x item difficulty"),
    "majority_vote": Registered("crowdinfer.runners", ("vote",),
                                "the (soft) majority vote baseline"),
    "mace": Registered("crowdinfer.models.mace", ("vb", "em"), "each worker knows the answer or spams"),
    "bwa": Registered("crowdinfer.models.bwa", ("em",),
                      "Bayesian weighted average with learned worker precisions"),
    "ebcc": Registered("crowdinfer.models.ebcc", ("vb",),
                       "enhanced BCC: classes as mixtures of subtypes"),
    "wawa": Registered("crowdinfer.models.wawa", ("vote",),
                       "the vote weighted by agreement with the majority vote"),
    "weighted_vote": Registered("crowdinfer.models.wawa", ("vote",),
                                "the vote weighted by log-odds worker skills"),
    "zero_based_skill": Registered("crowdinfer.models.zero_based_skill", ("vote",),
                                   "a vote re-weighted by skills learned over rounds"),
    "hierarchical_ds": Registered("crowdinfer.models.hierarchical_ds", ("vb",),
                                  "Dawid-Skene whose population prior (mean and strength) is learned"),
}

#: ``model -> description`` (from :data:`REGISTRY`, plus models registered at run time).
DESCRIPTIONS: dict[str, str] = {m: r.description for m, r in REGISTRY.items()}

#: ``model -> (engines, description)`` from :data:`REGISTRY`, for ``--help`` (static: listing the
#: models imports neither the models nor JAX).  tests/test_options.py checks that it equals
#: ``crowdinfer.fit.MODELS``.
KNOWN_MODELS: dict[str, tuple[tuple[str, ...], str]] = {
    m: (r.engines, r.description) for m, r in REGISTRY.items()}


def help_catalogue() -> dict[str, tuple[tuple[str, ...], str]]:
    """``model -> (engines, description)`` for ``--help``: :data:`KNOWN_MODELS` plus anything
    registered at run time."""
    out = dict(KNOWN_MODELS)
    for model, engines in catalogue().items():
        if model not in out:
            out[model] = (engines, DESCRIPTIONS.get(model, ""))
    return out


def register(model: str, method: str, *groups: type, description: str | None = None) -> None:
    """Declare the option groups of a model/engine (in the model's file; its line in
    :data:`REGISTRY` names the module, the engines and the description)."""
    SCHEMAS[(model, method)] = tuple(groups)
    if description is not None:
        DESCRIPTIONS[model] = description


def catalogue() -> dict[str, tuple[str, ...]]:
    """``model -> engines`` (default first, in registration order) from :data:`SCHEMAS`."""
    out: dict[str, list[str]] = {}
    for model, method in SCHEMAS:
        out.setdefault(model, []).append(method)
    return {m: tuple(v) for m, v in out.items()}


_BY_METHOD = {"em": (LoopOptions,), "vb": (LoopOptions,), "nuts": (NutsOptions,),
              "svi": (SviOptions,), "vote": (VoteOptions,)}


def _groups(model: str, method: str, runner: Callable | None) -> tuple[type, ...]:
    """The groups of a registered engine; for one not in :data:`SCHEMAS`, the groups whose option
    names the runner's signature takes, plus its engine's group if it takes ``**options``."""
    if (model, method) in SCHEMAS:
        return SCHEMAS[(model, method)]
    if runner is None:
        return _BY_METHOD.get(method, ())
    import inspect

    try:
        params = inspect.signature(runner).parameters
    except (TypeError, ValueError):
        return ()
    named = {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY
             or (v.kind is v.POSITIONAL_OR_KEYWORD and p != "annotations")}
    groups = [g for g in _ALL if named & set(g.names())]
    if any(v.kind is v.VAR_KEYWORD for v in params.values()):
        groups += [g for g in _BY_METHOD.get(method, ()) if g not in groups]
    return tuple(groups)


_ALL = (LoopOptions, NutsOptions, SviOptions, PriorOptions, LearnedPriorOptions,
        CommunityOptions, GladOptions, VoteOptions)


def options_for(model: str, method: str, runner: Callable | None = None) -> list[str]:
    """The option names ``fit(model=model, method=method)`` takes, sorted."""
    names = {n for g in _groups(model, method, runner) for n in g.names()}
    if (model, method) not in SCHEMAS and runner is not None:
        import inspect

        try:
            params = inspect.signature(runner).parameters
            names |= {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY}
        except (TypeError, ValueError):
            pass
    return sorted(names)


def validate(model: str, method: str, options: dict, runner: Callable | None = None) -> dict:
    """Check ``options`` for ``fit(model=model, method=method)``; return them normalised (ints as
    ``int``, numbers as ``float``), with only the keys given -- the runner keeps its own defaults.

    Raises:
        ValueError: an unknown option (naming the model, the engine and the valid options) or a
            value outside its allowed range (naming the option and the range).
    """
    valid = options_for(model, method, runner)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        word = "option" if len(unknown) == 1 else "options"
        raise UnknownOptionError(
            f"{model}/{method}: unexpected keyword {word} {', '.join(map(repr, unknown))}: model "
            f"{model!r} with engine {method!r} takes {', '.join(valid) or 'no options'}"
        )
    checks: dict[str, Callable] = {}
    for group in _groups(model, method, runner):
        for name in group.names():
            checks.setdefault(name, group.check(name))
    return {k: checks[k](k, v) if k in checks else v for k, v in options.items()}
