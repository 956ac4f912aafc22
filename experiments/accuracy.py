"""Accuracy of every model and of fit's default (held-out-likelihood selection) on the 12 datasets
of ../shared/data, the leave-one-dataset-out (LODO) choice of the default's settings, calibration
(ECE, precision of the items whose risk is below 0.1) and the learned-prior table.

Run: ``python experiments/accuracy.py [--timing] [--learned]``.  Gold labels are used for scoring
only: every fit sees the annotations without gold.  Per-dataset raw results are cached in
``experiments/results/accuracy_raw.json`` (delete it to recompute; models registered later are
added on the next run).  Writes ``experiments/results/accuracy.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import crowdinfer as ci
from crowdinfer import selection, simulate
from crowdinfer.fit import MODELS, fit
from crowdinfer.posterior import expected_accuracy

RESULTS = Path(__file__).parent / "results"
RAW = RESULTS / "accuracy_raw.json"
DATASETS = ["rte", "temp", "bluebird", "dog", "web", "product", "sentiment_possent", "face", "cf",
            "zencrowd_in", "labelme", "music_genre"]
PUBLISHED = {  # ../shared/data/README.md: MV, Dawid-Skene, IBCC, EBCC, BWA
    "product": (0.897, "0.940", "0.938", 0.935, 0.919),
    "sentiment_possent": (0.932, "0.960", "0.960", 0.961, 0.956),
    "rte": (0.897, "0.928", "0.928", 0.931, 0.928),
    "bluebird": (0.759, "0.898", "0.889", 0.861, 0.759),
    "dog": (0.822, "0.843", "0.839", 0.840, 0.831),
    "web": (0.731, "0.819-0.829", "0.751", 0.769, 0.822),
    "face": (0.637, "0.640", "0.640", 0.635, 0.618),
    "temp": (0.936, "0.942", "-", None, None),
    "labelme": (0.769, "0.804", "-", None, None),
    "cf": (None, "-", "-", 0.883, 0.893),
    "zencrowd_in": (None, "-", "-", 0.781, 0.764),
    "music_genre": (None, "-", "-", 0.787, 0.786),
}
SLOW_ONLY = ("glad", "community_bcc")  # in the table, not candidates (per-item / hierarchical)
FOLDS = (2, 3, 5)
RISK = 0.1


def pool() -> list[str]:
    return [m for m in MODELS if m not in SLOW_ONLY]


def load(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = ci.datasets.load(ci.datasets.shared_data_dir() / name)
    ann = d.annotations
    return dataclasses.replace(ann, gold=None), ann.gold, d


def calibration(probs: np.ndarray, gold: np.ndarray, bins: int = 15) -> dict:
    """ECE (equal-width confidence bins) and the precision of the items with risk < 0.1."""
    has = gold >= 0
    p = probs[has]
    conf = p.max(-1)
    right = (p.argmax(-1) == gold[has]).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    ece = sum(abs(right[idx == b].mean() - conf[idx == b].mean()) * (idx == b).mean()
              for b in range(bins) if (idx == b).any())
    sure = 1 - conf < RISK
    return {"ece": float(ece), "precision": float(right[sure].mean()) if sure.any() else None,
            "n_sure": int(sure.sum()), "n_gold": int(has.sum())}


def evaluate(name: str, raw: dict) -> dict:
    ann, gold, _ = load(name)
    entry = raw.setdefault(name, {"models": {}, "cv": {}, "tempered": {}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model in MODELS:
            if model in entry["models"]:
                continue
            start = time.perf_counter()
            post = fit(ann, model)
            seconds = time.perf_counter() - start
            entry["models"][model] = {"accuracy": expected_accuracy(post.label_probs, gold),
                                      "seconds": seconds, **calibration(post.label_probs, gold)}
            entry.setdefault("_probs", {})[model] = post.label_probs
            print(f"{name:18s} {model:15s} {entry['models'][model]['accuracy']:.4f} "
                  f"{seconds:.1f}s", flush=True)
        for folds in FOLDS:
            have = entry["cv"].setdefault(str(folds), {})
            todo = [m for m in pool() if m not in have]
            if not todo:
                continue
            scores = selection.held_out_scores(ann, todo, folds=folds)
            for model, s in scores.items():
                have[model] = s
                probs = entry.get("_probs", {}).get(model)
                if probs is None:
                    probs = fit(ann, model).label_probs
                tempered = selection.temper(probs, s["temperature"])
                entry["tempered"].setdefault(str(folds), {})[model] = calibration(tempered, gold)
            print(f"{name:18s} folds={folds} " + " ".join(
                f"{m}:{have[m]['score']:.4f}/T={have[m]['temperature']:.2f}" for m in todo),
                flush=True)
    entry.pop("_probs", None)
    return entry


# ------------------------------------------------------------------ the default and its LODO choice
def default_choice(entry: dict, candidates, folds: int) -> str:
    cv = entry["cv"][str(folds)]
    names = [c for c in candidates if c in cv]
    return max(names, key=lambda c: (cv[c]["score"], -names.index(c)))


def default_accuracy(entry, candidates, folds) -> float:
    return entry["models"][default_choice(entry, candidates, folds)]["accuracy"]


def configurations(models):
    """Every candidate set (containing dawid_skene, the reference model) x number of folds."""
    others = [m for m in models if m != "dawid_skene"]
    for r in range(len(others) + 1):
        for extra in itertools.combinations(others, r):
            for folds in FOLDS:
                yield ("dawid_skene",) + extra, folds


def config_value(raw, names, config):
    """Rank of a configuration on some datasets: first never more than 0.005 below majority vote
    (fewest violations), then the mean accuracy, then fewer candidates and folds (cheaper)."""
    cands, folds = config
    margins = [default_accuracy(raw[n], cands, folds) - raw[n]["models"]["majority_vote"]["accuracy"]
               for n in names]
    accs = [default_accuracy(raw[n], cands, folds) for n in names]
    return (-sum(m < -0.005 for m in margins), round(float(np.mean(accs)), 6), -len(cands), -folds)


def lodo(raw) -> list[dict]:
    models = [m for m in pool() if all(m in raw[n]["cv"][str(FOLDS[0])] for n in DATASETS)]
    configs = list(configurations(models))
    rows = []
    for held in DATASETS:
        rest = [n for n in DATASETS if n != held]
        best = max(configs, key=lambda c: config_value(raw, rest, c))
        cands, folds = best
        entry = raw[held]
        rows.append({"held out": held, "candidates chosen on the other 11": ", ".join(cands),
                     "folds": folds, "model chosen": default_choice(entry, cands, folds),
                     "accuracy": default_accuracy(entry, cands, folds),
                     "majority vote": entry["models"]["majority_vote"]["accuracy"]})
    return rows, models


# ---------------------------------------------------------------------------------- timing
TIMING = r"""
import sys, time, json, warnings, dataclasses
warnings.simplefilter("ignore")
import crowdinfer as ci
from crowdinfer.fit import fit
d = ci.datasets.load(ci.datasets.shared_data_dir() / sys.argv[1])
ann = dataclasses.replace(d.annotations, gold=None)
what = sys.argv[2]
out = {}
for run in ("cold", "warm"):
    t = time.perf_counter()
    fit(ann, "dawid_skene") if what == "ds" else fit(ann)
    out[run] = time.perf_counter() - t
