"""The ``crowdinfer`` command.

    crowdinfer fit ANNOTATIONS.csv --model dawid_skene --out LABELS.csv [--gold truth.csv]
    crowdinfer report ANNOTATIONS.csv --model bcc --out DIR
    crowdinfer demo
    crowdinfer online FEATURES.csv --preset efficient_annotation --dir RUN [--workers structured]

Every command takes the same input flags (a shared parent parser): the column names
(``--item-col``, ``--worker-col``, ``--label-col``), ``--format`` (csv, tsv, parquet, label_studio,
toloka, mturk; default from the file's extension), ``--gold FILE`` with its own column names
(``--gold-item``, ``--gold-label``), ``--progress/--no-progress`` (default: on when stderr is a
terminal), ``--force`` (overwrite existing output files) and ``--no-cache``.

Errors are one line on stderr and exit status 2 (``CROWDINFER_DEBUG=1`` shows the traceback).
Output paths are checked before any work: never the input file, never an existing file without
``--force``, never a directory or a missing folder.

JAX's persistent compilation cache is on (``~/.cache/crowdinfer/jax``, or
``$CROWDINFER_CACHE_DIR``): a second run on data of the same size skips compiling.  Opt out with
``--no-cache`` or ``CROWDINFER_NO_CACHE=1``.

The module imports no NumPy, pandas or JAX at import time, so ``crowdinfer --help`` is fast.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

from . import options as option_groups

__all__ = ["main", "enable_compilation_cache", "COMMANDS"]

FORMATS = ("csv", "tsv", "parquet", "label_studio", "toloka", "mturk")  # crowdinfer.formats.FORMATS
_EXTENSIONS = {".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
               ".json": "label_studio"}


# ------------------------------------------------------------------ compilation cache
def enable_compilation_cache(directory: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (compiled programs saved on disk and reused by
    the next process).  Returns the folder, or ``None`` when ``CROWDINFER_NO_CACHE`` is set."""
    if os.environ.get("CROWDINFER_NO_CACHE", "").strip() not in ("", "0"):
        return None
    if directory is None:
        directory = os.environ.get("CROWDINFER_CACHE_DIR")
    if directory is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        directory = Path(base) / "crowdinfer" / "jax"
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(directory)


# ------------------------------------------------------------------ shared parsers
def _models_help() -> str:
    """Every model and its engines (default first), from the static catalogue (no JAX)."""
    lines = []
    for model, (engines, desc) in option_groups.help_catalogue().items():
        lines.append(f"  {model:<17} engines: {', '.join(engines):<14} {desc}")
    return "models (engines, default first):\n" + "\n".join(lines)


def _input_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("input")
    g.add_argument("--format", choices=FORMATS, default=None,
                   help="input format (default: from the extension; .tsv, .parquet, .json = "
                        "label_studio, else csv)")
    g.add_argument("--item-col", default=None, help="item column (default: item, or task)")
    g.add_argument("--worker-col", default="worker", help="worker column (default: worker)")
    g.add_argument("--label-col", default="label", help="label column (default: label)")
    g.add_argument("--gold", default=None, help="table of gold labels (csv, tsv or parquet)")
    g.add_argument("--gold-item", "--gold-item-col", dest="gold_item", default=None,
                   help="item column of the gold table (default: item, or task)")
    g.add_argument("--gold-label", "--gold-label-col", dest="gold_label", default="label",
                   help="label column of the gold table (default: label)")
    o = p.add_argument_group("running")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: on when stderr is a terminal)")
    o.add_argument("--force", action="store_true", help="overwrite existing output files")
    o.add_argument("--no-cache", action="store_true",
                   help="do not use the persistent compilation cache (also CROWDINFER_NO_CACHE=1)")
    return p


