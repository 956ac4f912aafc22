"""The learned label prior (``label_prior="classifier"``, models/learned_prior.py) on the two
datasets of ../shared/data with item features, and on weak versions of their features: accuracy with
and without it, for Dawid-Skene and BCC, an MLP and a logistic regression; the learned weight, the
L2 strength cross-validation chose, the classifier alone on the held-out test items, the seconds of
each fit; and the logistic prior's time at 5000 items beside one logistic regression trained alone.

Run: ``python3 -m experiments.learned_prior`` (``--models bcc`` / ``--timing-only`` run a part;
rows are cached in ``experiments/results/learned_prior_raw.json``, so parts can run side by side).
Writes ``experiments/results/learned_prior.md``.  Gold labels are used for scoring only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from scipy import stats

from crowdinfer import simulate
from crowdinfer.fit import fit
from crowdinfer.posterior import expected_accuracy

from .accuracy import RESULTS, load, table

RAW = RESULTS / "learned_prior_raw.json"
KINDS = ("original", "noisy", "projected", "random")
MODELS = ("dawid_skene", "bcc")
CLASSIFIERS = (("MLP (128,)", (128,)), ("logistic", ()))

# one fresh process per timing: 'cold' is its first call (with compilation), 'warm' the second
TIMING = r"""
import json, sys, time
import numpy as np
import crowdinfer as ci
what = sys.argv[1]
task = ci.datasets.synthetic(n_items=5000, n_workers=50, n_classes=5, annotations_per_item=2,
                             seed=0)
x = np.random.default_rng(0).normal(size=(5000, 128)).astype(np.float32)
x[:, :5] += 2.0 * np.eye(5)[task.true_labels]
if what == "prior":
    from crowdinfer.fit import fit
    def once():
        return fit(task.annotations, "dawid_skene", label_prior="classifier", features=x,
                   hidden=()).label_probs
else:  # one logistic regression on the true labels, L-BFGS (the prior's own trainer)
    import jax, jax.numpy as jnp
    from crowdinfer.models.learned_prior import minimise_lbfgs
    from crowdinfer.ops import standardise
    z = jnp.asarray(standardise(x)[0])
    y = jax.nn.one_hot(jnp.asarray(task.true_labels), 5)
    def loss(p):
        logits = z @ p["w"] + p["b"]
        return (-jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), -1))
                + 0.5e-4 * jnp.sum(p["w"] ** 2))
    train = jax.jit(lambda p: minimise_lbfgs(loss, p, 500))
    def once():
        p = train({"w": jnp.zeros((128, 5)), "b": jnp.zeros(5)})
        return jax.block_until_ready(p)
times = []
for _ in range(2):
    start = time.perf_counter()
    once()
    times.append(time.perf_counter() - start)
