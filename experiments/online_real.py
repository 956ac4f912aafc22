"""The online annotation loop (seed 000, Algorithm 1) on real item features with simulated workers.

    python -m experiments.online_real [--datasets labelme music_genre]
                                      [--experiments presets,noise,samplers] [--seeds 3] [--quick]

**Items.**  Every item of the dataset with a gold label and features -- the annotated items *and* the
held-out ``test`` split (nobody's real annotation is used as an answer; the workers are simulated):

* ``labelme``: 1000 + 1188 = 2188 images, 8 classes, 512-d CNN features; the 10 prototypes per class
  are drawn (seed 0) from the ``valid`` split (500 images, not in the pool);
* ``music_genre``: 700 + 300 = 1000 songs, 10 classes, 124-d audio features; there is no ``valid``
  split, so the 10 prototypes per class are drawn (seed 0) from the pool and **removed from it**
  (900 items are annotated).

**Workers.**  50 simulated workers whose confusions come from the dataset's own crowd annotations
against its gold (``simulate.dataset_workers``: pooled counts x 0.1 plus the counts of one real
worker with at least 20 gold answers, drawn at random per simulated worker; the real pools have 37
(labelme) and 21 (music_genre) such workers); ``uniform`` = the same diagonals with the errors spread
evenly (``simulate.uniform_noise_workers``).  Mean simulated accuracy: about 0.74 (labelme), 0.58
(music_genre).

**Worker prior.**  Appendix E: a homogeneous Dirichlet prior of strength 10 whose accuracy
"is estimated by pooling across all workers and classes" (0.7 for the AMT statistics).  Here it is
pooled the same way from the dataset's own annotations on gold items (``--prior-accuracy pooled``,
the default: 0.74 for labelme, 0.56 for music_genre); ``--prior-accuracy 0.7`` gives the presets'
fixed value (earlier runs with it: ``results/online/prior0.7``).

**Loop.**  5 HITs of 10 items per step (50 annotations per step: the configs' 5 x 40 would be
0.1-0.2 annotations per item per step on these small pools, against 0.0056 in the paper's 36k-image
splits), at most 3 annotations per item, C = 0.1, the presets' learner settings unchanged; greedy
assignment cap ``alpha = 2000 * N / 36000`` (scaled as in the sandbox) and uncapped.

Experiments as in ``online_sandbox.py`` (``presets``, ``noise``, ``samplers``; the ablations ``risk``,
``workers``, ``frequency`` on request), written to ``results/online/<dataset>_<experiment>.{csv,png}``;
8 seeds (3 for the slow ``lean`` preset).

``skills`` (on request): greedy task assignment where it has more to exploit -- with
``smooth_ratio = 0.1`` the pooled counts of these datasets (2547 / 2945 answers) swamp each real
worker's own (64 / 132 on average), so the simulated labelme workers are nearly identical
(across-worker sd of a class's accuracy 0.04 against 0.15 for the AMT pool); ``hetero`` pools use
``smooth_ratio = 1 / #real workers``, which gives the pooled average the weight of one worker as in
the AMT construction (0.1 x about 10 workers per group); and a pool of 10 workers (more answers per
worker, better skill estimates).  Random vs ``greedy`` vs the official per-HIT greedy.
``--quick``: one seed, at most 12 steps per run, results under ``results/online/quick``.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from crowdinfer import datasets, simulate
from experiments import online_common as oc

CONFIG = dict(
    datasets=("labelme", "music_genre"),
    prototypes_per_class=10,
    n_workers=50,
    hits_per_step=5,
    hit_size=10,
    seeds=8,
    lean_seeds=3,  # the lean preset trains 3 cross-validation folds per step: slowest by far
    prior_accuracy="pooled",  # or a number; "pooled": see the module docstring
    auc_upto=1.0,
    max_steps=10_000,
    experiments="presets,noise,samplers",
)


def load_pool(name, n_protos, seed=0):
    """Features (N, d), gold (N,), prototypes (P, d), their classes (P,), the annotations (for the
    workers) and a note on where the prototypes come from."""
    data = datasets.load(name)
    ann = data.annotations
    x = np.concatenate([ann.features, data.test.features]).astype(np.float32)
    y = np.concatenate([np.asarray(ann.gold), np.asarray(data.test.gold)]).astype(np.int32)
    keep = y >= 0
    x, y = x[keep], y[keep]
    k = ann.n_classes
    rng = np.random.default_rng(seed)
    if data.valid is not None and data.valid.gold is not None:
        vy = np.asarray(data.valid.gold)
        pick = np.concatenate([rng.choice(np.flatnonzero(vy == c), n_protos, replace=False)
                               for c in range(k)])
        px, py = data.valid.features[pick], vy[pick]
        note = f"{n_protos}/class from the valid split"
    else:
        pick = np.concatenate([rng.choice(np.flatnonzero(y == c), n_protos, replace=False)
                               for c in range(k)])
        px, py = x[pick], y[pick]
        rest = np.setdiff1d(np.arange(len(y)), pick)
        x, y = x[rest], y[rest]
        note = f"{n_protos}/class held out from the pool (no valid split)"
    return x, y, px.astype(np.float32), py.astype(np.int32), ann, note


def main(argv=None):
    cfg, out, wanted = oc.command_line(__doc__, CONFIG, argv, dict(seeds=1, max_steps=12),
                                       "1 seed, at most 12 steps per run")
    log = oc.log
    start = time.perf_counter()
    tables, meta = [], {}
    for name in cfg.datasets:
        t0 = time.perf_counter()
        x, y, px, py, ann, note = load_pool(name, cfg.prototypes_per_class)
        k = ann.n_classes
        probe = simulate.dataset_workers(ann, cfg.n_workers, seed=1000)
        log(f"{name}: {len(y)} items, {k} classes, d={x.shape[1]}, prototypes {note}; "
            f"simulated worker accuracy (seed-0 pool) "
            f"{np.diagonal(probe, axis1=1, axis2=2).mean():.3f}")
        n_real = int((ann.gold_confusion_counts().sum((1, 2)) >= 20).sum())

        def make_workers(m, seed, kind="structured"):
            # "hetero": the pooled counts weigh as much as one real worker (smooth_ratio
            # 1 / #real workers), the balance of the AMT construction (0.1 x ~10 workers/group)
            ratio = 1.0 / n_real if kind == "hetero" else 0.1
            return simulate.dataset_workers(ann, m, seed=1000 + seed, smooth_ratio=ratio)

        if cfg.prior_accuracy == "pooled":
            counts = ann.gold_confusion_counts().sum(0)
            prior_accuracy = float(np.trace(counts) / counts.sum())
        else:
            prior_accuracy = float(cfg.prior_accuracy)
        log(f"  worker prior: homogeneous, strength 10, accuracy {prior_accuracy:.3f} "
            f"({cfg.prior_accuracy})")
        chosen = [s for s in oc.specs(cfg.n_workers, len(y)) + oc.skill_specs(len(y))
                  if set(s[1]) & set(wanted)]
        runs = oc.run_specs(chosen, cfg, (x, px, py), make_workers, y, k, cfg.seeds,
                            max_steps=cfg.max_steps, base=dict(prior_accuracy=prior_accuracy),
                            seeds_for=lambda p: min(cfg.seeds, cfg.lean_seeds) if p == "lean"
                            else cfg.seeds)
        for e in wanted:
            tables.append(oc.write_experiment(runs, name, e, out, cfg.auc_upto, name))
        meta[name] = dict(items=len(y), classes=k, dims=x.shape[1], prototypes=note,
                          prior_accuracy=prior_accuracy, seeds=cfg.seeds,
                          seconds=time.perf_counter() - t0)
    oc.update_summary(out / "real_summary.csv", tables)
    pd.DataFrame(meta).T.to_csv(out / f"real_meta_{'_'.join(cfg.datasets)}_{'_'.join(wanted)}.csv")
    log(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
