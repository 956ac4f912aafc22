"""DASC (seed 004) on LabelMe and Music: Table 2, the imbalance ratio over iterations (Fig. 4) and
accuracy against annotation sparsity (Fig. 6).

    python -m experiments.dasc            # the full study, ~30-60 min on 2 CPU cores
    python -m experiments.dasc --quick    # a smoke run (labelme only, 2 seeds, 2 iterations)

Data: ``labelme`` (1000 training images with 512-d VGG features, 59 workers, 1188 test images)
and ``music_genre`` (700 songs, 124-d features, 44 workers, 300 test songs) from ../shared/data,
read in place.  Each is used as given ("original") and long-tailed: the training items subsampled
so that the gold class sizes decay exponentially to a head/tail ratio of ``--ratio`` (5, the
paper's CIFAR10-H setting; ``crowdinfer.simulate.long_tailed``, one fixed subsample per dataset,
seed 0).  The test sets are untouched.

For every base model (Crowdlayer, Anno-Reg, WDN) and ``--seeds`` seeds (trained side by side with
vmap) the script reports the test accuracy of CE (the plain model), Resampling, Reweighting, Focal,
and of self-training with Confidence, Random and DASC selection after ``--iterations`` iterations;
MV-DL and DS-DL once per dataset.  CE is iteration 0 of the self-training runs (the same seeds,
the same network).  Hyperparameters follow seed 004 sec. 4.1 (see CONFIG): LabelMe batch 512, 25
epochs per round, Adam 1e-3, dropout 0.5, L2 5e-4; Music batch 128, 100 epochs, WDN at Adam 1e-2;
pseudo-annotations per iteration (Anno-Reg/Crowdlayer/WDN) are the paper's numbers per training
item: Music 700/1000/1000 for its 700 songs, LabelMe 20000/10000/10000 for 10000 augmented images,
i.e. 2000/1000/1000 for our 1000; a long-tailed subset gets the same number per item
(``n_select``), so each iteration fills the same fraction of the free cells.

Fig. 6: the original annotations with a fraction p of them removed at random
(``crowdinfer.simulate.remove_annotations``, a fresh removal per p), CE / Confidence / Random /
DASC.

Writes experiments/results/dasc/{table2.csv, table2.md, ratio.csv, sparsity.csv, ratio_*.png,
accuracy_iterations_*.png, sparsity.png, summary.md}.  ``--resume`` skips blocks already in the
CSVs.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import crowdinfer as ci  # noqa: E402
from crowdinfer import dasc  # noqa: E402
from crowdinfer import simulate as sim  # noqa: E402

# ------------------------------------------------------------------------------------- config
MODELS = ("anno_reg", "crowdlayer", "wdn")
MODEL_NAMES = {"anno_reg": "Anno-Reg", "crowdlayer": "Crowdlayer", "wdn": "WDN"}
CONFIG = {
    "labelme": {
        "config": dasc.Config(batch_size=512, epochs=25, learning_rate=1e-3),
        "model_config": {},
        "n_select": {"anno_reg": 2.0, "crowdlayer": 1.0, "wdn": 1.0},  # per training item
    },
    "music_genre": {
        "config": dasc.Config(batch_size=128, epochs=100, learning_rate=1e-3),
        "model_config": {"wdn": {"learning_rate": 1e-2}},
        "n_select": {"anno_reg": 1.0, "crowdlayer": 1000 / 700, "wdn": 1000 / 700},
    },
}
RATIO = 5.0
SPARSITY = (0.2, 0.4, 0.6, 0.8)
METHODS = ("MV-DL", "DS-DL", "CE", "Resampling", "Reweighting", "Focal", "Confidence", "Random",
           "DASC")
LOSS_OF = {"Resampling": "resampling", "Reweighting": "reweighting", "Focal": "focal"}
RULE_OF = {"Confidence": "confidence", "Random": "random", "DASC": "dasc"}
STYLE = {"CE": ("k", "-", "o"), "Confidence": ("tab:red", "--", "s"),
         "Random": ("tab:orange", ":", "^"), "DASC": ("tab:green", "-", "D")}
OUT = Path(__file__).resolve().parent / "results" / "dasc"
NOTES = [
    "- Our LabelMe is the 1000 original training images (the paper trained on 10000 augmented "
    "ones), so its Table 2 numbers are approximate anchors only. Music is the same 700/300 split.",
    "- Network: one hidden ReLU layer of 128 units with 50% dropout on standardised features for "
    "both datasets (the paper's Music network has batch norm instead; not used here).",
    "- WDN's second phase (eq. 7): full-batch Adam (1e-2, 200 steps) on softmax-parametrised "
    "worker weights with the heads fixed, instead of the paper's SGD with a cyclic learning rate.",
    "- Anno-Reg: trace weight 0.01 on the mean trace over workers; confusion logits start at 2 I.",
    "- Self-training continues from the current network each iteration (the same number of "
    "epochs again); pseudo-annotations accumulate and an observed cell is never a candidate.",
    "- Long-tailed versions: one fixed subsample of the training items (seed 0), all their "
    "annotations kept; test sets untouched. Sparsity: a fresh random removal per p.",
]


def model_config(dataset: str, model: str, epochs_scale: float = 1.0) -> dasc.Config:
    spec = CONFIG[dataset]
    cfg = dataclasses.replace(spec["config"], **spec["model_config"].get(model, {}))
    if epochs_scale != 1.0:
        cfg = dataclasses.replace(cfg, epochs=max(1, int(cfg.epochs * epochs_scale)))
    return cfg


def n_select(dataset: str, model: str, ann) -> int:
    """Pseudo-annotations per self-training iteration: the paper's number per training item."""
    return int(round(CONFIG[dataset]["n_select"][model] * ann.n_items))