import os
print(json.dumps({"cold": times[0], "warm": times[1], "load": list(os.getloadavg())}))
"""


def timing(what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", TIMING, what], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def rows(models=MODELS) -> list[list]:
    out = []
    for name in ("labelme", "music_genre"):
        ann, gold, d = load(name)
        for kind in KINDS:
            x = ann.features if kind == "original" else simulate.weak_features(ann.features, kind)
            for model in models:
                plain_post = fit(ann, model)
                plain, plain_labels = expected_accuracy(plain_post.label_probs, gold), \
                    plain_post.labels
                for label, hidden in CLASSIFIERS:
                    start = time.perf_counter()
                    post = fit(ann, model, label_prior="classifier", features=x, hidden=hidden)
                    seconds = time.perf_counter() - start
                    acc = expected_accuracy(post.label_probs, gold)
                    params = post.classifier["params"]
                    alone = (float(np.mean(post.predict(d.test.features) == d.test.gold))
                             if kind == "original" else None)
                    guard = params["guard"]
                    # the gold items whose label the prior changed: better / worse, sign test
                    has = gold >= 0
                    right_with = post.labels[has] == gold[has]
                    right_without = plain_labels[has] == gold[has]
                    better = int(np.sum(right_with & ~right_without))
                    worse = int(np.sum(~right_with & right_without))
                    p = (float(stats.binomtest(better, better + worse).pvalue)
                         if better + worse else 1.0)
                    out.append([name, kind, model, label, plain, acc, acc - plain,
                                f"{float(guard['gain']):.1f} ± {float(guard['se']):.1f}",
                                "yes" if bool(guard["kept"]) else "no",
                                float(params["weight"]["scale"]), f"{float(params['decay']):g}",
                                alone, seconds, list(os.getloadavg()),
                                f"{float(guard['flip_gain']):.1f} ± {float(guard['flip_se']):.1f}"
                                f" ({int(guard['flipped'])})",
                                float(guard["evidence_scale"]), better, worse, p])
                    print(out[-1], flush=True)
                    save({"/".join(out[-1][:4]): out[-1]})
    return out


def save(entries: dict):
    raw = json.loads(RAW.read_text()) if RAW.exists() else {}
    raw.update(entries)
    RAW.write_text(json.dumps(raw, indent=1))


def timings(rounds: int = 2) -> dict:
    """The prior and the classifier alone in fresh processes, interleaved (prior, alone, prior,
    alone, ...) so that both see the same load."""
    out = {"prior": [], "alone": []}
    for _ in range(rounds):
        for what in ("prior", "alone"):
            out[what].append(timing(what))
            print(what, out[what][-1], flush=True)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--write-only", action="store_true", help="the md from the raw rows")
    args = parser.parse_args()
    if args.write_only:
        write(json.loads(RAW.read_text()))
        return
    if args.timing_only:
        save({"timing": timings()})
        return
    rows(args.models)
    if args.no_timing:
        return
    raw = json.loads(RAW.read_text())
    if not isinstance(raw.get("timing"), dict) or not isinstance(raw["timing"].get("prior"), list):
        save({"timing": timings()})
        raw = json.loads(RAW.read_text())
    write(raw)


def write(raw: dict):
    order = {(n, k, m, c): i for i, (n, k, m, c) in enumerate(
        (n, k, m, c) for n in ("labelme", "music_genre") for k in KINDS for m in MODELS
        for c, _ in CLASSIFIERS)}
    found = sorted((v for k, v in raw.items() if k != "timing"),
                   key=lambda r: order[tuple(r[:4])])
    header = ["dataset", "features", "model", "classifier", "without", "with", "difference",
              "held-out gain ± se (nats)", "on changed labels ± se (items)", "kept",
              "weight a (held-out)", "a (evidence)", "L2 chosen", "classifier alone (test items)",
              "gold items changed: better / worse (sign test p)", "seconds", "load (1 min)"]
    shown = [r[:8] + [r[14], r[8], r[9], r[15], r[10], r[11],
                      f"{r[16]} / {r[17]} ({r[18]:.2g})", r[12], f"{r[13][0]:.1f}"]
             for r in found]
    hurt_rows = [r for r in found if r[6] < 0]
    hurt_p = ", ".join(f"{r[16]}/{r[17]} p={r[18]:.2g}" for r in hurt_rows)
    hurt = [f"{r[0]}/{r[1]}/{r[2]}/{r[3]} ({r[6]:+.3f})" for r in found if r[6] < 0]
    gained = [r[6] for r in found if r[6] > 0]
    worst = min(r[6] for r in found) if found else float("nan")
    done = {tuple(r[:4]) for r in found}
    missing = ["/".join(k) for k in order if k not in done]
    timing_rows = []
    timing = raw.get("timing") or {"prior": [], "alone": []}
    for i, (p, a) in enumerate(zip(timing["prior"], timing["alone"])):
        timing_rows.append([i + 1, p["cold"], p["warm"], a["cold"], a["warm"],
                            p["cold"] / a["cold"], p["warm"] / a["warm"],
                            f"{p['load'][0]:.1f} / {a['load'][0]:.1f}"])
    text = "\n".join([
        "# Learned label prior", "",
        "`fit(ann, model, label_prior=\"classifier\", features=x, hidden=...)` against "
        "`fit(ann, model)` (accuracy on the gold items; the fits never see gold). Two stages, a "
        "guard and a cross-validated weight (models/learned_prior.py): the model without the "
        "classifier to convergence; 5 cross-fitted classifiers trained on its posterior, the L2 "
        "strength chosen on the path 1, 0.1, 0.01, 1e-3, 1e-4 (warm starts, one jit, folds "
        "vmapped) by their held-out cross-entropy against that posterior; the prior "
        "`log_softmax(a * l + b)`. The guard: the answers of every item split in two halves; on "
        "each half the model without the classifier and (a, b) (by the marginal likelihood of "
        "that half's annotations) are refitted, and the other half's answers are predicted with "
        "and without the classifier's prior. 'held-out gain' is the summed gain in log "
        "likelihood of the held-out answers over both halves and its standard error (paired over "
        "items); 'on changed labels' the same over the items whose label the prior changed in "
        "the half fits (their number in brackets). The classifier is kept only when both gains "
        "exceed 2 standard errors and 1 nat; otherwise the result is exactly the model without "
        "it (stage 1: same labels and probabilities). Where kept, the weight a is the one that "
        "predicts the guard's held-out answers best (one a over both halves), b the class "
        "offsets maximising the full data's marginal likelihood at that a; 'a (evidence)' is "
        "the in-sample marginal-likelihood weight, for comparison (the weight used before). No "
        "constant here was tuned on gold labels.",
        "",
        "noisy = features + 3 sd Gaussian noise; projected = a random 2-d projection; random = "
        "16 columns of pure noise (simulate.weak_features). 'classifier alone': the prior's "
        "predictor (fold ensemble, weighted) on the dataset's held-out test items (original "
        "features only; where the guard switched it off it predicts the class proportions). "
        "'gold items changed': of the gold items whose argmax label differs with and without "
        "the prior, how many the prior made right / wrong, and the two-sided sign (binomial) "
        "test of that split. Seconds: each fit on the shared 2-core CPU, compilation included "
        "where the shapes are new; the load average beside it.", "",
        table(header, shown), "",
        f"Cases where the classifier prior lowers accuracy: {len(hurt)} of {len(found)}"
        + (": " + ", ".join(hurt) if hurt else "") + f". Worst difference {worst:+.3f}; "
        f"{len(gained)} cases gain (up to {max(gained, default=0):+.3f})"
        + (f". Gold items the prior changed in the hurting cases (better/worse): {hurt_p}."
           if hurt_rows else "."),
        "",
        *(["Not measured (the run did not finish in time): " + ", ".join(missing) + ".", ""]
          if missing else []),
        "## Time at 5000 items", "",
        "Logistic-regression prior (`hidden=()`, everything: stage 1, 5 folds x 5 L2 strengths, "
        "the weight, the guard's two half fits, the held-out weight, stage 2) at 5000 items, "
        "128-d features, K = 5, "
        "2 answers per item (synthetic), against one logistic regression trained alone on the "
        "true labels of the same items (L-BFGS, the prior's own optimiser, one L2 strength). "
        "Each in a fresh process: 'cold' its first call (with compilation), 'warm' the second; "
        "the two run interleaved, with the load average (1 min) at the end of each. On this "
        "2-core machine a load above 2 means other jobs ran at the same time: both columns are "
        "slowed alike (interleaved), so the ratios hold better than the seconds.", "",
        table(["round", "prior cold (s)", "prior warm (s)", "alone cold (s)", "alone warm (s)",
               "cold ratio", "warm ratio", "load prior / alone"], timing_rows), "",
        "The prior fits 25 classifiers on soft labels (5 folds x 5 L2 strengths) and three crowd "
        "models (stage 1 and the guard's two halves); the classifier alone is one L-BFGS fit "
        "on hard labels at one strength, which converges in about 20 iterations here: "
        "the prior costs seconds (a first call, compilation included) and under a second warm, "
        "but it is not within a small factor of training that classifier alone."
        if timing_rows else "Not measured yet.", ""])
    (RESULTS / "learned_prior.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
