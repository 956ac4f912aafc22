"""Cost of fit's default (the gold-free model choice) against one Dawid-Skene fit.

    python experiments/default_cost.py      # writes experiments/results/default_cost.md

Each call is timed after a first call of the same shape (compilation excluded: what a user pays
from the second fit on); the machine's load is recorded beside the numbers.
"""
import os
import time
import warnings
from pathlib import Path

import crowdinfer as ci
from crowdinfer.fit import fit

DATASETS = ("rte", "labelme", "web", "product")


def timed(ann, model):
    fit(ann, model) if model else fit(ann)  # compile
    start = time.perf_counter()
    post = fit(ann, model) if model else fit(ann)
    return time.perf_counter() - start, post


def main():
    warnings.simplefilter("ignore")
    rows = []
    for name in DATASETS:
        ann = ci.datasets.load(name).annotations
        t_ds, p_ds = timed(ann, "dawid_skene")
        t_auto, p_auto = timed(ann, None)
        rows.append(f"| {name} | {ann.n_annotations} | {t_ds:.3f} | {t_auto:.3f} | "
                    f"{t_auto / t_ds:.0f}x | {p_auto.selection['chosen']} | "
                    f"{p_ds.accuracy():.4f} | {p_auto.accuracy():.4f} |")
        print(rows[-1], flush=True)
    out = Path(__file__).resolve().parent / "results" / "default_cost.md"
    out.write_text(
        "# Cost of `ci.fit(ann)` (model choice) against `ci.fit(ann, \"dawid_skene\")`\n\n"
        "Run: `python experiments/default_cost.py`. Seconds of a second call (compiled), "
        f"1-minute load average at the start {os.getloadavg()[0]:.1f} on 2 cores.\n\n"
        "| dataset | annotations | Dawid-Skene s | default s | ratio | chosen | DS accuracy | "
        "default accuracy |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
