"""crowdinfer: true labels and annotator skills from noisy crowd annotations, on JAX and NumPyro.

    import crowdinfer as ci
    ann = ci.Annotations.from_csv("annotations.csv")
    post = ci.fit(ann)                       # Dawid-Skene, MAP-EM, pooled empirical-Bayes prior
    post.to_pandas(); post.worker_skills()

    from crowdinfer import online            # the online annotation loop (seed 000, Algorithm 1)
"""
from . import correction, datasets, online, simulate
from .annotations import Annotations, CrowdData
from .fit import MODELS, fit
from .posterior import Posterior

__version__ = "0.1.0"
__all__ = [
    "Annotations", "CrowdData", "Posterior", "fit", "MODELS", "correction", "datasets", "online", "simulate",
    "__version__",
]
