"""Which worker prior should ``crowdinfer.fit`` use by default?

Runs Dawid-Skene (MAP-EM) with every named prior at several strengths on each real dataset of
../shared/data and writes experiments/results/prior_sweep.md (+ .csv): accuracy on gold, next to
majority vote and the published Dawid-Skene figure.

    python -m experiments.prior_sweep
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd

import crowdinfer as ci

NAMES = ["rte", "temp", "bluebird", "dog", "web", "product", "sentiment_possent", "face", "cf",
         "zencrowd_in", "labelme", "music_genre"]
PUBLISHED_DS = {"product": "0.940", "sentiment_possent": "0.960", "rte": "0.928", "dog": "0.843",
                "bluebird": "0.889-0.898", "web": "0.819-0.829", "face": "0.640", "temp": "0.942",
                "labelme": "0.790-0.804"}
CONFIGS = [("none", None)] + [
    (prior, s) for prior in ("pooled", "pooled_diagonal", "homogeneous") for s in (1, 2, 4, 10)
]
OUT = Path(__file__).resolve().parent / "results"


def main() -> int:
    data = ci.datasets.shared_data_dir()
    if not data.exists():
        sys.exit(f"the real datasets are missing: expected {data} (or set CROWDINFER_DATA)")
    rows = []
    for name in NAMES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ann = ci.datasets.load(data / name).annotations
            row = {"dataset": name, "published DS": PUBLISHED_DS.get(name, "-"),
                   "majority vote": ci.fit(ann, "majority_vote").accuracy()}
            for prior, strength in CONFIGS:
                label = prior if strength is None else f"{prior} {strength}"
                row[label] = ci.fit(ann, prior=prior, strength=strength).accuracy()
        rows.append(row)
        print(name, flush=True)
    table = pd.DataFrame(rows).set_index("dataset")
    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / "prior_sweep.csv")
    numeric = table.drop(columns=["published DS"])
    margin = numeric.drop(columns="majority vote").sub(numeric["majority vote"], axis=0)
    summary = pd.DataFrame({"worst margin over MV": margin.min(), "mean accuracy": numeric.drop(columns="majority vote").mean()})
    with open(OUT / "prior_sweep.md", "w") as fh:
        fh.write("# Worker prior sweep (Dawid-Skene, MAP-EM)\n\n")
        fh.write("Run: `python -m experiments.prior_sweep`. Accuracy on gold items. Priors are in "
                 "pseudo-answers per confusion row (see `crowdinfer.fit.resolve_prior`).\n\n")
        fh.write(table.to_markdown(floatfmt=".3f") + "\n\n")
        fh.write("## Summary over the 12 datasets\n\n")
        fh.write(summary.sort_values("worst margin over MV", ascending=False).to_markdown(floatfmt=".3f") + "\n")
    print((OUT / "prior_sweep.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
