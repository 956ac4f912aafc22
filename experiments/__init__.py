"""The experiments behind the README's numbers; each runs from the repository root as a module,
e.g. ``python -m experiments.online_sandbox --quick`` (not installed with the package)."""