def _fit_parent(default_model: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default_model, metavar="MODEL",
                   help=f"one of {', '.join(option_groups.help_catalogue())} (default: "
                        f"{default_model or 'chosen by crowdinfer.fit'}; see the list below)")
    g.add_argument("--method", default=None, metavar="ENGINE",
                   help="inference engine (default: the model's own, listed first below)")
    g.add_argument("--prior", default=None,
                   help="worker prior: pooled (default), pooled_diagonal, homogeneous, worker, "
                        "symmetric, none")
    g.add_argument("--strength", type=float, default=None, help="prior strength in pseudo-answers per row")
    g.add_argument("--max-iter", type=int, default=None, help="EM/VB iterations at most (default 100)")
    g.add_argument("-O", "--option", action="append", default=[], metavar="NAME=VALUE",
                   help="any other option of crowdinfer.fit (see crowdinfer.options), e.g. "
                        "-O tol=1e-6 -O num_chains=2; repeatable")
    return p


# ------------------------------------------------------------------ input and output
def _progress(args) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def _format(args, path) -> str:
    return args.format or _EXTENSIONS.get(Path(path).suffix.lower(), "csv")


def _input_file(path) -> Path:
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{path} is a directory, not an annotation file")
    if not p.exists():
        raise FileNotFoundError(f"no such file: {path}")
    return p


def _read_annotations(args, path):
    from . import formats

    p = _input_file(path)
    fmt = _format(args, p)
    if fmt in ("csv", "tsv", "parquet"):
        ann = formats.read(p, fmt, item=args.item_col, worker=args.worker_col, label=args.label_col)
    else:
        ann = formats.read(p, fmt, **({"item": args.item_col} if args.item_col else {}))
    if args.gold:
        ann = ann.with_gold(_read_gold(args))
    return ann


def _read_table(path, fmt: str):
    if fmt == "parquet":
        import pandas as pd

        return pd.read_parquet(path)
    from .annotations import read_text_table

    return read_text_table(path, sep="\t" if fmt == "tsv" else None)


def _read_gold(args):
    import pandas as pd

    p = _input_file(args.gold)
    fmt = _EXTENSIONS.get(p.suffix.lower(), "csv")
    if fmt not in ("csv", "tsv", "parquet"):
        raise ValueError(f"--gold {args.gold}: a gold table must be csv, tsv or parquet")
    table = _read_table(p, fmt)
    item = args.gold_item or next((c for c in ("item", "task") if c in table.columns), "item")
    for flag, col in (("--gold-item", item), ("--gold-label", args.gold_label)):
        if col not in table.columns:
            raise ValueError(f"gold table {args.gold} has no column {col!r} (columns: "
                             f"{', '.join(map(str, table.columns))}); name it with {flag}")
    return pd.Series(table[args.gold_label].to_numpy(), index=table[item].to_numpy())


def _check_outputs(args, inputs, outputs) -> None:
    """Before any work: every output is a new file in an existing folder (or ``--force``), not an
    input, not a directory, and no two outputs are the same file."""
    ins = {Path(p).resolve(): p for p in inputs if p}
    seen: dict[Path, str] = {}
    for flag, path in outputs:
        if path is None:
            continue
        p = Path(path)
        r = p.resolve()
        if r in ins:
            raise ValueError(f"{flag} {path} is the input file {ins[r]}: choose another name")
        if p.is_dir():
            raise ValueError(f"{flag} {path} is a directory: give a file name")
        if not r.parent.is_dir():
            raise ValueError(f"{flag} {path}: the folder {r.parent} does not exist")
        if not os.access(r.parent, os.W_OK):
            raise ValueError(f"{flag} {path}: the folder {r.parent} is not writable")
        if r in seen:
            raise ValueError(f"{flag} and {seen[r]} both name {path}: give different files")
        seen[r] = flag
        if p.exists() and not args.force:
            raise ValueError(f"{flag} {path} exists: pass --force to overwrite it")


def _parse_options(pairs) -> dict:
    import ast

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"-O {pair!r}: write NAME=VALUE, e.g. -O tol=1e-6")
        value = value.strip()
        if value.lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
            out[name.strip()] = float(value)  # checked (and refused where invalid) by fit
            continue
        try:
            out[name.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name.strip()] = value.strip()  # text, e.g. -O stop=hard
    return out


