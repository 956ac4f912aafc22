"""Worker-confusion posteriors on real data: a figure from each plot function, and the ArviZ summary.

    python -m experiments.bayes_diagnostics

Fits BCC by variational Bayes and by NUTS (4 chains) on rte, and BCC-VB on dog (4 classes), then
writes into experiments/results/:
    bayes_worker_accuracy_{rte_vb,rte_nuts}.png   every worker's accuracy with 94% intervals
    bayes_confusion_{rte_nuts,dog_vb}.png         the busiest worker's confusion, mean and interval
    bayes_label_confidence_dog_vb.png             label confidence split by gold right / wrong
    bayes_forest_rte_nuts.png                     az.plot_forest of the 10 busiest workers' accuracy
    bayes_diagnostics.md                          accuracy, r-hat / ESS, NUTS vs VB agreement
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import crowdinfer as ci  # noqa: E402
from crowdinfer import plot  # noqa: E402
from crowdinfer.diagnostics import az  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def save(ax, name):
    ax.figure.savefig(OUT / name, dpi=110)
    plt.close(ax.figure)
    return name


def main() -> int:
    data = ci.datasets.shared_data_dir()
    if not data.exists():
        sys.exit(f"the real datasets are missing: expected {data} (or set CROWDINFER_DATA)")
    warnings.simplefilter("ignore")
    OUT.mkdir(exist_ok=True)
    rte = ci.datasets.load(data / "rte").annotations
    dog = ci.datasets.load(data / "dog").annotations
    vb = ci.fit(rte, "bcc")
    nuts = ci.fit(rte, "bcc", "nuts", num_warmup=500, num_samples=500, num_chains=4)
    dog_vb = ci.fit(dog, "bcc")
    idata_vb, idata_nuts, idata_dog = vb.to_arviz(), nuts.to_arviz(), dog_vb.to_arviz(label_probs=False)
    files = [
        save(plot.worker_accuracy(vb, idata=idata_vb), "bayes_worker_accuracy_rte_vb.png"),
        save(plot.worker_accuracy(nuts, idata=idata_nuts), "bayes_worker_accuracy_rte_nuts.png"),
        save(plot.confusion_matrix(nuts, idata=idata_nuts), "bayes_confusion_rte_nuts.png"),
        save(plot.confusion_matrix(dog_vb, idata=idata_dog), "bayes_confusion_dog_vb.png"),
        save(plot.label_confidence(dog_vb), "bayes_label_confidence_dog_vb.png"),
    ]
    busiest = rte.worker_ids[np.argsort(-rte.annotations_per_worker())[:10]]
    axes = az.plot_forest([idata_nuts, idata_vb], model_names=["NUTS", "VB"], var_names=["accuracy"],
                          coords={"worker": busiest}, combined=True, figsize=(7, 5))
    axes[0].set_title("accuracy of rte's 10 busiest workers: 94% HDI")
    axes[0].figure.tight_layout()
    files.append(save(axes[0], "bayes_forest_rte_nuts.png"))

    busy = rte.annotations_per_worker() >= 100
    summary = az.summary(idata_nuts, var_names=["accuracy", "class_prior"])
    lines = [
        "# Worker-confusion posteriors: BCC by VB and by NUTS",
        "",
        "Run: `python -m experiments.bayes_diagnostics`.",
        "",
        "| data | engine | accuracy | seconds | notes |",
        "| --- | --- | ---: | ---: | --- |",
        f"| rte | VB | {vb.accuracy():.4f} | {vb.options['seconds']:.1f} | {vb.n_iter} iterations |",
        f"| rte | NUTS (4 x 500) | {nuts.accuracy():.4f} | {nuts.options['seconds']:.1f} | "
        f"confusion max r_hat {nuts.diagnostics['confusion']['max_r_hat']:.3f}, "
        f"min ESS {nuts.diagnostics['confusion']['min_ess']:.0f} |",
        f"| dog | VB | {dog_vb.accuracy():.4f} | {dog_vb.options['seconds']:.1f} | {dog_vb.n_iter} iterations |",
        "",
        f"NUTS vs VB on rte's {int(busy.sum())} workers with at least 100 annotations: largest "
        f"difference of posterior-mean confusion entries "
        f"{np.abs(nuts.confusion[busy] - vb.confusion[busy]).max():.4f}; label accuracy "
        f"difference {abs(nuts.accuracy() - vb.accuracy()):.4f}.",
        "",
        f"`az.summary` of the NUTS posterior ({len(summary)} rows: worker accuracy and class "
        f"proportions): r_hat max {summary['r_hat'].max():.3f}, ess_bulk min "
        f"{summary['ess_bulk'].min():.0f}.",
        "",
        "Figures: " + ", ".join(f"[{f}]({f})" for f in files),
    ]
    (OUT / "bayes_diagnostics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
