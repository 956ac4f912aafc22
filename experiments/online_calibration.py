"""Online loop on pools built from ../shared/data: does the stopping rule keep its promise on any
pool size and step size, and are the finished items (risk < C = 0.1) at least 90% correct?

    python -m experiments.online_calibration [--quick]

Pools (items = annotated + test items with gold; workers = 50 simulated from the dataset's own
crowd, ``simulate.dataset_workers``; 10 prototypes per class as in ``online_real.py``):

* ``labelme`` (2188 items, 512-d CNN features), ``labelme-weak`` (the same with Gaussian noise of 3
  feature standard deviations), ``labelme-x4`` (8752 items: the pool four times, features jittered;
  the issue's 9k-item case), ``music_genre`` (900 items, 124-d).

Each run uses 50 answers per step (5 HITs of 10) and runs with ``early_stop=None`` up to
``--cap`` answers per item; both stopping rules are then read off the same trajectory: the old one
(beta = 5 *steps* without growth of the finished set) and the new one (``early_stop = 0.5`` answers
per item without growth).  "crowd at the same budget" is Dawid-Skene (``fit(model="dawid_skene")``)
on the same simulated crowd answering items chosen uniformly at random, with the number of answers
the run had used when it stopped.

Gold items (honeypots): each pool × preset runs three times: without gold, and twice with
``--gold-share`` (default 10%) of the pool's items carrying their gold label (``make_task(..., gold=...)``; drawn at
random, seed 0).  The gold items are annotated like the others; the EM and the learner never see
their gold; it fits the calibrator's ``T`` and ``eps`` at every update (the risk of the finished
set and of the stopping rule is the calibrated one): by maximum likelihood alone ("ML",
``online.loop.GOLD_CHECK = False``), and with ``T`` then raised until the finished gold items are
>= 1 - C correct by a Wilson lower bound, one standard error ("ML+check", the default).  With
gold the early-stop clock starts when the finished set first holds an item (it starts empty).  "finished precision (non-gold)" is measured
on the other items only -- in both runs, so the two are comparable.  Writes
``results/online_calibration.md``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import crowdinfer as ci
from crowdinfer import online, simulate
from crowdinfer.online import loop as online_loop
from crowdinfer.fit import fit
from experiments.online_real import load_pool

OUT = Path(__file__).parent / "results" / "online_calibration.md"
BETA_STEPS = 5
EARLY_STOP = online.OnlineConfig(n_classes=2).early_stop  # the new default, answers per item
GOLD_SEED = 0  # the draw of the gold items


def pools(quick: bool):
    out = {}
    for name in ["labelme", "music_genre"]:
        x, y, px, py, ann, _ = load_pool(name, 10)
        out[name] = (x, y, px, py, ann)
        if name == "labelme":
            rng = np.random.default_rng(0)
            out["labelme-weak"] = (x + 3.0 * x.std(0) * rng.normal(size=x.shape).astype(np.float32),
                                   y, px + 3.0 * x.std(0) * rng.normal(size=px.shape), py, ann)
            if not quick:
                big = np.concatenate([x + 0.1 * x.std(0) * rng.normal(size=x.shape) for _ in range(4)])
                out["labelme-x4"] = (big.astype(np.float32), np.tile(y, 4), px, py, ann)
    return out


def first_stop(history, n_items, gold: bool = False):
    """Indices of the steps where the old (5 steps) and the new (answers per item) rules fire.
    As in the loop (``online.loop``): with gold items the calibrated finished set starts empty, and
    the clock starts when it first holds an item."""
    fin = np.array([h["finished"] for h in history])
    ann = np.array([h["annotations"] for h in history])
    old = new = None
    best, best_step, best_ann = -1, 0, 0
    for t in range(len(history)):
        if fin[t] > best or (gold and max(fin[t], best) == 0):
            best, best_step, best_ann = fin[t], t, ann[t]
        if old is None and t - best_step >= BETA_STEPS:
            old = t
        if new is None and ann[t] - best_ann >= EARLY_STOP * n_items:
            new = t
    return old, new


def crowd_at_budget(confusion, y, budget, seed=0):
    """Dawid-Skene accuracy when the same simulated crowd answers ``budget`` uniformly random
    (item, worker) pairs."""
    rng = np.random.default_rng(seed)
    n, m = len(y), confusion.shape[0]
    items = rng.integers(0, n, budget)
    workers = rng.integers(0, m, budget)
    labels = np.array([rng.choice(confusion.shape[1], p=confusion[w, y[i]])
                       for i, w in zip(items, workers)])
    ann = ci.Annotations.from_arrays(items, workers, labels, n_items=n, n_workers=m,
                                     n_classes=confusion.shape[1], duplicates="keep")
    post = fit(ann, "dawid_skene")
    seen = ann.annotations_per_item() > 0
    # unseen items: the most frequent class (what a label with no answer can be)
    pred = np.where(seen, post.labels, np.argmax(np.bincount(post.labels[seen])))
    return float(np.mean(pred == y))


def gold_mask(n_items: int, share: float, seed: int = GOLD_SEED) -> np.ndarray:
    """Which items carry their gold label: ``round(share * n_items)`` drawn at random."""
    pick = np.random.default_rng(seed).permutation(n_items)[: int(round(share * n_items))]
    mask = np.zeros(n_items, bool)
    mask[pick] = True
    return mask


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="leave out labelme-x4 (8752 items), the slowest pool")
    parser.add_argument("--cap", type=float, default=1.6,
                        help="answers per item at which a run ends (default 1.6)")
    parser.add_argument("--presets", default="ds_model,efficient_annotation",
                        help="comma-separated presets (default ds_model,efficient_annotation)")
    parser.add_argument("--pools", default=None,
                        help="comma-separated pools to run (default: all; for a bounded check)")
    parser.add_argument("--gold-share", type=float, default=0.1,
                        help="share of the pool's items that carry gold in the gold runs "
                             "(default 0.1; 0: no gold runs)")
    parser.add_argument("--raw-risk", action="store_true",
                        help="calibrate_risk=False (seed 000's raw posterior); writes *_raw.md")
    args = parser.parse_args(argv)
    if args.raw_risk and args.gold_share > 0:
        parser.error("--raw-risk runs no calibrator: give --gold-share 0 with it")
    rows, summary = [], []
    wanted = None if args.pools is None else set(args.pools.split(","))
    for name, (x, y, px, py, ann) in pools(args.quick).items():
        if wanted is not None and name not in wanted:
            continue
        k = ann.n_classes
        confusion = simulate.dataset_workers(ann, 50, seed=0)
        has_gold = gold_mask(len(y), args.gold_share)
        nongold = np.where(has_gold, -1, y)  # the items every precision below is measured on
        for preset in args.presets.split(","):
            if preset != "ds_model" and name == "labelme-x4":
                continue  # the learner's 300 steps per update: too slow for this shared CPU
            cfg = online.preset(preset, k, early_stop=None, hits_per_step=5, hit_size=10,
                                calibrate_risk=not args.raw_risk)
            steps = int(args.cap * len(y) / cfg.slots)
            given = np.where(has_gold, y, -1)
            variants = [("none", None, True)] + ([(f"{args.gold_share:.0%} ML", given, False),
                                                  (f"{args.gold_share:.0%} ML+check", given, True)]
                                                 if args.gold_share > 0 else [])
            for label, gold, check in variants:
                online_loop.GOLD_CHECK = check
                task = online.make_task(x, 50, px, py, k, gold=gold)
                start = time.perf_counter()
                sess = online.run_simulation(cfg, task, confusion, y, seed=0, max_steps=steps)
                seconds = time.perf_counter() - start
                hist = sess.history
                done = np.asarray(sess.state.finished)
                decision = np.asarray(sess.state.decision)
                ok = nongold >= 0
                prec_nongold = (float(np.mean(decision[done & ok] == y[done & ok]))
                                if (done & ok).any() else None)
                old, new = first_stop(hist, len(y), gold is not None)
                for rule, t in (("old: 5 steps", old), (f"new: {EARLY_STOP} answers/item", new),
                                (f"no early stop (cap {args.cap}/item)", len(hist) - 1)):
                    if t is None:
                        rows.append([name, preset, label, rule, "did not fire"] + [None] * 6)
                        continue
                    h = hist[t]
                    crowd = crowd_at_budget(confusion, y, int(h["annotations"]))
                    nongold_t = h.get("finished_precision_nongold")
                    if gold is None:  # the gold-free run, scored on the same non-gold items
                        nongold_t = prec_nongold if t == len(hist) - 1 else None
                    rows.append([name, preset, label, rule, h["step"], h["per_item"],
                                 h["accuracy"], h["finished_precision"], nongold_t,
                                 h["finished"] / len(y), crowd])
                last = hist[-1]
                summary.append([name, preset, label, last["per_item"], prec_nongold,
                                float(done[ok].mean()), last.get("temperature_fitted"),
                                last.get("temperature", 1.0), last.get("floor", 0.0),
                                f"{seconds:.0f}"])
                print(name, preset, label, f"{seconds:.0f}s", summary[-1], rows[-1], flush=True)
    header = ["pool", "preset", "gold", "stopping rule", "stopped at step", "answers/item",
              "accuracy", "finished precision", "finished precision (non-gold)", "finished share",
              "crowd at same budget (DS, random)"]

    def fmt(v):
        if isinstance(v, float) and np.isnan(v):
            return "-"
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["# Online loop: stopping rule and finished-set precision on pools from ../shared/data",
             "", (__doc__ or "").split("\n\n", 1)[1].strip(), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    free = [r for r in rows if r[2] == "none"]
    bad = [r for r in free if isinstance(r[7], float) and r[7] < 0.9]
    lines += ["", f"Without gold, runs/rules whose finished set is below 90% correct: {len(bad)} of "
              f"{sum(isinstance(r[7], float) for r in free)}."]
    worse = [r for r in rows if r[3].startswith("new") and isinstance(r[6], float) and r[6] < r[10]]
    lines += [f"New rule: runs that stop less accurate than the crowd at the same budget: "
              f"{len(worse)} ({', '.join(f'{r[0]}/{r[1]}/gold {r[2]}' for r in worse) or 'none'})."]
    if args.gold_share > 0:
        head = ["pool", "preset", "gold", "answers/item", "finished precision (non-gold)",
                "finished share (non-gold)", "T fitted (ML)", "T", "eps", "seconds"]
        lines += ["", f"## At the cap: without gold and with {args.gold_share:.0%} of the items "
                  "as gold", "",
                  "Every precision and share on the items that carry no gold; T and eps: the "
                  "risk's map at the last update (without gold: the leave-one-annotation-out "
                  "temperature, no floor).  'ML': T and eps by maximum likelihood of the gold "
                  "labels (`online.loop.GOLD_CHECK = False`); 'ML+check' (the default): T then "
                  "raised until the finished gold items are >= 90% correct by a Wilson lower bound "
                  "(one standard error).", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in summary] + [""]
        for label in [v[0] for v in variants]:
            runs = [r for r in summary if r[2] == label]
            holds = [f"{r[0]}/{r[1]}" for r in runs if r[4] is not None and r[4] >= 0.9]
            fails = [f"{r[0]}/{r[1]} ({fmt(r[4])})" for r in runs if r[4] is not None and r[4] < 0.9]
            empty = [f"{r[0]}/{r[1]}" for r in runs if r[4] is None]
            lines += [f"- gold {label}: the finished set (non-gold items) is >= 90% correct on "
                      f"{len(holds)} of {len(runs)} runs ({', '.join(holds) or 'none'}); below on "
                      f"{', '.join(fails) or 'none'}; empty on {', '.join(empty) or 'none'}."]
    out = OUT.with_name(OUT.stem + "_raw.md") if args.raw_risk else OUT
    lines.insert(2, "Risk: " + ("raw posterior (`calibrate_risk=False`, seed 000)." if args.raw_risk
                                else "posterior tempered by the leave-one-annotation-out temperature "
                                     "(`calibrate_risk=True`, the default) without gold; with gold "
                                     "items, mapped by the calibrator fitted on them.") + "\n")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