def _fit_request(args):
    """``(model, method, options)`` of the fit flags, validated before any data is read."""
    from .fit import MODELS
    from .options import options_for, validate

    options = _parse_options(args.option)
    for name in ("prior", "strength", "max_iter"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    model = args.model
    if model is None:
        import inspect

        from .fit import fit

        model = inspect.signature(fit).parameters["model"].default
    if model is None or model == "auto":  # fit's own choice among the models (crowdinfer.selection)
        if args.method is not None:
            raise ValueError(f"--method {args.method} needs --model: the default chooses among "
                             "several models, each with its own engine")
        return None, None, options
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    entry = MODELS[model]
    method = args.method or entry.default_method
    if method not in entry.methods:
        raise ValueError(f"model {model!r} has no method {method!r}; available: {sorted(entry.methods)}")
    runner = entry.methods[method]
    if "progress" in options_for(model, method, runner) and "progress" not in options:
        options["progress"] = _progress(args)
    return model, method, validate(model, method, options, runner)


def _say(*parts) -> None:
    print(*parts, file=sys.stderr)


# ------------------------------------------------------------------ fit
def _add_fit(sub, parents):
    p = sub.add_parser(
        "fit", parents=parents, help=SUMMARIES["fit"],
        description="Infer each item's true label and each worker's skill.",
        epilog=_models_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("annotations", help="one row per annotation (columns item,worker,label)")
    p.add_argument("--out", default=None, help="write item,label,confidence here (default: stdout)")
    p.add_argument("--confusion-out", default=None, help="write worker,true_class,observed_class,probability")
    p.add_argument("--skills-out", default=None, help="write one row of skills per worker")


def _cmd_fit(args) -> int:
    _check_outputs(args, [args.annotations, args.gold],
                   [("--out", args.out), ("--confusion-out", args.confusion_out),
                    ("--skills-out", args.skills_out)])
    model, method, options = _fit_request(args)
    from .fit import fit

    t0 = time.perf_counter()
    ann = _read_annotations(args, args.annotations)
    _say(f"read {ann!r} in {time.perf_counter() - t0:.1f}s")
    post = fit(ann, model=model, method=method, **options)
    _say(f"{post.model}/{post.method}: {post.n_iter} iterations, converged={post.converged}, "
         f"{post.options['seconds']:.2f}s")
    if post.selection is not None:
        from .selection import describe

        _say(describe(post.selection))
    labels = post.to_pandas()
    if args.out:
        labels.to_csv(args.out, index=False)
        _say(f"wrote {len(labels)} labels to {args.out}")
    else:
        labels.to_csv(sys.stdout, index=False)
    if args.confusion_out:
        post.confusion_frame().to_csv(args.confusion_out, index=False)
        _say(f"wrote worker confusions to {args.confusion_out}")
    if args.skills_out:
        post.worker_skills().to_csv(args.skills_out, index=False)
        _say(f"wrote worker skills to {args.skills_out}")
    if args.gold:
        n_gold = int((ann.gold >= 0).sum())
        _say(f"accuracy on {n_gold} gold items: {post.accuracy():.4f}")
    return 0


# ------------------------------------------------------------------ report
REPORT_FILES = ("report.md", "worker_accuracy.png", "label_confidence.png", "labels.csv",
                "worker_skills.csv", "summary.csv")


def safe_name(value, limit: int = 60) -> str:
    """A file-name fragment from a user id: letters, digits, ``-`` and ``_`` only (no ``/``, no
    ``..``), at most ``limit`` characters, never empty."""
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", str(value)).strip("_")[:limit]
    return text or "id"


def _add_report(sub, parents):
    p = sub.add_parser(
        "report", parents=parents, help=SUMMARIES["report"],
        description="Fit, then write report.md with figures of the workers' accuracy and "
                    "confusions, the labels, the skills and a summary table.",
        epilog=_models_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("annotations", help="one row per annotation (columns item,worker,label)")
    p.add_argument("--out", required=True, help="folder for the figures and tables (made if missing)")
    p.add_argument("--draws", type=int, default=400, help="posterior draws for the intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worst", type=int, default=40,
                   help="name the N least accurate workers in worker_accuracy.png (default 40)")
    p.add_argument("--confusions", type=int, default=3,
                   help="confusion figures for the N busiest workers (default 3)")


def _report_outputs(args, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file: give a folder")
    if out.is_dir():
        clash = [n for n in REPORT_FILES if (out / n).exists()]
        clash += [f.name for f in out.glob("confusion_worker_*.png")]
        if clash and not args.force:
            raise ValueError(f"--out {args.out} already holds {', '.join(sorted(clash)[:4])}: "
                             "pass --force to overwrite, or give a new folder")
    ins = {Path(p).resolve() for p in (args.annotations, args.gold) if p}
    for name in REPORT_FILES:
        if (out / name).resolve() in ins:
            raise ValueError(f"--out {args.out}: {name} would overwrite an input file")
    for args_min, flag in ((args.draws, "--draws"), (args.worst, "--worst")):
        if args_min < 1:
            raise ValueError(f"{flag} must be >= 1, got {args_min}")
    if args.confusions < 0:
        raise ValueError(f"--confusions must be >= 0, got {args.confusions}")


def _cmd_report(args) -> int:
    out = Path(args.out)
    _report_outputs(args, out)
    if args.method == "nuts" and "seed" not in " ".join(args.option):
        args.option.append(f"seed={args.seed}")
    model, method, options = _fit_request(args)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {args.out} is not writable")
    from tqdm.auto import tqdm

    steps = tqdm(total=5, desc="report", unit="step", file=sys.stderr, disable=not _progress(args))
    steps.set_postfix_str("reading")
    ann = _read_annotations(args, args.annotations)
    steps.update()
    steps.set_postfix_str(f"fitting {model}")
    from .fit import fit

    post = fit(ann, model=model, method=method, **options)
    steps.update()
    _say(f"{post!r} in {post.options['seconds']:.1f}s")
    steps.set_postfix_str("posterior draws")
    idata = post.to_arviz(num_draws=args.draws, seed=args.seed, label_probs=False)
    steps.update()
    steps.set_postfix_str("figures")
    figures = _report_figures(args, out, post, idata)
    steps.update()
    steps.set_postfix_str("tables")
    lines = _report_tables(args, out, post, idata, figures)
    steps.update()
    steps.close()
    print("\n".join(lines))
    return 0


def _report_figures(args, out: Path, post, idata) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from . import plot

    written = []

    def save(ax, name, caption):
        path = out / name
        if path.resolve().parent != out.resolve():  # a name from a user id stays in the folder
            raise ValueError(f"refusing to write {name!r} outside {out}")
        ax.figure.savefig(path, dpi=120)
        plt.close(ax.figure)
        written.append((name, caption))

    ann = post.annotations
    worst = min(args.worst, ann.n_workers)
    save(plot.worker_accuracy(post, idata=idata, worst=worst), "worker_accuracy.png",
         f"The {worst} least accurate of {ann.n_workers} workers" if worst < ann.n_workers
         else f"All {ann.n_workers} workers, least accurate first")
    save(plot.label_confidence(post), "label_confidence.png", "Label confidence")
    busiest = np.argsort(-ann.annotations_per_worker(), kind="stable")[: args.confusions]
    used = set()
    for j in busiest:
        w = ann.worker_ids[j]
        name = f"confusion_worker_{safe_name(w)}.png"
        if name in used:  # two ids that sanitise alike
            name = f"confusion_worker_{safe_name(w)}_{j}.png"
        used.add(name)
        save(plot.confusion_matrix(post, worker=w, idata=idata), name,
             f"Confusion of worker {w} ({int(ann.annotations_per_worker()[j])} annotations)")
    return written


def _report_tables(args, out: Path, post, idata, figures) -> list:
    from .diagnostics import az

    ann = post.annotations
    post.to_pandas().to_csv(out / "labels.csv", index=False)
    skills = post.worker_skills()
    skills.to_csv(out / "worker_skills.csv", index=False)
    names = ["accuracy", "class_prior"] if "class_prior" in idata.posterior else ["accuracy"]
    mcmc = post.samples is not None
    summary = az.summary(idata, var_names=names, kind="all" if mcmc else "stats")
    summary.to_csv(out / "summary.csv")
    lines = [f"# crowdinfer report: {Path(args.annotations).name}", "",
             f"- model: {post.model}, engine: {post.method}, {ann!r}",
             f"- posterior draws: {idata.posterior.attrs['draws']}"]
    if post.selection is not None:
        from .selection import describe

        lines.append(f"- model choice: {describe(post.selection)}")
    if post.diagnostics:
        for site, d in post.diagnostics.items():
            lines.append(f"- NUTS {site}: max r_hat {d['max_r_hat']:.3f}, min ESS {d['min_ess']:.0f}")
    if ann.gold is not None:
        lines.append(f"- accuracy on {int((ann.gold >= 0).sum())} gold items: {post.accuracy():.4f}")
    lines += [f"- warning: {w}" for w in post.warnings]
    for name, caption in figures:
        lines += ["", f"## {caption}", "", f"![{caption}]({name})"]
    worst = skills.sort_values("accuracy").head(10)
    lines += ["", "## The 10 least accurate workers", "",
              "| worker | accuracy | annotations |", "| --- | ---: | ---: |"]
    lines += [f"| {w} | {a:.3f} | {n} |" for w, a, n in
              zip(worst.worker, worst.accuracy, worst.n_annotations)]
    files = [n for n, _ in figures] + ["labels.csv", "worker_skills.csv", "summary.csv"]
    lines += ["", "Files: " + ", ".join(files)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return lines


# ------------------------------------------------------------------ demo
def _add_demo(sub, parents):
    p = sub.add_parser("demo", parents=parents, help=SUMMARIES["demo"])
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=200)
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--per-item", type=int, default=3, help="annotations per item")
    p.add_argument("--seed", type=int, default=0)


# ------------------------------------------------------------------ online
def _add_online(sub, parents):
    p = sub.add_parser(
        "online", parents=parents, help=SUMMARIES["online"],
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


def _check_online_flags(args) -> None:
    """The online flags, before any work."""
    from .online.pool import WORKER_KINDS

    if args.workers not in WORKER_KINDS[:3] and not args.workers.startswith("dataset:"):
        raise ValueError(f"unknown --workers {args.workers!r}: use uniform, structured, perfect "
                         "or dataset:NAME")
    if args.workers == "uniform" and not 0.0 < args.worker_accuracy <= 1.0:
        raise ValueError("--worker-accuracy must lie in (0, 1]")
    if args.prototypes < 0:
        raise ValueError(f"--prototypes must be >= 0, got {args.prototypes}")


def _cmd_online(args) -> int:
    import numpy as np
    import pandas as pd

    _check_outputs(args, [args.features], [("--out", args.out), ("--history", args.history)])
    _check_online_flags(args)
    path = _input_file(args.features)
    fmt = _format(args, path)
    if fmt not in ("csv", "tsv", "parquet"):
        raise ValueError(f"--format {fmt}: the features table must be csv, tsv or parquet")
    from . import online
    from .formats import read_features
    from .online.pool import pick_prototypes, simulated_workers

    table = read_features(args.features, fmt, item=args.item_col or "item", label=args.label_col)
    classes, codes, x = table.classes, table.labels, table.features
    k = len(classes)
    proto, keep = pick_prototypes(codes, k, args.prototypes, seed=args.seed)
    overrides = dict(sampler=args.sampler, seed=args.seed, risk_threshold=args.risk_threshold,
                     max_per_item=args.max_per_item)
    if args.no_early_stop:
        overrides["early_stop"] = None
    if args.prototypes == 0:
        overrides["calibration"] = "cv"
    config = online.preset(args.preset, k, **overrides)
    confusion = simulated_workers(args.workers, args.n_workers, classes,
                                  accuracy=args.worker_accuracy, seed=args.seed)
    learn = bool(table.columns)
    task = online.make_task(x[keep] if learn else len(keep), args.n_workers,
                            x[proto] if learn and len(proto) else None,
                            codes[proto] if learn and len(proto) else None, k)
    start = time.time()
    session = online.run_simulation(config, task, confusion, codes[keep], seed=args.seed,
                                    directory=args.dir, max_steps=args.max_steps,
                                    progress=_progress(args))
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
            "item": table.items[keep],
            "label": classes[np.asarray(state.decision)],
            "risk": np.asarray(state.risk),
            "annotations": np.asarray(state.item_count),
        }).to_csv(args.out, index=False)
    if args.history:
        hist.to_csv(args.history, index=False)
    session.close()
    return 0


def _cmd_demo(args) -> int:
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    import crowdinfer as ci

    steps = tqdm(total=4, desc="demo", unit="step", file=sys.stderr, disable=not _progress(args))
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



# ------------------------------------------------------------------ main
#: name -> (add the subcommand's parser: f(subparsers, parents), run it: f(args) -> exit status).
#: A new subcommand registers here with a line in :data:`SUMMARIES`; it gets the shared input flags
#: through ``parents``.  Only the command being run has its parser built (the others are listed by
#: their summary), so a command whose module is heavy does not slow down the others' ``--help``.
COMMANDS: dict = {
    "fit": (lambda sub, parents: _add_fit(sub, parents + [_fit_parent(None)]), _cmd_fit),
    "report": (lambda sub, parents: _add_report(sub, parents + [_fit_parent("bcc")]), _cmd_report),
    "demo": (_add_demo, _cmd_demo),
    "online": (_add_online, _cmd_online),
    "serve": (lambda sub, parents: _serve_module().add_arguments(
        sub.add_parser("serve", parents=parents, help=SUMMARIES["serve"])),
              lambda args: _serve_module().run(args)),
}

SUMMARIES: dict = {
    "fit": "infer true labels and worker skills from annotations",
    "report": "fit, then write figures and tables of the worker posteriors (report.md)",
    "demo": "simulate a crowd task and compare majority vote with Dawid-Skene",
    "online": "run the online annotation loop (seed 000, Algorithm 1) with simulated workers",
    "serve": "label your own data: a web server for annotators, driven by the online loop",
}


def _serve_module():
    import importlib

    return importlib.import_module("crowdinfer.serve.command")


def _invoked(argv) -> str | None:
    """The subcommand named in ``argv`` (the first word that is one), if any."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command named there gets its full parser."""
    parser = argparse.ArgumentParser(
        prog="crowdinfer",
        description="True labels and annotator skills from noisy crowd annotations.",
        epilog=_models_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    parents = [_input_parent()]
    wanted = None if argv is None else _invoked(argv)
    for name, (add, _) in COMMANDS.items():
        if argv is None or name == wanted:
            add(sub, parents)
        else:
            sub.add_parser(name, help=SUMMARIES.get(name))
    return parser


def _one_line(err: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if isinstance(err, (ValueError, OSError)) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        from .distributed import use_all_cpu_cores

        use_all_cpu_cores()  # effective when the command starts JAX (not when imported after it)
        if not getattr(args, "no_cache", False):
            enable_compilation_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
            return COMMANDS[args.command][1](args)
    except KeyboardInterrupt:
        print(f"crowdinfer {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line, never a traceback (CROWDINFER_DEBUG=1 shows it)
        if os.environ.get("CROWDINFER_DEBUG", "").strip() not in ("", "0"):
            raise
        print(f"crowdinfer {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
