"""crowdinfer: true labels and annotator skills from noisy crowd annotations, on JAX and NumPyro.

    import crowdinfer as ci
    ann = ci.Annotations.from_csv("annotations.csv")
    post = ci.fit(ann)                       # Dawid-Skene, MAP-EM, pooled empirical-Bayes prior
    post.to_pandas(); post.worker_skills()

    from crowdinfer import online            # the online annotation loop (seed 000, Algorithm 1)
    from crowdinfer.estimators import DawidSkene   # crowd-kit-style estimators

Imports are lazy: ``import crowdinfer`` loads nothing heavy; JAX starts with the first use of an
attribute that needs it (``ci.fit``, ``ci.Annotations``, ``ci.online``, ...).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: attribute -> (module, name in it; None for the module itself)
_LAZY = {
    "Annotations": (".annotations", "Annotations"),
    "CrowdData": (".annotations", "CrowdData"),
    "Posterior": (".posterior", "Posterior"),
    "fit": (".fit", "fit"),
    "MODELS": (".fit", "MODELS"),
    "correction": (".correction", None),
    "datasets": (".datasets", None),
    "online": (".online", None),
    "simulate": (".simulate", None),
    "dasc": (".dasc", None),
    "estimators": (".estimators", None),
    "options": (".options", None),
    "plot": (".plot", None),
    "diagnostics": (".diagnostics", None),
}

__all__ = [
    "Annotations", "CrowdData", "Posterior", "fit", "MODELS", "correction", "datasets", "online",
    "simulate", "dasc", "estimators", "options", "__version__",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'crowdinfer' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module, __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
