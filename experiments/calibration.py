"""Calibrated probabilities on the 12 datasets of ../shared/data (issue 14, item 4).

    python3 -m experiments.calibration [--datasets rte face ...] [--splits 5]

Seed 000 promises that the items whose risk ``1 - max_k q(k)`` is below C = 0.1 are at least 90%
correct.  For each dataset this writes to ``results/calibration.md``:

1. **The ceiling without gold.**  The share of gold items whose gold label got no vote at all, and
   the share of the default's confident items (risk < 0.1) that are unanimous but wrong: nothing
   that sees only annotations can tell them from correct unanimous items.  And the best precision
   of any set of >= 30 items ranked by the default's confidence (what any order-preserving map of
   its probabilities could reach, measured on every gold item: an oracle bound).
2. **The default** ``fit(ann)``: ECE and precision at risk < 0.1, raw (``temper_probs=False``) and
   as returned (tempered by its gold-free temperature).
3. **With some gold**: 10% and 25% of the gold items are given (``Annotations.gold``; the rest set
   to -1), ``--splits`` random draws with fixed seeds; ``fit(ann, calibrate=True)`` (the gold only
   calibrates) and ``fit(ann, calibrate=True, use_gold=True)`` (the gold is also clamped; cross-
   fitted with 5 folds), both scored ONLY on the other gold items, beside the default on the same
   items.  Precision is pooled over the splits (right / items at risk < 0.1, summed over splits).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np

import crowdinfer as ci
from crowdinfer.calibration import calibration_report
from experiments.accuracy import DATASETS, fmt, load, table

OUT = Path(__file__).parent / "results" / "calibration.md"
RISK = 0.1
FRACTIONS = (0.10, 0.25)
SPLITS = 5
TOP_MIN = 30  # the ceiling's smallest ranked set
VARIANTS = {"calibrate": dict(calibrate=True),
            "calibrate+use_gold": dict(calibrate=True, use_gold=True)}


def votes_of(ann) -> np.ndarray:
    """(N, K) vote counts."""
    v = np.zeros((ann.n_items, ann.n_classes))
    np.add.at(v, (ann.item, ann.label), 1.0)
    return v


def ceiling(ann, gold, probs) -> dict:
    """Gold-free limits (module docstring, 1)."""
    has = np.flatnonzero(gold >= 0)
    v = votes_of(ann)[has]
    g = gold[has]
    zero = v[np.arange(len(has)), g] == 0
    p = np.asarray(probs, np.float64)[has]
    conf, right = p.max(-1), p.argmax(-1) == g
    sure = 1.0 - conf < RISK
    unanimous = (v > 0).sum(-1) == 1
    order = np.argsort(-conf, kind="stable")
    top = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    return {"zero_vote": float(zero.mean()),
            "unanimous_wrong": float((sure & unanimous & ~right).sum() / max(sure.sum(), 1)),
            "wrong_sure": int((sure & ~right).sum()),
            "wrong_sure_zero_vote": int((sure & ~right & zero).sum()),
            "best_top": float(top[TOP_MIN - 1:].max()) if len(top) >= TOP_MIN else None}


def given_gold(gold, fraction: float, split: int) -> np.ndarray:
    """The gold a user gives: ``fraction`` of the gold items drawn with seed ``(split, percent)``,
    the others -1."""
    has = np.flatnonzero(gold >= 0)
    rng = np.random.default_rng([split, int(round(100 * fraction))])
    pick = rng.choice(has, int(round(fraction * len(has))), replace=False)
    out = np.full_like(gold, -1)
    out[pick] = gold[pick]
    return out


def split_scores(ann, gold, fraction: float, split: int, variants=VARIANTS, default_probs=None):
    """``{variant: report}`` on the gold items NOT given, for one split; ``"default"`` is the
    default fit's probabilities on the same items (``default_probs``: computed if None)."""
    given = given_gold(gold, fraction, split)
    held = np.where(given >= 0, -1, gold)
    if default_probs is None:
        default_probs = ci.fit(ann).label_probs
    out = {"default": calibration_report(default_probs, held, risk=RISK)}
    for name, options in variants.items():
        start = time.perf_counter()
        post = ci.fit(dataclasses.replace(ann, gold=given), **options)
        out[name] = {**calibration_report(post.label_probs, held, risk=RISK),
                     **{k: post.calibration[k] for k in ("temperature", "floor")},
                     "seconds": time.perf_counter() - start}
    return out