print(json.dumps(out))
"""


def timing(names) -> list[dict]:
    rows = []
    for name in names:
        res = {}
        for what in ("ds", "default"):
            out = subprocess.run([sys.executable, "-c", TIMING, name, what], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            res[what] = json.loads(out)
        rows.append({"dataset": name, "DS cold s": res["ds"]["cold"],
                     "default cold s": res["default"]["cold"],
                     "cold ratio": res["default"]["cold"] / res["ds"]["cold"],
                     "DS warm s": res["ds"]["warm"], "default warm s": res["default"]["warm"],
                     "warm ratio": res["default"]["warm"] / res["ds"]["warm"]})
        print(rows[-1], flush=True)
    return rows


# ---------------------------------------------------------------------------------- learned prior
def learned_prior_table(models=("dawid_skene",)) -> str:
    """Accuracy with and without label_prior='classifier' (MLP (128,) default, and hidden=() --
    logistic regression), the learned weight a, the classifier alone on the held-out test items,
    and the seconds of each fit; plus the linear prior's time at 5000 synthetic items."""
    from crowdinfer.models.learned_prior import classifier_weight

    rows = []
    for name in ("labelme", "music_genre"):
        ann, gold, d = load(name)
        for kind in ("original", "noisy", "projected", "random"):
            x = ann.features if kind == "original" else simulate.weak_features(ann.features, kind)
            test_x = d.test.features if kind == "original" else None
            for model in models:
                plain = expected_accuracy(fit(ann, model).label_probs, gold)
                for hidden in ((128,), ()):
                    start = time.perf_counter()
                    post = fit(ann, model, label_prior="classifier", features=x, hidden=hidden)
                    seconds = time.perf_counter() - start
                    acc = expected_accuracy(post.label_probs, gold)
                    alone = (float(np.mean(post.predict(test_x) == d.test.gold))
                             if test_x is not None else None)
                    rows.append([name, kind, model, "MLP (128,)" if hidden else "logistic", plain,
                                 acc, acc - plain, classifier_weight(post.classifier["params"]),
                                 alone, seconds])
                    print(rows[-1], flush=True)
    header = ["dataset", "features", "model", "classifier", "without", "with", "difference",
              "weight a", "classifier alone (test items)", "seconds"]
    text = table(header, rows)
    hurt = [f"{r[0]}/{r[1]}/{r[3]} ({r[6]:+.3f})" for r in rows if r[6] < 0]
    task = ci.datasets.synthetic(n_items=5000, n_workers=50, n_classes=5, annotations_per_item=2,
                                 seed=0)
    xs = np.random.default_rng(0).normal(size=(5000, 128)).astype(np.float32)
    xs[:, :5] += 2.0 * np.eye(5)[task.true_labels]
    times = []
    for _ in range(2):
        start = time.perf_counter()
        fit(task.annotations, "dawid_skene", label_prior="classifier", features=xs, hidden=())
        times.append(time.perf_counter() - start)
    notes = ["", "'with' = `fit(ann, model, label_prior=\"classifier\", features=x, hidden=...)`; "
             "the weight a of the classifier's log probabilities in the prior is learned from the "
             "annotations (models/learned_prior.py). noisy = features + 3 sd Gaussian noise; "
             "projected = a random 2-d projection; random = 16 columns of pure noise.",
             "",
             "Cases where the classifier prior lowers accuracy: " + (", ".join(hurt) or "none") + ".",
             "",
             f"Logistic-regression prior at 5000 items, 128-d features, K = 5 (shared 2-core CPU): "
             f"{times[0]:.1f} s first call (with compilation), {times[1]:.1f} s second call."]
    return text + "\n" + "\n".join(notes)