def variants(name: str, ratio: float):
    d = ci.datasets.load(name)
    ann = d.annotations
    yield "original", ann, d
    yield f"long-tailed R={ratio:g}", sim.long_tailed(ann, ratio, seed=0), d


def gold_ratio(ann) -> float:
    counts = np.bincount(ann.gold[ann.gold >= 0], minlength=ann.n_classes)
    return counts.max() / counts.min()


def annotation_ratio(ann) -> float:
    counts = np.bincount(ann.label, minlength=ann.n_classes)
    return counts.max() / counts.min()


# ------------------------------------------------------------------------------------- running
class Store:
    """Rows of one CSV, saved after every block; ``done(key)`` for --resume."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.rows = pd.read_csv(path).to_dict("records") if resume and path.exists() else []

    def done(self, **key) -> bool:
        return any(all(r[k] == v for k, v in key.items()) for r in self.rows)

    def add(self, rows):
        self.rows.extend(rows)
        pd.DataFrame(self.rows).to_csv(self.path, index=False)

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_table(args, table: Store, ratio_store: Store):
    for name in args.datasets:
        for variant, ann, d in variants(name, args.ratio):
            test = (d.test.features, d.test.gold)
            base = dict(dataset=name, variant=variant)
            log(f"{name} / {variant}: {ann}  R(gold)={gold_ratio(ann):.2f} "
                f"R(annotations)={annotation_ratio(ann):.2f}")
            for method, agg in (("MV-DL", "majority_vote"), ("DS-DL", "dawid_skene")):
                if table.done(**base, model="-", method=method):
                    continue
                t = time.perf_counter()
                net = dasc.train_aggregated(ann, agg, seeds=args.seeds,
                                            config=model_config(name, "crowdlayer",
                                                                args.epochs_scale))
                acc = net.accuracy(*test)
                table.add([{**base, "model": "-", "method": method, "seed": s, "accuracy": a}
                           for s, a in zip(net.seeds, acc)])
                log(f"  {method}: {acc.mean():.3f} ± {acc.std():.3f} "
                    f"({time.perf_counter() - t:.0f} s)")
            for model in MODELS:
                cfg = model_config(name, model, args.epochs_scale)
                for method, loss in LOSS_OF.items():
                    if table.done(**base, model=model, method=method):
                        continue
                    t = time.perf_counter()
                    net = dasc.train_base(ann, model, loss=loss, seeds=args.seeds, config=cfg)
                    acc = net.accuracy(*test)
                    table.add([{**base, "model": model, "method": method, "seed": s,
                                "accuracy": a} for s, a in zip(net.seeds, acc)])
                    log(f"  {model} {method}: {acc.mean():.3f} ± {acc.std():.3f} "
                        f"({time.perf_counter() - t:.0f} s)")
                for method, rule in RULE_OF.items():
                    if table.done(**base, model=model, method=method):
                        continue
                    t = time.perf_counter()
                    net = dasc.self_train(ann, model, rule, n_select=n_select(name, model, ann),
                                          iterations=args.iterations, seeds=args.seeds, config=cfg,
                                          eval_data=test)
                    h = net.history
                    rows = [{**base, "model": model, "method": method, "seed": s,
                             "accuracy": h["accuracy"][j, -1]} for j, s in enumerate(net.seeds)]
                    if method == "DASC":  # iteration 0 of self-training is the plain model
                        rows += [{**base, "model": model, "method": "CE", "seed": s,
                                  "accuracy": h["accuracy"][j, 0]}
                                 for j, s in enumerate(net.seeds)]
                    table.add(rows)
                    ratio_store.add([
                        {**base, "model": model, "method": method, "seed": s, "iteration": t_,
                         "ratio": h["ratio"][j, t_], "accuracy": h["accuracy"][j, t_],
                         "pseudo_accuracy": h["pseudo_accuracy"][j, t_],
                         "n_pseudo": h["n_pseudo"][j, t_], "gold_ratio": gold_ratio(ann),
                         "annotation_ratio": annotation_ratio(ann)}
                        for j, s in enumerate(net.seeds) for t_ in range(h["ratio"].shape[1])])
                    acc = h["accuracy"][:, -1]
                    log(f"  {model} {method}: {acc.mean():.3f} ± {acc.std():.3f}, R "
                        f"{[round(float(v), 2) for v in h['ratio'].mean(0)]} "
                        f"({time.perf_counter() - t:.0f} s)")


def run_sparsity(args, store: Store):
    for name in args.datasets:
        d = ci.datasets.load(name)
        test = (d.test.features, d.test.gold)
        for p in args.sparsity:
            ann = sim.remove_annotations(d.annotations, p, seed=int(round(100 * p)))
            for model in MODELS:
                if store.done(dataset=name, p=p, model=model, method="DASC"):
                    continue
                cfg = model_config(name, model, args.epochs_scale)
                rows = []
                t = time.perf_counter()
                for method, rule in RULE_OF.items():
                    net = dasc.self_train(ann, model, rule, n_select=n_select(name, model, ann),
                                          iterations=args.iterations, seeds=args.seeds, config=cfg,
                                          eval_data=test)
                    h = net.history["accuracy"]
                    rows += [{"dataset": name, "p": p, "model": model, "method": method,
                              "seed": s, "accuracy": h[j, -1]} for j, s in enumerate(net.seeds)]
                    if method == "DASC":
                        rows += [{"dataset": name, "p": p, "model": model, "method": "CE",
                                  "seed": s, "accuracy": h[j, 0]} for j, s in enumerate(net.seeds)]
                store.add(rows)
                summary = pd.DataFrame(rows).groupby("method")["accuracy"].mean().round(3)
                log(f"{name} p={p} {model}: {summary.to_dict()} ({time.perf_counter() - t:.0f} s)")


# ------------------------------------------------------------------------------------- reporting
def table_markdown(table: pd.DataFrame) -> str:
    out = []
    for (name, variant), block in table.groupby(["dataset", "variant"], sort=False):
        stats = block.groupby(["method", "model"])["accuracy"].agg(["mean", "std"]) * 100
        out.append(f"\n**{name}, {variant}** (test accuracy %, mean ± std over seeds)\n")
        out.append("| method | " + " | ".join(MODEL_NAMES[m] for m in MODELS) + " |")
        out.append("|---|" + "---|" * len(MODELS))
        for method in METHODS:
            if method in ("MV-DL", "DS-DL"):
                if (method, "-") in stats.index:
                    m, s = stats.loc[(method, "-")]
                    out.append(f"| {method} | {m:.1f} ± {s:.1f} (aggregate, then classifier) "
                               "| | |")
                continue
            cells = []
            best = {mod: stats.xs(mod, level="model")["mean"].drop(["MV-DL", "DS-DL"],
                                                                   errors="ignore").max()
                    for mod in MODELS if mod in stats.index.get_level_values("model")}
            for mod in MODELS:
                if (method, mod) in stats.index:
                    m, s = stats.loc[(method, mod)]
                    cell = f"{m:.1f} ± {s:.1f}"
                    cells.append(f"**{cell}**" if np.isclose(m, best[mod]) else cell)
                else:
                    cells.append("")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot_ratio(ratios: pd.DataFrame, out: Path):
    paths = []
    for (name, variant), block in ratios.groupby(["dataset", "variant"], sort=False):
        for what, ylabel, stem in (("ratio", "imbalance ratio R of the annotations", "ratio"),
                                   ("accuracy", "test accuracy", "accuracy_iterations")):
            fig, axes = plt.subplots(1, len(MODELS), figsize=(4 * len(MODELS), 3.3), squeeze=False)
            for ax, model in zip(axes[0], MODELS):
                sub = block[block.model == model]
                for method in ("Confidence", "Random", "DASC"):
                    curve = sub[sub.method == method].groupby("iteration")[what]
                    if not len(sub[sub.method == method]):
                        continue
                    c, ls, mk = STYLE[method]
                    mean, std = curve.mean(), curve.std().fillna(0)
                    ax.plot(mean.index, mean.values, color=c, ls=ls, marker=mk, ms=4,
                            label=method)
                    ax.fill_between(mean.index, mean - std, mean + std, color=c, alpha=0.15)
                if what == "ratio" and len(sub):
                    ax.axhline(sub.annotation_ratio.iloc[0], color="gray", ls="--",
                               label="original annotations")
                    ax.axhline(sub.gold_ratio.iloc[0], color="k", ls=":", label="ground truth")
                ax.set_title(f"{MODEL_NAMES[model]}")
                ax.set_xlabel("self-training iteration")
                ax.grid(alpha=0.3)
            axes[0, 0].set_ylabel(ylabel)
            axes[0, -1].legend(fontsize=7)
            fig.suptitle(f"{name}, {variant}")
            fig.tight_layout()
            tag = variant.replace(" ", "_").replace("=", "")
            path = out / f"{stem}_{name}_{tag}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            paths.append(path)
    return paths


def plot_sparsity(sp: pd.DataFrame, out: Path) -> Path:
    names = list(dict.fromkeys(sp.dataset))
    fig, axes = plt.subplots(len(names), len(MODELS), figsize=(4 * len(MODELS), 3.2 * len(names)),
                             squeeze=False)
    for row, name in zip(axes, names):
        for ax, model in zip(row, MODELS):
            sub = sp[(sp.dataset == name) & (sp.model == model)]
            for method in ("CE", "Confidence", "Random", "DASC"):
                curve = sub[sub.method == method].groupby("p")["accuracy"].mean()
                c, ls, mk = STYLE[method]
                ax.plot(curve.index, curve.values, color=c, ls=ls, marker=mk, label=method)
            ax.set_title(f"{name}: {MODEL_NAMES[model]}")
            ax.set_xlabel("fraction p of annotations removed")
            ax.grid(alpha=0.3)
        row[0].set_ylabel("test accuracy")
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    path = out / "sparsity.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def checks(table: pd.DataFrame, ratios: pd.DataFrame) -> list[str]:
    """The claims of the issue, evaluated on the imbalanced (long-tailed) versions."""
    lines = []
    mean = table.groupby(["dataset", "variant", "model", "method"])["accuracy"].mean()
    for (name, variant) in table[["dataset", "variant"]].drop_duplicates().itertuples(index=False):
        if not variant.startswith("long-tailed"):
            continue
        for model in MODELS:
            try:
                d, ce, conf = (mean[(name, variant, model, m)] for m in ("DASC", "CE",
                                                                          "Confidence"))
            except KeyError:
                continue
            ok = d > ce and d > conf
            lines.append(f"- {name} {variant}, {MODEL_NAMES[model]}: DASC {100 * d:.1f} vs CE "
                         f"{100 * ce:.1f}, Confidence {100 * conf:.1f} -> "
                         f"{'holds' if ok else 'DOES NOT hold'}")
    if len(ratios):
        last = ratios[ratios.iteration == ratios.iteration.max()]
        r = last.groupby(["dataset", "variant", "model", "method"])["ratio"].mean()
        for (name, variant, model), block in last.groupby(["dataset", "variant", "model"],
                                                           sort=False):
            gr, ar = block.gold_ratio.iloc[0], block.annotation_ratio.iloc[0]
            rd = r.get((name, variant, model, "DASC"), np.nan)
            rc = r.get((name, variant, model, "Confidence"), np.nan)
            lines.append(f"- R after the last iteration, {name} {variant}, {MODEL_NAMES[model]}: "
                         f"DASC {rd:.2f}, Confidence {rc:.2f} (ground truth {gr:.2f}, observed "
                         f"annotations {ar:.2f})")
    return lines


def write_summary(args, out: Path, table: pd.DataFrame, ratios: pd.DataFrame,
                  sp: pd.DataFrame | None, seconds: float):
    (out / "table2.md").write_text(table_markdown(table) + "\n")
    text = [
        "# DASC (seed 004) on LabelMe and Music",
        "",
        f"`python -m experiments.dasc{' --quick' if args.quick else ''}`: {args.seeds} seeds, "
        f"{args.iterations} self-training iterations, long-tailed ratio {args.ratio:g}; "
        + (f"this invocation resumed from the CSVs ({seconds / 60:.0f} min); "
           if args.resume else f"{seconds / 60:.0f} min on this machine; ")
        + "a full run from scratch takes about 35-40 min on 2 shared CPU cores. "
        "CE is iteration 0 of the self-training runs; "
        "each self-training column is the accuracy after the last iteration.",
        "",
        "## Table 2 (test accuracy)",
        table_markdown(table),
        "",
        "## What must hold (imbalanced versions)",
        *checks(table, ratios),
    ]
    if len(ratios):
        r = ratios.groupby(["dataset", "variant", "model", "method", "iteration"])["ratio"].mean()
        r = r.unstack("iteration").round(2).reset_index()
        r["model"] = r["model"].map(MODEL_NAMES)
        text += ["", "## Imbalance ratio R of the combined annotations per iteration (Fig. 4)",
                 "", "Mean over seeds; iteration 0 = the observed annotations.", "",
                 r.to_markdown(index=False)]
    if sp is not None and len(sp):
        piv = (sp.assign(model=sp.model.map(MODEL_NAMES))
               .groupby(["dataset", "model", "method", "p"])["accuracy"].mean() * 100).unstack("p")
        text += ["", "## Accuracy against sparsity p (Fig. 6, original annotations)", "",
                 piv.round(1).reset_index().to_markdown(index=False)]
    text += ["", "## Notes", "", *NOTES]
    text += ["", "Figures: `ratio_*.png` (Fig. 4), `accuracy_iterations_*.png`, `sparsity.png` "
             "(Fig. 6). Raw numbers: `table2.csv`, `ratio.csv`, `sparsity.csv`."]
    (out / "summary.md").write_text("\n".join(text) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="labelme only, 2 seeds, 2 iterations")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--ratio", type=float, default=RATIO)
    ap.add_argument("--datasets", default="labelme,music_genre")
    ap.add_argument("--sparsity", default=",".join(map(str, SPARSITY)),
                    help="fractions p removed for Fig. 6; empty to skip")
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="scale every epoch count")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--resume", action="store_true", help="skip blocks already in the CSVs")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.iterations, args.datasets = 2, 2, "labelme"
        args.sparsity = "0.5"
    args.datasets = [s for s in args.datasets.split(",") if s]
    args.sparsity = [float(p) for p in args.sparsity.split(",") if p]
    out = args.out or (OUT.parent / "dasc_quick" if args.quick else OUT)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    table = Store(out / "table2.csv", args.resume)
    ratios = Store(out / "ratio.csv", args.resume)
    run_table(args, table, ratios)
    sp = None
    if args.sparsity:
        store = Store(out / "sparsity.csv", args.resume)
        run_sparsity(args, store)
        sp = store.frame
        plot_sparsity(sp, out)
    plot_ratio(ratios.frame, out)
    write_summary(args, out, table.frame, ratios.frame, sp, time.perf_counter() - start)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min; see {out / 'summary.md'}")


if __name__ == "__main__":
    main()
