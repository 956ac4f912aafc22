"""The online annotation loop (seed 000, Algorithm 1) in a small ImageNet100-style sandbox.

    python -m experiments.online_sandbox [--experiments presets,noise,samplers,risk,workers,frequency]
                                         [--seeds 3] [--quick]

**Classes and workers.**  The classes of two of the original sandbox splits,
``imagenet_split_1`` (*Vertebrate*, 18 classes) and ``imagenet_split_2`` (*Insect+Fungus*, 13
classes) -- 31 classes in 2 AMT groups (``../shared/data/imagenet100_amt/experiments``).  Workers:
50 simulated AMT workers with *structured* noise for exactly these classes
(``simulate.amt_structured_workers``: appendix G -- pooled group counts x 0.1 plus one real worker's
counts per group, restricted to the 31 classes, 0.03 cross-group mass; mean accuracy 0.68), or the
*uniform*-noise workers with the same diagonals (``simulate.uniform_noise_workers``).  HITs as in
the configs: 5 HITs of 40 items per step, 10 prototypes per class, at most 3 annotations per item,
risk threshold C = 0.1.

**Item features** (synthetic, d = 32; ``make_features``), built so that the learner confuses what
the humans confuse:

1. a centre per AMT group, ``c_g ~ N(0, 3^2 I)`` (the two groups are far apart, as cross-group
   human confusion is rare);
2. a latent vector per class ``z_k ~ N(0, I)``, smoothed towards the classes humans confuse it
   with: ``u_k = z_k + lam * sum_l P[k, l] z_l`` where ``P`` is the row-normalised symmetrised
   off-diagonal *pooled* AMT confusion between classes of the same group (``lam = 1``), then
   rescaled to unit root-mean-square per coordinate; the class mean is ``m_k = c_g(k) + u_k``;
3. items ``x_i = m_{y_i} + sigma * eps_i``, ``eps_i ~ N(0, I)``, ``sigma = 1.25``: a linear
   classifier (LDA) trained on the gold labels of all items gets 0.86 on fresh draws (the script
   prints the value for the settings used), and its confusions correlate with the human ones
   (Spearman 0.52 over same-group class pairs);
4. 150 items per class (4650 items) and 10 prototypes per class drawn from the same distribution.

The sandbox (class means, items, prototypes) is fixed (``--data-seed``); a run's seed draws the
worker pool, the workers' answers and the loop's item sampling / learner initialisation.

Experiments (``--experiments``), each written to ``results/online/sandbox_<name>.csv`` (one row
per loop step and seed) and ``.png`` (mean curve over seeds, min-max band, ``x`` where early
stopping with beta = 5 would have stopped; every curve run with ``early_stop=None``):

* ``presets`` -- ds_model, lean, improved_lean, efficient_annotation (random sampler);
* ``noise`` -- ds_model and efficient_annotation under structured vs uniform noise;
* ``samplers`` -- random vs greedy task assignment (eq. 7; cap alpha scaled from the paper's 2000
  per 36k items to ``alpha = 2000 * N / 36000`` = 258 here, and the uncapped 2000) --
  ``crowdinfer``'s ``sampler="greedy"`` (item by item) and ``greedy_hit``, the official per-HIT
  greedy of seed 001 (``online_common.hit_greedy_proposer``) -- vs BALD, for
  efficient_annotation and ds_model;
* ``risk`` -- efficient_annotation with C in {0.05, 0.1, 0.2} (sec. 4.5.8);
* ``workers`` -- efficient_annotation with 10, 25, 50 workers (sec. 4.5.6);
* ``frequency`` -- efficient_annotation with 2, 5, 10 HITs per step (sec. 4.5.2).

``--quick``: one seed, 40 items per class, for a smoke run (results under ``results/online/quick``).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import yaml

from crowdinfer import simulate
from crowdinfer.datasets import shared_data_dir
from experiments import online_common as oc

CONFIG = dict(
    splits=("imagenet_split_1", "imagenet_split_2"),
    items_per_class=150,
    prototypes_per_class=10,
    dims=32,
    group_scale=3.0,
    class_scale=1.0,
    smoothing=1.0,  # lam
    sigma=1.25,
    data_seed=0,
    n_workers=50,
    hits_per_step=5,
    hit_size=40,
    seeds=3,
    auc_upto=1.0,
    experiments="presets,noise,samplers,risk,workers,frequency",
)


# --------------------------------------------------------------------------- the sandbox
def load_classes(splits):
    folder = shared_data_dir() / "imagenet100_amt" / "experiments"
    wnids = []
    for split in splits:
        wnids += yaml.safe_load((folder / f"{split}.yaml").read_text())["wnids"].split()
    return wnids


def human_similarity(wnids, stats):
    """Row-normalised symmetrised off-diagonal pooled AMT confusion within groups (K, K), the
    pooled confusion itself (K, K) and the group of each class."""
    index = [stats.wnids.index(w) for w in wnids]
    group_of = {w: g for g, members in enumerate(stats.groups) for w in members}
    groups = np.array([group_of[w] for w in wnids])
    pooled = sum(v.sum(0) for v in stats.group_workers)[np.ix_(index, index)]
    confusion = pooled / np.maximum(pooled.sum(1, keepdims=True), 1.0)
    sym = (confusion + confusion.T) / 2
    np.fill_diagonal(sym, 0.0)
    sym = sym * (groups[:, None] == groups[None, :])
    return sym / np.maximum(sym.sum(1, keepdims=True), 1e-12), confusion, groups


def make_features(groups, similarity, n_per_class, n_protos, dims, group_scale, class_scale,
                  smoothing, sigma, seed):
    """Class means with group structure, items and prototypes (see the module docstring)."""
    rng = np.random.default_rng(seed)
    k = len(groups)
    _, group_index = np.unique(groups, return_inverse=True)
    centres = rng.normal(0.0, group_scale, (group_index.max() + 1, dims))
    z = rng.normal(0.0, 1.0, (k, dims))
    u = z + smoothing * similarity @ z
    u /= np.sqrt((u ** 2).mean(1, keepdims=True))
    means = centres[group_index] + class_scale * u
    y = np.repeat(np.arange(k), n_per_class)
    x = means[y] + sigma * rng.normal(size=(len(y), dims))
    py = np.repeat(np.arange(k), n_protos)
    px = means[py] + sigma * rng.normal(size=(len(py), dims))
    return means, x.astype(np.float32), y.astype(np.int32), px.astype(np.float32), py.astype(np.int32)


def sandbox_difficulty(means, sigma, y, x, human, groups, seed):
    """Accuracy of a linear classifier (LDA) trained on all gold labels, on fresh draws; Spearman
    correlation of its same-group confusions with the human ones."""
    from scipy.stats import spearmanr
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    rng = np.random.default_rng(seed + 99)
    fresh = means[y] + sigma * rng.normal(size=x.shape)
    pred = LinearDiscriminantAnalysis().fit(x, y).predict(fresh)
    k = means.shape[0]
    conf = np.zeros((k, k))
    np.add.at(conf, (y, pred), 1.0)
    conf /= conf.sum(1, keepdims=True)
    same = (groups[:, None] == groups[None, :]) & ~np.eye(k, dtype=bool)
    return float((pred == y).mean()), float(spearmanr(conf[same], human[same]).statistic)


def main(argv=None):
    cfg, out, wanted = oc.command_line(__doc__, CONFIG, argv, dict(seeds=1, items_per_class=40),
                                       "1 seed, 40 items per class", experiments=oc.EXPERIMENTS[:6])
    log = oc.log

    stats = simulate.load_amt()
    wnids = load_classes(cfg.splits)
    k = len(wnids)
    similarity, human, groups = human_similarity(wnids, stats)
    means, x, y, px, py = make_features(groups, similarity, cfg.items_per_class,
                                        cfg.prototypes_per_class, cfg.dims, cfg.group_scale,
                                        cfg.class_scale, cfg.smoothing, cfg.sigma, cfg.data_seed)
    gold_acc, rho = sandbox_difficulty(means, cfg.sigma, y, x, human, groups, cfg.data_seed)
    probe = simulate.amt_structured_workers(cfg.n_workers, wnids, seed=1000)
    log(f"sandbox: {k} classes ({', '.join(cfg.splits)}), {len(y)} items, d={cfg.dims}; "
        f"gold-trained LDA accuracy {gold_acc:.3f}; Spearman(machine, human confusion) {rho:.2f}; "
        f"worker accuracy (seed-0 pool) {np.diagonal(probe, axis1=1, axis2=2).mean():.3f}")
    def make_workers(m, seed, kind="structured"):
        return simulate.amt_structured_workers(m, wnids, seed=1000 + seed, stats=stats)

    chosen = [s for s in oc.specs(cfg.n_workers, len(y)) if set(s[1]) & set(wanted)]
    start = time.perf_counter()
    runs = oc.run_specs(chosen, cfg, (x, px, py), make_workers, y, k, cfg.seeds)
    tables = [oc.write_experiment(runs, "sandbox", e, out, cfg.auc_upto, "sandbox") for e in wanted]
    oc.update_summary(out / "sandbox_summary.csv", tables)
    meta = dict(vars(cfg), n_items=len(y), n_classes=k, gold_lda_accuracy=gold_acc,
                spearman_machine_human=rho, wall_seconds=time.perf_counter() - start)
    pd.Series({kk: str(v) for kk, v in meta.items()}).to_csv(
        out / f"sandbox_meta_{'_'.join(wanted)}.csv", header=False)
    log(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
