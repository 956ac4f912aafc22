"""The ``crowdinfer`` command.

    crowdinfer fit ANNOTATIONS.csv --model dawid_skene --out LABELS.csv [--gold truth.csv]
    crowdinfer report ANNOTATIONS.csv --model bcc --out DIR
    crowdinfer demo
    crowdinfer online FEATURES.csv --preset efficient_annotation --dir RUN [--workers structured]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import pandas as pd

__all__ = ["main"]


def _add_fit(sub):
    p = sub.add_parser("fit", help="infer true labels and worker skills from an annotation CSV")
    p.add_argument("annotations", help="CSV with one row per annotation (columns item,worker,label)")
    p.add_argument("--model", default="dawid_skene", help="dawid_skene (default), one_coin, majority_vote")
    p.add_argument("--method", default=None, help="inference engine (default: the model's own)")
    p.add_argument("--prior", default=None, help="worker prior: pooled (default), homogeneous, symmetric, none, ...")
    p.add_argument("--strength", type=float, default=None, help="prior strength in pseudo-answers per row")
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--out", default=None, help="write item,label,confidence here (default: stdout)")
    p.add_argument("--confusion-out", default=None, help="write worker,true_class,observed_class,probability")
    p.add_argument("--skills-out", default=None, help="write one row of skills per worker")
    p.add_argument("--gold", default=None, help="CSV item,label of gold labels: prints the accuracy")
    p.add_argument("--item-col", default=None, help="name of the item column (default item or task)")
    p.add_argument("--worker-col", default="worker")
    p.add_argument("--label-col", default="label")
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar per EM iteration (automatic above 10^6 annotations)")


def _add_report(sub):
    p = sub.add_parser("report", help="fit, then write figures and tables of the worker posteriors")
    p.add_argument("annotations", help="CSV with one row per annotation (columns item,worker,label)")
    p.add_argument("--model", default="bcc", help="bcc (default), dawid_skene, one_coin")
    p.add_argument("--method", default=None, help="vb, em, nuts (default: the model's own)")
    p.add_argument("--out", required=True, help="folder for the figures and tables")
    p.add_argument("--gold", default=None, help="CSV item,label of gold labels")
    p.add_argument("--draws", type=int, default=400, help="posterior draws for the intervals")
    p.add_argument("--seed", type=int, default=0)


def _add_demo(sub):
    p = sub.add_parser("demo", help="simulate a crowd task and compare majority vote with Dawid-Skene")
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=200)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--per-item", type=int, default=3, help="annotations per item")
    p.add_argument("--seed", type=int, default=0)


def _add_online(sub):
    p = sub.add_parser(
        "online",
        help="run the online annotation loop (seed 000, Algorithm 1) with simulated workers",
        description="Annotate the items of FEATURES.csv (columns: item, label = the true class used "
        "by the simulated workers and for scoring, then numeric feature columns) with simulated "
        "workers.  With --dir the run keeps an append-only ledger and checkpoints there, and "
        "running the same command again resumes it.",
    )
    p.add_argument("features", help="CSV: item,label,<feature columns>")
    p.add_argument("--preset", default="efficient_annotation",
                   help="ds_model, lean, improved_lean, efficient_annotation (default)")
    p.add_argument("--sampler", default="random", help="random (default), greedy, bald")
    p.add_argument("--workers", default="uniform",
                   help="uniform (default; --worker-accuracy), structured (AMT statistics; the "
                        "labels must be ImageNet100 wnids), perfect, or dataset:NAME (confusions "
                        "from a dataset of shared/data with the same classes)")
    p.add_argument("--n-workers", type=int, default=50)
    p.add_argument("--worker-accuracy", type=float, default=0.7)
    p.add_argument("--prototypes", type=int, default=10,
                   help="clean prototypes per class, taken from the CSV and not annotated")
    p.add_argument("--dir", default=None, help="folder for the ledger and checkpoints (resumes)")
    p.add_argument("--max-steps", type=int, default=10_000)
    p.add_argument("--risk-threshold", type=float, default=0.1)
    p.add_argument("--max-per-item", type=int, default=3)
    p.add_argument("--no-early-stop", action="store_true", help="run until every item is done")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write item,label,risk,annotations here")
    p.add_argument("--history", default=None, help="write the per-step history CSV here")
    p.add_argument("--no-progress", action="store_true")


def _online_workers(args, classes, n_classes):
    from . import simulate

    kind = args.workers
    if kind == "uniform":
        if not 0.0 < args.worker_accuracy <= 1.0:
            raise ValueError("--worker-accuracy must lie in (0, 1]")
        base = np.full((n_classes, n_classes), (1 - args.worker_accuracy) / (n_classes - 1))
        np.fill_diagonal(base, args.worker_accuracy)
        return np.broadcast_to(base, (args.n_workers, n_classes, n_classes)).copy()
    if kind == "perfect":
        return simulate.perfect_workers(args.n_workers, n_classes)
    if kind == "structured":
        return simulate.amt_structured_workers(args.n_workers, [str(c) for c in classes], seed=args.seed)
    if kind.startswith("dataset:"):
        from .datasets import load

        ann = load(kind.split(":", 1)[1]).annotations
        if ann.n_classes != n_classes:
            raise ValueError(f"{kind} has {ann.n_classes} classes, the features CSV {n_classes}")
        return simulate.dataset_workers(ann, args.n_workers, seed=args.seed)
    raise ValueError(f"unknown --workers {kind!r}: use uniform, structured, perfect or dataset:NAME")


def _cmd_online(args) -> int:
    from . import online
    from .online.session import simulate

    table = pd.read_csv(args.features, dtype={"item": str, "label": str})
    for col in ("item", "label"):
        if col not in table.columns:
            raise ValueError(f"{args.features} needs a column {col!r} (columns: item,label,<features>)")
    feature_cols = [c for c in table.columns if c not in ("item", "label")]
    bad = [c for c in feature_cols if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise ValueError(f"feature columns must be numeric; not numeric: {bad[:5]}")
    if table["label"].isna().any():
        raise ValueError("every item needs its true label (the simulated workers answer from it)")
    classes, codes = np.unique(table["label"].astype(str).to_numpy(), return_inverse=True)
    k = len(classes)
    rng = np.random.default_rng(args.seed)
    proto = np.concatenate([
        rng.permutation(np.flatnonzero(codes == c))[: args.prototypes] for c in range(k)
    ]) if args.prototypes > 0 else np.zeros(0, int)
    keep = np.setdiff1d(np.arange(len(table)), proto)
    x = table[feature_cols].to_numpy(np.float32)
    overrides = dict(sampler=args.sampler, seed=args.seed, risk_threshold=args.risk_threshold,
                     max_per_item=args.max_per_item)
    if args.no_early_stop:
        overrides["early_stop"] = None
    if args.prototypes == 0:
        overrides["calibration"] = "cv"
    config = online.preset(args.preset, k, **overrides)
    confusion = _online_workers(args, classes, k)
    task = online.make_task(x[keep] if feature_cols else len(keep), args.n_workers,
                            x[proto] if feature_cols and len(proto) else None,
                            codes[proto] if feature_cols and len(proto) else None, k)
    start = time.time()
    session = simulate(config, task, confusion, codes[keep], seed=args.seed, directory=args.dir,
                       max_steps=args.max_steps, progress=not args.no_progress)
    hist = session.history_frame()
    last = hist.iloc[-1] if len(hist) else None
    if session.resumed:
        print(f"resumed the run in {args.dir}", file=sys.stderr)
    if last is not None:
        print(f"{args.preset}: {int(last['step'])} steps, {last['per_item']:.2f} annotations per item, "
              f"label accuracy {last['accuracy']:.3f}, {int(last['finished'])} of {len(keep)} items "
              f"finished ({time.time() - start:.1f} s)")
    print(f"stopped: {session.stop_reason() or 'max steps reached'}")
    if args.out:
        state = session.state
        pd.DataFrame({
            "item": table["item"].to_numpy()[keep],
            "label": classes[np.asarray(state.decision)],
            "risk": np.asarray(state.risk),
            "annotations": np.asarray(state.item_count),
        }).to_csv(args.out, index=False)
    if args.history:
        hist.to_csv(args.history, index=False)
    session.close()
    return 0


def _cmd_fit(args) -> int:
    import crowdinfer as ci

    t0 = time.perf_counter()
    ann = ci.Annotations.from_csv(
        args.annotations, item=args.item_col, worker=args.worker_col, label=args.label_col
    )
    if args.gold:
        ann = ann.with_gold(ci.datasets.read_table(args.gold))
    print(f"read {ann!r} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if args.model not in ci.MODELS:
        raise ValueError(f"unknown model {args.model!r}; available: {sorted(ci.MODELS)}")
    method = args.method or ci.MODELS[args.model].default_method
    options = {}
    if method in ("em", "vb"):
        # long runs show progress: on request, and always beyond a million annotations
        options.update(max_iter=args.max_iter,
                       progress=args.progress or ann.n_annotations > 1_000_000)
    elif method == "nuts":
        options["progress"] = True
    if args.model != "majority_vote":
        if args.prior is not None:
            options["prior"] = args.prior
        if args.strength is not None:
            options["strength"] = args.strength
    post = ci.fit(ann, model=args.model, method=args.method, **options)
    print(
        f"{post.model}/{post.method}: {post.n_iter} iterations, converged={post.converged}, "
        f"{post.options['seconds']:.2f}s",
        file=sys.stderr,
    )
    labels = post.to_pandas()
    if args.out:
        labels.to_csv(args.out, index=False)
        print(f"wrote {len(labels)} labels to {args.out}", file=sys.stderr)
    else:
        labels.to_csv(sys.stdout, index=False)
    if args.confusion_out:
        post.confusion_frame().to_csv(args.confusion_out, index=False)
        print(f"wrote worker confusions to {args.confusion_out}", file=sys.stderr)
    if args.skills_out:
        post.worker_skills().to_csv(args.skills_out, index=False)
        print(f"wrote worker skills to {args.skills_out}", file=sys.stderr)
    if args.gold:
        n_gold = int((ann.gold >= 0).sum())
        print(f"accuracy on {n_gold} gold items: {post.accuracy():.4f}", file=sys.stderr)
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import crowdinfer as ci
    from crowdinfer import plot
    from crowdinfer.diagnostics import az

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ann = ci.Annotations.from_csv(args.annotations)
    if args.gold:
        ann = ann.with_gold(ci.datasets.read_table(args.gold))
    options = {"seed": args.seed} if args.method == "nuts" else {}
    post = ci.fit(ann, model=args.model, method=args.method, **options)
    print(f"{post!r} in {post.options['seconds']:.1f}s", file=sys.stderr)
    idata = post.to_arviz(num_draws=args.draws, seed=args.seed)
    written = []

    def save(ax, name):
        ax.figure.savefig(out / name, dpi=120)
        plt.close(ax.figure)
        written.append(out / name)

    save(plot.worker_accuracy(post, idata=idata), "worker_accuracy.png")
    save(plot.label_confidence(post), "label_confidence.png")
    busiest = ann.worker_ids[np.argsort(-ann.annotations_per_worker())[:3]]
    for w in busiest:
        save(plot.confusion_matrix(post, worker=w, idata=idata), f"confusion_worker_{w}.png")
    post.to_pandas().to_csv(out / "labels.csv", index=False)
    post.worker_skills().to_csv(out / "worker_skills.csv", index=False)
    names = ["accuracy", "class_prior"] if "class_prior" in idata.posterior else ["accuracy"]
    summary = az.summary(idata, var_names=names)
    summary.to_csv(out / "summary.csv")
    written += [out / "labels.csv", out / "worker_skills.csv", out / "summary.csv"]
    lines = [f"# crowdinfer report: {args.annotations}", "",
             f"- model: {post.model}, method: {post.method}, {ann!r}",
             f"- posterior draws: {idata.posterior.attrs['draws']}"]
    if post.diagnostics:
        for site, d in post.diagnostics.items():
            lines.append(f"- NUTS {site}: max r_hat {d['max_r_hat']:.3f}, min ESS {d['min_ess']:.0f}")
    if ann.gold is not None:
        lines.append(f"- accuracy on {int((ann.gold >= 0).sum())} gold items: {post.accuracy():.4f}")
    lines += [f"- warning: {w}" for w in post.warnings]
    lines += ["", "Files: " + ", ".join(p.name for p in written)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _cmd_demo(args) -> int:
    from tqdm.auto import tqdm

    import crowdinfer as ci

    steps = tqdm(total=4, desc="demo", unit="step", file=sys.stderr)
    steps.set_postfix_str("simulating annotators")
    task = ci.datasets.synthetic(
        n_items=args.items,
        n_workers=args.workers,
        n_classes=args.classes,
        annotations_per_item=args.per_item,
        accuracy=(0.3, 0.9),
        structure="structured",
        imbalance=5.0,
        worker_activity=0.8,
        seed=args.seed,
    )
    steps.update()
    rows = []
    true_acc = np.einsum("jkk,k->j", task.true_confusion, task.class_prior)
    for name, kwargs in (
        ("majority vote", dict(model="majority_vote")),
        ("one-coin Dawid-Skene", dict(model="one_coin")),
        ("Dawid-Skene", dict(model="dawid_skene")),
    ):
        steps.set_postfix_str(name)
        post = ci.fit(task.annotations, **kwargs)
        skills = post.worker_skills()
        confusion_error = np.abs(post.confusion - task.true_confusion).sum(-1).mean()
        rows.append(
            {
                "model": name,
                "label accuracy": post.accuracy(),
                "worker accuracy MAE": float(np.mean(np.abs(skills["accuracy"] - true_acc))),
                "confusion L1/row": float(confusion_error),
                "seconds": post.options["seconds"],
            }
        )
        steps.update()
    steps.close()
    ann = task.annotations
    print(
        f"\nSimulated task: {ann.n_items} items, {ann.n_workers} workers ({args.per_item} per item, "
        f"accuracy 0.3-0.9, structured confusions, class imbalance 5x), {ann.n_classes} classes, "
        f"{ann.n_annotations} annotations.\n"
    )
    table = pd.DataFrame(rows).set_index("model")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    print(
        "\nworker accuracy MAE: mean |estimated - true| probability that a worker is right;"
        "\nconfusion L1/row: mean L1 distance between estimated and true confusion rows."
    )
    return 0


def main(argv=None) -> int:
    from .distributed import use_all_cpu_cores

    use_all_cpu_cores()  # effective when the command starts JAX (not when imported after it)
    parser = argparse.ArgumentParser(
        prog="crowdinfer",
        description="True labels and annotator skills from noisy crowd annotations.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_fit(sub)
    _add_report(sub)
    _add_demo(sub)
    _add_online(sub)
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
            return {"fit": _cmd_fit, "report": _cmd_report, "demo": _cmd_demo,
                    "online": _cmd_online}[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"crowdinfer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