# ---------------------------------------------------------------------------------- report
def fmt(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}"


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) if not isinstance(v, int) else str(v) for v in r) + " |"
              for r in rows]
    return "\n".join(lines)


def report(raw, timing_rows, learned_rows) -> str:
    from crowdinfer.selection import CANDIDATES, DEFAULT_FOLDS

    models = list(MODELS)
    lodo_rows, lodo_models = lodo(raw)
    out = ["# Accuracy of every model and of fit's default on ../shared/data", "",
           "Run: `python experiments/accuracy.py --timing --learned`. Accuracy on gold items (ties "
           "split); every fit sees the annotations without gold. Each model with its default engine "
           f"and prior. **default** = `ci.fit(ann)`: the candidate ({', '.join(CANDIDATES)}) with "
           f"the highest held-out annotation log-likelihood under {DEFAULT_FOLDS}-fold "
           "cross-validation over annotations (crowdinfer/selection.py), no gold used.", ""]
    header = ["dataset", "published MV", "published DS", "published IBCC", "EBCC (ref.)",
              "BWA (ref.)"] + models + ["default", "default's model"]
    rows = []
    for n in DATASETS:
        e = raw[n]
        pub = PUBLISHED[n]
        chosen = default_choice(e, CANDIDATES, DEFAULT_FOLDS)
        rows.append([n, *pub] + [e["models"][m]["accuracy"] if m in e["models"] else None
                                 for m in models]
                    + [e["models"][chosen]["accuracy"], chosen])
    means = ["**mean**", None, None, None, None, None] + [
        float(np.mean([raw[n]["models"][m]["accuracy"] for n in DATASETS]))
        if all(m in raw[n]["models"] for n in DATASETS) else None for m in models]
    default_mean = float(np.mean([default_accuracy(raw[n], CANDIDATES, DEFAULT_FOLDS)
                                  for n in DATASETS]))
    rows.append(means + [default_mean, ""])
    out += [table(header, rows), ""]
    best_single = max((m for m in models if means[6 + models.index(m)] is not None),
                      key=lambda m: means[6 + models.index(m)])
    best_mean = means[6 + models.index(best_single)]
    margins = {n: default_accuracy(raw[n], CANDIDATES, DEFAULT_FOLDS)
               - raw[n]["models"]["majority_vote"]["accuracy"] for n in DATASETS}
    worst = min(margins, key=margins.get)
    out += [f"- Default mean accuracy **{default_mean:.4f}**; best single model {best_single} "
            f"{best_mean:.4f}: the default's mean "
            + ("beats every single model's mean." if default_mean > best_mean else
               "does **not** beat every single model's mean."),
            f"- Worst margin of the default over majority vote: {margins[worst]:+.4f} ({worst}); "
            + ("never below MV - 0.005." if margins[worst] >= -0.005 else "**below MV - 0.005**."),
            ""]

    out += ["## Held-out log-likelihood per annotation (the selection criterion)", "",
            f"{DEFAULT_FOLDS}-fold; higher is better; T = the temperature that maximises it.", ""]
    cv_models = pool()
    rows = [[n] + [f"{raw[n]['cv'][str(DEFAULT_FOLDS)][m]['score']:.4f} "
                   f"(T {raw[n]['cv'][str(DEFAULT_FOLDS)][m]['temperature']:.2f})"
                   if m in raw[n]["cv"][str(DEFAULT_FOLDS)] else "-" for m in cv_models]
            for n in DATASETS]
    out += [table(["dataset"] + cv_models, rows), ""]

    out += ["## Leave-one-dataset-out", "",
            "For each dataset, the candidate set (any subset of "
            f"{', '.join(lodo_models)} containing dawid_skene) and the number of folds "
            f"({', '.join(map(str, FOLDS))}) are chosen on the other 11 datasets: first never "
            "more than 0.005 below majority vote, then the highest mean accuracy, then the fewest "
            "candidates and folds. The choice is then scored on the held-out dataset.", ""]
    rows = [[r["held out"], r["candidates chosen on the other 11"], r["folds"], r["model chosen"],
             r["accuracy"], r["majority vote"], r["accuracy"] - r["majority vote"]]
            for r in lodo_rows]
    lodo_mean = float(np.mean([r["accuracy"] for r in lodo_rows]))
    rows.append(["**mean**", "", "", "", lodo_mean,
                 float(np.mean([r["majority vote"] for r in lodo_rows])), None])
    out += [table(["held out", "candidates (chosen on the other 11)", "folds", "model chosen",
                   "accuracy", "majority vote", "margin"], rows), ""]
    worst_lodo = min(r["accuracy"] - r["majority vote"] for r in lodo_rows)
    out += [f"LODO mean accuracy {lodo_mean:.4f}; worst margin over majority vote "
            f"{worst_lodo:+.4f}.", ""]

    out += ["## Calibration of the default", "",
            "ECE: expected calibration error, 15 equal-width confidence bins. Precision at risk < "
            "0.1: accuracy of the items whose confidence exceeds 0.9 (seed 000's promise: >= 0.9). "
            "'raw' is the chosen model's posterior; 'tempered' divides its log probabilities by "
            "the temperature T that maximises the held-out annotation likelihood (no gold; the "
            "labels do not change).", ""]
    rows = []
    for n in DATASETS:
        e = raw[n]
        chosen = default_choice(e, CANDIDATES, DEFAULT_FOLDS)
        rawc, tc = e["models"][chosen], e["tempered"][str(DEFAULT_FOLDS)][chosen]
        rows.append([n, chosen, e["cv"][str(DEFAULT_FOLDS)][chosen]["temperature"], rawc["ece"],
                     tc["ece"], rawc["precision"], rawc["n_sure"], tc["precision"], tc["n_sure"],
                     rawc["n_gold"]])
    out += [table(["dataset", "model", "T", "ECE raw", "ECE tempered", "precision raw",
                   "items raw", "precision tempered", "items tempered", "gold items"], rows), ""]
    bad = [r[0] for r in rows if r[7] is not None and r[7] < 0.9]
    out += ["Datasets where the tempered precision at risk < 0.1 stays below 0.9: "
            + (", ".join(bad) if bad else "none") + ".", ""]

    if timing_rows:
        out += ["## Cost of the default", "",
                "Seconds in a fresh process: 'cold' is the first call (JAX compiles), 'warm' the "
                "second call on the same data. Ratio = default / one Dawid-Skene fit.", ""]
        keys = list(timing_rows[0])
        out += [table(keys, [[r[k] for k in keys] for r in timing_rows]), ""]
    if learned_rows:
        out += ["## Learned label prior", "", learned_rows, ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timing", nargs="*", default=None,
                        help="time the default against one Dawid-Skene fit (datasets; none: all)")
    parser.add_argument("--learned", action="store_true")
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    args = parser.parse_args()
    raw = json.loads(RAW.read_text()) if RAW.exists() else {}
    for name in args.datasets:
        evaluate(name, raw)
        RAW.write_text(json.dumps(raw, indent=1))
    timing_rows = timing(args.timing or DATASETS) if args.timing is not None else []
    learned = learned_prior_table() if args.learned else None
    text = report(raw, timing_rows, learned)
    (RESULTS / "accuracy.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