def pooled(reports: list[dict]) -> dict:
    """Precision pooled over splits, its smallest per-split value, mean items at risk < 0.1,
    mean ECE and accuracy."""
    n = np.array([r["n_sure"] for r in reports])
    right = sum(r["precision"] * r["n_sure"] for r in reports if r["precision"] is not None)
    per = [r["precision"] for r in reports if r["precision"] is not None]
    return {"precision": right / n.sum() if n.sum() else None,
            "min_precision": min(per) if per else None, "n_sure": float(n.mean()),
            "ece": float(np.mean([r["ece"] for r in reports])),
            "accuracy": float(np.mean([r["accuracy"] for r in reports])),
            "n_gold": float(np.mean([r["n_gold"] for r in reports])),
            "temperature": float(np.mean([r.get("temperature", 1.0) for r in reports])),
            "floor": float(np.mean([r.get("floor", 0.0) for r in reports]))}


def evaluate(name: str, splits: int = SPLITS, fractions=FRACTIONS, variants=VARIANTS) -> dict:
    ann, gold, _ = load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = ci.fit(ann)
        raw = ci.fit(ann, temper_probs=False)
        entry = {"model": post.selection["chosen"], "T": post.selection["temperature"],
                 "ceiling": ceiling(ann, gold, post.label_probs),
                 "raw": calibration_report(raw.label_probs, gold, risk=RISK),
                 "tempered": calibration_report(post.label_probs, gold, risk=RISK),
                 "given": {}}
        for fraction in fractions:
            runs = [split_scores(ann, gold, fraction, s, variants, post.label_probs)
                    for s in range(splits)]
            entry["given"][fraction] = {v: pooled([r[v] for r in runs])
                                        for v in ["default", *variants]}
            print(name, fraction, {v: (fmt(x["precision"]), round(x["n_sure"]), fmt(x["ece"]))
                                   for v, x in entry["given"][fraction].items()}, flush=True)
    return entry


def holds(x: dict) -> str:
    if x["precision"] is None:
        return "no item"
    return "yes" if x["precision"] >= 0.9 else "no"


