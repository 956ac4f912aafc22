"""Issue 14's models on the 12 datasets of ../shared/data, beside majority vote and Dawid-Skene.

Writes experiments/results/new_models.md (accuracy, ties split evenly, and seconds per fit on this
machine, compile included) and new_models.csv.  Every model runs with its default engine and
options.  Run: ``python3 experiments/new_models.py [dataset ...]``.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import pandas as pd

import crowdinfer as ci

DATASETS = ["rte", "temp", "bluebird", "dog", "web", "product", "sentiment_possent", "face", "cf",
            "zencrowd_in", "labelme", "music_genre"]
MODELS = [("majority_vote", "majority vote"), ("dawid_skene", "Dawid-Skene (default)"),
          ("mace", "MACE (VB)"), ("bwa", "BWA"), ("ebcc", "EBCC (VB)"),
          ("hierarchical_ds", "hierarchical DS (VB)"), ("wawa", "Wawa"),
          ("weighted_vote", "weighted vote"), ("zero_based_skill", "ZBS")]
# ../shared/data/README.md: the authors' notebooks (EBCC: best ELBO of 40 starts; BWA)
REFERENCE = {
    "ebcc": {"product": 0.935, "sentiment_possent": 0.961, "rte": 0.931, "bluebird": 0.861,
             "dog": 0.840, "web": 0.769, "face": 0.635, "cf": 0.883, "zencrowd_in": 0.781,
             "music_genre": 0.787},
    "bwa": {"product": 0.919, "sentiment_possent": 0.956, "rte": 0.928, "bluebird": 0.759,
            "dog": 0.831, "web": 0.822, "face": 0.618, "cf": 0.893, "zencrowd_in": 0.764,
            "music_genre": 0.786},
}
OUT = Path(__file__).parent / "results"


def main(names):
    rows = []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ann = ci.datasets.load(name).annotations
            for model, _ in MODELS:
                start = time.perf_counter()
                post = ci.fit(ann, model)
                rows.append({"dataset": name, "model": model, "accuracy": post.accuracy(),
                             "seconds": time.perf_counter() - start})
                print(rows[-1], flush=True)
        frame = pd.DataFrame(rows)  # written after every dataset: a partial run keeps its rows
        OUT.mkdir(exist_ok=True)
        frame.to_csv(OUT / "new_models.csv", index=False)
        write_markdown(frame, list(frame.dataset.unique()))


def write_markdown(frame: pd.DataFrame, names):
    acc = frame.pivot(index="dataset", columns="model", values="accuracy").loc[names]
    sec = frame.pivot(index="dataset", columns="model", values="seconds").loc[names]
    models = [m for m, _ in MODELS]
    head = "| dataset | " + " | ".join(label for _, label in MODELS) + " | EBCC / BWA reference |"
    lines = [
        "# Issue 14's models on ../shared/data",
        "",
        "Accuracy on the items with gold (ties split evenly), every model with its default engine "
        "and options (`experiments/new_models.py`). Reference: the authors' notebooks for EBCC (best "
        "ELBO of 40 random starts) and BWA, from ../shared/data/README.md. **Bold**: best of the row.",
        "",
        head,
        "|" + " --- |" * (len(models) + 2),
    ]
    for name in names:
        best = acc.loc[name, models].max()
        cells = [f"**{acc.loc[name, m]:.3f}**" if acc.loc[name, m] >= best - 5e-4
                 else f"{acc.loc[name, m]:.3f}" for m in models]
        ref = " / ".join(f"{REFERENCE[m][name]:.3f}" if name in REFERENCE[m] else "—"
                         for m in ("ebcc", "bwa"))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ref} |")
    means = " | ".join(f"{acc[m].mean():.3f}" for m in models)
    lines.append(f"| **mean** | {means} | |")
    wins = " | ".join(str(int((acc[m] >= acc["majority_vote"] - 0.005).sum())) for m in models)
    lines += [f"| ≥ MV − 0.005 (of {len(names)}) | {wins} | |", "",
              "Seconds per fit (wall clock, compile included, on a shared 2-core CPU machine "
              "under load from other jobs: compare the order of magnitude, not the digits):", "",
              "| dataset | " + " | ".join(label for _, label in MODELS) + " |",
              "|" + " --- |" * (len(models) + 1)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{sec.loc[name, m]:.1f}" for m in models) + " |")
    lines.append("| **total** | " + " | ".join(f"{sec[m].sum():.0f}" for m in models) + " |")
    (OUT / "new_models.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or DATASETS)
