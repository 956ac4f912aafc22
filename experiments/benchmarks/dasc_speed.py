"""How long the DASC base models take to train on LabelMe (seed 004 settings), compile included.

    python -m experiments.benchmarks.dasc_speed [--repeats 3]

For each base model (Crowdlayer, Anno-Reg, WDN) on labelme (1000 items x 59 workers, 512-d
features; batch 512, 25 epochs, the paper's settings) this times

* one training of 1 seed and of 5 seeds side by side (vmap): the first call (trace + compile +
  run) and the best of ``--repeats`` later calls (run only); compile = first - run;
* one DASC self-training iteration (prediction of the 57,000 free cells, the jitted selection, 25
  more epochs) for 5 seeds, and the selection alone.

Writes experiments/results/dasc_speed.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import crowdinfer as ci
from crowdinfer import dasc

OUT = Path(__file__).resolve().parents[1] / "results" / "dasc_speed.md"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(jax.tree.leaves(out))
    return time.perf_counter() - start


def train(ann, model, seeds):
    return lambda: dasc.train_base(ann, model, seeds=seeds).params


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    ann = ci.datasets.load("labelme").annotations
    rows = []
    for model in dasc.BASE_MODELS:
        for seeds in (1, 5):
            first = timed(train(ann, model, seeds))
            run = min(timed(train(ann, model, seeds)) for _ in range(args.repeats))
            rows.append((model, f"train, {seeds} seed{'s' * (seeds > 1)}", first, run))
            print(rows[-1], flush=True)
        first = timed(lambda: dasc.self_train(ann, model, "dasc", 1000, iterations=1,
                                              seeds=5).params)
        both = min(timed(lambda: dasc.self_train(ann, model, "dasc", 1000, iterations=1,
                                                 seeds=5).params) for _ in range(args.repeats))
        base = min(timed(train(ann, model, 5)) for _ in range(args.repeats))
        rows.append((model, "+1 DASC iteration, 5 seeds", np.nan, both - base))
        print(rows[-1], flush=True)

    net = dasc.train_base(ann, "crowdlayer", seeds=1)
    logp = jax.numpy.log(jax.numpy.asarray(net.annotator_probs(ann.features)[0]))
    observed = jax.numpy.asarray(dasc.dense_annotations(ann)[1])
    sel = lambda: dasc.select_pseudo_annotations(jax.random.key(0), logp, observed, 1000,  # noqa
                                                 "dasc")
    first = timed(sel)
    run = min(timed(sel) for _ in range(max(args.repeats, 10)))
    rows.append(("-", "DASC selection (1000 of 57,000 cells)", first, run))

    lines = [
        "# DASC base models: training time on LabelMe",
        "",
        "`python -m experiments.benchmarks.dasc_speed`. labelme: 1000 items, 59 workers, 2547 "
        "annotations, 512-d features; seed 004's LabelMe settings (MLP 128 units, dropout 0.5, "
        "Adam 1e-3, batch 512, 25 epochs = 50 steps; WDN + 200 full-batch steps on the worker "
        "weights). *first call* = trace + compile + run; *run* = best of "
        f"{args.repeats} later calls; *compile* = first - run. Seeds run side by side (vmap).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} "
        f"({jax.default_backend()}); shared with other jobs, so times carry some noise.",
        "",
        "| model | what | first call (s) | run (s) | compile (s) |",
        "|---|---|---|---|---|",
    ]
    for model, what, first, run in rows:
        f = "" if np.isnan(first) else f"{first:.2f}"
        c = "" if np.isnan(first) else f"{first - run:.2f}"
        lines.append(f"| {model} | {what} | {f} | {run:.2f} | {c} |")
    worst = max(first for _, what, first, _ in rows if what.startswith("train"))
    lines += ["", f"Slowest base-model training, compile included: {worst:.1f} s "
              f"({'under' if worst < 60 else 'OVER'} the one-minute target)."]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