def report(results: dict, splits: int) -> str:
    out = ["# Calibrated probabilities (issue 14, item 4)", "",
           "Generated by `python3 -m experiments.calibration` (crowdinfer/calibration.py). Seed "
           "000's promise: items with risk 1 - max q < 0.1 are >= 90% correct. ECE: 15 equal-width "
           "confidence bins. 'precision': accuracy of the gold items at risk < 0.1; 'items': how "
           "many.", "",
           "## Without gold: the default and its ceiling", "",
           "'no vote': share of gold items whose gold label got no vote. 'unanimous wrong': share "
           "of the default's items at risk < 0.1 that every annotator labelled alike, and wrongly. "
           "'wrong (no vote)': the default's wrong items at risk < 0.1 (of which the gold got no "
           f"vote). 'best top-{TOP_MIN}+': the highest precision of the n most confident items "
           f"over n >= {TOP_MIN}, on all gold items -- an oracle bound for any map of the "
           "default's probabilities that keeps their order (every temperature, every floor). "
           "'raw': `fit(ann, temper_probs=False)`; 'tempered': `fit(ann)` as returned (its "
           "gold-free temperature T).", ""]
    rows = []
    for n, e in results.items():
        c = e["ceiling"]
        rows.append([n, e["model"], e["T"], c["zero_vote"], c["unanimous_wrong"],
                     f"{c['wrong_sure']} ({c['wrong_sure_zero_vote']})", c["best_top"],
                     e["raw"]["ece"], e["tempered"]["ece"], e["raw"]["precision"],
                     e["raw"]["n_sure"], e["tempered"]["precision"], e["tempered"]["n_sure"],
                     e["raw"]["n_gold"]])
    out += [table(["dataset", "default model", "T", "no vote", "unanimous wrong",
                   "wrong (no vote)", f"best top-{TOP_MIN}+", "ECE raw", "ECE tempered",
                   "precision raw", "items raw", "precision tempered", "items tempered",
                   "gold items"], rows), ""]
    low = [n for n, e in results.items() if e["tempered"]["precision"] is not None
           and e["tempered"]["precision"] < 0.9]
    bound = [n for n, e in results.items() if e["ceiling"]["best_top"] is not None
             and e["ceiling"]["best_top"] < 0.9]
    out += [f"Without gold the default breaks the promise on: {', '.join(low) or 'none'}. "
            f"No order-preserving map of the default's probabilities can give {TOP_MIN} or more "
            f"items at >= 90% precision on: {', '.join(bound) or 'none'} (best top-{TOP_MIN}+ "
            "< 0.9); there a calibrated map can only keep the promise by putting (almost) no item "
            "below risk 0.1.", ""]
    for fraction in next(iter(results.values()))["given"]:
        pct = int(round(100 * fraction))
        out += [f"## With {pct}% of the gold items given", "",
                f"{splits} random draws of the given gold (seeds fixed); every number is on the "
                "OTHER gold items only. 'calibrate': `fit(ann, calibrate=True)` (the gold fits T "
                "and eps only; labels = the default's). 'calibrate+use_gold': `fit(ann, "
                "calibrate=True, use_gold=True)` (the gold is also clamped; T and eps from 5-fold "
                "cross-fits). Precision pooled over the draws (min: the worst draw); items, ECE, "
                "accuracy, T and eps: means over the draws.", ""]
        rows = []
        for n, e in results.items():
            g = e["given"][fraction]
            d, c, u = g["default"], g["calibrate"], g["calibrate+use_gold"]
            rows.append([n, d["ece"], c["ece"], u["ece"], d["precision"], d["n_sure"],
                         c["precision"], c["min_precision"], c["n_sure"], u["precision"],
                         u["min_precision"], u["n_sure"], d["accuracy"], c["accuracy"],
                         u["accuracy"], c["temperature"], c["floor"], holds(c), holds(u)])
        out += [table(["dataset", "ECE default", "ECE cal", "ECE cal+gold", "precision default",
                       "items default", "precision cal", "min", "items cal",
                       "precision cal+gold", "min", "items cal+gold", "accuracy default",
                       "accuracy cal", "accuracy cal+gold", "T cal", "eps cal", "holds cal",
                       "holds cal+gold"],
                      [[fmt(v, 1) if isinstance(v, float) and i in (5, 8, 11) else v
                        for i, v in enumerate(r)] for r in rows]), ""]
        for variant in ("calibrate", "calibrate+use_gold"):
            got = {n: e["given"][fraction][variant] for n, e in results.items()}
            yes = [n for n, x in got.items() if holds(x) == "yes"]
            none = [n for n, x in got.items() if holds(x) == "no item"]
            no = [n for n, x in got.items() if holds(x) == "no"]
            out += [f"- {variant}, {pct}% gold: the promise holds (pooled precision >= 0.9) on "
                    f"{', '.join(yes) or 'none'}; no item at risk < 0.1 on "
                    f"{', '.join(none) or 'none'}; it does NOT hold on {', '.join(no) or 'none'}."]
        out += [""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--splits", type=int, default=SPLITS)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    results = {name: evaluate(name, args.splits) for name in args.datasets}
    text = report(results, args.splits)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
