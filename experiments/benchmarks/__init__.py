"""Speed and memory benchmarks; each runs from the repository root as a module, e.g.
``python -m experiments.benchmarks.scale report``.  ``machine`` holds what they share."""
