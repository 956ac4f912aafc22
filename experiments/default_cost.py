"""Cost of fit's default (the gold-free model choice) against one Dawid-Skene fit.

    python experiments/default_cost.py      # writes experiments/results/default_cost.md

Each call is timed after a first call of the same shape (compilation excluded: what a user pays
from the second fit on), best of 9 with the two fits interleaved; the machine's load is recorded
beside the numbers.  Datasets: 4 of ../shared/data and two simulated ones (issue 11's shape:
K = 10, 200 workers) at 10^5 and 5*10^5 annotations.  'fits' is the time the default spent in
its candidates' fits and its refit, 'rest' everything else: the split, the half's pooled-skill
fit (when a worker of the half overlaps nobody: web, labelme), the held-out scores, the
temperature, the report.
"""
import dataclasses
import os
import time
import warnings
from pathlib import Path

import crowdinfer as ci
from crowdinfer import selection
from crowdinfer.fit import fit

DATASETS = ("rte", "labelme", "web", "product")
SIMULATED = (100_000, 500_000)
REPEATS = 9


def timed(ann):
    """Best-of-REPEATS seconds of Dawid-Skene and of the default, their calls interleaved (the
    machine's load changes within seconds); the default's posterior of its best call.  Every
    call gets a fresh copy of the annotations (``dataclasses.replace``: the same arrays, an
    empty ``Annotations.derived`` cache), as a user's first fit on new data."""
    fit(ann, "dawid_skene"), fit(ann)  # compile
    t_ds, t_auto, p_ds, p_auto = float("inf"), float("inf"), None, None
    for _ in range(REPEATS):
        fresh = dataclasses.replace(ann)
        start = time.perf_counter()
        post = fit(fresh, "dawid_skene")
        seconds = time.perf_counter() - start
        if seconds < t_ds:
            t_ds, p_ds = seconds, post
        fresh = dataclasses.replace(ann)
        start = time.perf_counter()
        post = fit(fresh)
        seconds = time.perf_counter() - start
        if seconds < t_auto:
            t_auto, p_auto = seconds, post
    return t_ds, p_ds, t_auto, p_auto


def simulated(n):
    per_item = 5
    return ci.datasets.synthetic(n_items=n // per_item, n_workers=200, n_classes=10,
                                 annotations_per_item=per_item, seed=0)


def main():
    warnings.simplefilter("ignore")
    load = os.getloadavg()[0]
    rows = []
    cases = [(name, lambda name=name: ci.datasets.load(name)) for name in DATASETS]
    cases += [(f"simulated {n:.0e}", lambda n=n: simulated(n)) for n in SIMULATED]
    for name, make in cases:
        d = make()
        ann = d.annotations
        t_ds, p_ds, t_auto, p_auto = timed(ann)
        sel = p_auto.selection
        # the candidates' fits (holdout: the half-size fit and its held-out score) and the refit
        fits = sum(s.get("fit_seconds", s["seconds"]) for s in sel["scores"].values()) \
            + sel.get("refit_seconds", 0.0)
        acc = (lambda p: p.accuracy()) if name in DATASETS else (
            lambda p: float((p.labels == d.true_labels).mean()))
        rows.append(f"| {name} | {ann.n_annotations} | {t_ds:.3f} | {t_auto:.3f} | "
                    f"{t_auto / t_ds:.1f}x | {fits:.3f} | {t_auto - fits:.3f} | "
                    f"{sel['criterion']} | {sel['chosen']} | {acc(p_ds):.4f} | {acc(p_auto):.4f} |")
        print(rows[-1], flush=True)
    out = Path(__file__).resolve().parent / "results" / "default_cost.md"
    out.write_text(
        "# Cost of `ci.fit(ann)` (model choice) against `ci.fit(ann, \"dawid_skene\")`\n\n"
        "Run: `python experiments/default_cost.py`. Seconds of a compiled call (best of "
        f"{REPEATS}, Dawid-Skene and default calls interleaved), candidates "
        f"{', '.join(selection.CANDIDATES)}, criterion "
        f"{selection.CRITERION}; 1-minute load average at the start {load:.1f} on 2 shared "
        "cores (when other jobs run, absolute times are noisy, the ratio less so). 'fits': "
        "the candidates' half fits and the refit; 'rest': the split, the half's pooled-skill "
        "fit (when a worker of the half overlaps nobody), the held-out scores, the temperature, "
        "the report.\n\n"
        "| dataset | annotations | Dawid-Skene s | default s | ratio | default: fits s | "
        "default: rest s | criterion | chosen | DS accuracy | default accuracy |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
