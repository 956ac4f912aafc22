#!/usr/bin/env python
"""Speed, memory and accuracy of crowdinfer's Dawid-Skene against crowd-kit's ``DawidSkene``.

    python -m experiments.benchmarks.aggregation_speed            # full run (~10-20 min on 2 cores)
    python -m experiments.benchmarks.aggregation_speed --quick    # smoke run: 10^4 and 10^5 only

The full run writes ``experiments/results/aggregation_speed.{md,csv,png}``.  ``--quick`` writes to a
temporary folder (printed at the end) unless ``--out-dir`` is given, so a smoke run never overwrites
the committed results.

What is measured (same machine, same run, same data, the same number of EM iterations):

* crowdinfer: ``ci.fit(ann, prior="none", max_iter=20, tol=0, stop="objective")`` -- classic
  maximum-likelihood Dawid-Skene.  It stops on ``|change| < tol``, so ``tol=0`` never fires
  (negative tolerances are refused by ``crowdinfer.options``; up to commit 39804bd it stopped on
  ``|change| <= tol``, and earlier runs used ``tol=-inf``).  Every fit is checked to have run
  ``n_iter == 20``.
* crowd-kit: ``DawidSkene(n_iter=20, tol=-inf)``.  Its loop breaks when
  ``new_loss - loss < tol``; with ``tol=0`` it would stop as soon as the ELBO dips by float noise,
  so ``-inf`` again; every fit is checked to have ``len(loss_history_) == 20``.
* Both start from the (soft) majority vote.  One crowdinfer iteration is an M-step then an E-step
  (20 of each); crowd-kit does an M-step on the majority vote and then 20 x (E-step, M-step, ELBO).
* Every (tool, data set) pair runs in its own fresh subprocess, so crowdinfer's first call includes
  the jit compilation (the JAX backend is started before the clock, so it does not), and peak memory
  (``ru_maxrss``) belongs to that fit alone: the peak is reset (``/proc/self/clear_refs``) after the
  imports and data generation, and the increment is reported over the RSS at that point.
* crowdinfer time: first call, and steady state = median of 3 further calls on the same data.
  crowd-kit time: median of 3 calls (1 call if the first takes more than 60 s); crowd-kit is
  skipped above 10^6 annotations, and a call that runs past ~3 minutes is killed and reported.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from experiments.benchmarks.machine import REPO, frozen_source, loglog_slope
from experiments.benchmarks.machine import machine_info as _machine_info
from experiments.benchmarks.machine import run_worker as _run_worker
from experiments.benchmarks.machine import worker_parser

RESULTS = REPO / "experiments" / "results"
STEM = "aggregation_speed"
DATA_DIR = Path(os.environ.get("CROWDINFER_DATA", "/work/shared/data"))

N_ITER = 20
NEVER_STOP = float("-inf")  # crowd-kit: a tolerance no change can meet: exactly N_ITER iterations
NEVER_STOP_CROWDINFER = 0.0  # crowdinfer stops on |change| < tol: never with 0 (negative: refused)
SEED = 0
N_WORKERS = 200
N_CLASSES = 10
PER_ITEM = 10  # annotations per item; n_items = n_annotations / PER_ITEM
SIZES_FULL = [10**4, 10**5, 5 * 10**5, 10**6, 10**7]
SIZES_QUICK = [10**4, 10**5]
REAL = ["product", "web"]
STEADY_CALLS = 3
CROWDKIT_MAX_N = 10**6
CROWDKIT_SLOW_CALL_S = 60.0  # after a first call this slow, no repeats
CROWDKIT_CALL_LIMIT_S = 180.0  # ~3 minutes per call
SETUP_ALLOWANCE_S = 120.0  # imports + data generation in a worker subprocess

# targets of the issue
TARGET_SPEEDUP = 30.0
TARGET_SPEEDUP_N = 5 * 10**5
TARGET_ACC_GAP = 0.002
TARGET_SLOPE_BAND = 0.15  # PASS if |slope - 1| <= this
SLOPE_MIN_N = 10**5
TARGET_MEMORY_N = 10**7
TARGET_MEMORY_BYTES = 4e9


# ============================================================================ worker side
def _rss_now() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def _reset_peak() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _source_fingerprint() -> str:
    """Short hash of the crowdinfer source actually imported (the package and its models)."""
    import hashlib

    import crowdinfer
    import crowdinfer.models

    h = hashlib.sha1()
    for pkg in (crowdinfer, crowdinfer.models):
        root = Path(pkg.__file__).parent
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:10]


def _load(dataset: str):
    import crowdinfer as ci

    if dataset.startswith("synthetic:"):
        n = int(dataset.split(":", 1)[1])
        task = ci.datasets.synthetic(
            n_items=n // PER_ITEM, n_workers=N_WORKERS, n_classes=N_CLASSES,
            annotations_per_item=PER_ITEM, seed=SEED,
        )
        return task.annotations
    return ci.datasets.load(DATA_DIR / dataset).annotations


def _prepare_memory() -> dict:
    gc.collect()
    setup_peak = _peak_rss()
    baseline = _rss_now()
    reset = _reset_peak()
    return {"setup_peak_rss": setup_peak, "baseline_rss": baseline, "peak_reset": reset}


def _finish_memory(mem: dict) -> dict:
    peak = _peak_rss()
    if not mem["peak_reset"]:  # the mark may still hold the data generation's peak
        peak = max(peak, mem["baseline_rss"])
    return {**mem, "peak_rss": peak, "increment_rss": peak - mem["baseline_rss"]}


def work_crowdinfer(dataset: str) -> dict:
    import jax.numpy as jnp
    import crowdinfer as ci

    ann = _load(dataset)
    jnp.zeros(1).block_until_ready()  # start the backend outside the clock
    mem = _prepare_memory()

    def one_fit():
        fresh = dataclasses.replace(ann)  # an empty Annotations.derived cache, as a first fit
        start = time.perf_counter()
        post = ci.fit(fresh, prior="none", max_iter=N_ITER, tol=NEVER_STOP_CROWDINFER, stop="objective")
        seconds = time.perf_counter() - start
        if post.n_iter != N_ITER:
            raise RuntimeError(f"crowdinfer ran {post.n_iter} iterations, not {N_ITER}")
        acc = post.accuracy()
        del post
        gc.collect()
        return seconds, acc

    first, acc = one_fit()
    steady, accs = [], []
    for _ in range(STEADY_CALLS):
        s, a = one_fit()
        steady.append(s)
        accs.append(a)
    if any(a != acc for a in accs):
        raise RuntimeError(f"crowdinfer accuracy changed between calls: {acc} vs {accs}")
    return {
        "tool": "crowdinfer", "n_annotations": ann.n_annotations, "n_items": ann.n_items,
        "n_workers": ann.n_workers, "n_classes": ann.n_classes, "n_iter": N_ITER,
        "first_s": first, "calls_s": steady, "steady_s": statistics.median(steady),
        "accuracy": acc, "source": _source_fingerprint(), **_finish_memory(mem),
    }


def work_crowdkit(dataset: str) -> dict:
    from crowdkit.aggregation import DawidSkene

    ann = _load(dataset)
    sizes = dict(n_annotations=ann.n_annotations, n_items=ann.n_items, n_workers=ann.n_workers,
                 n_classes=ann.n_classes)
    df = ann.to_dataframe().rename(columns={"item": "task"})
    gold = ann.gold_labels()
    del ann
    mem = _prepare_memory()
    calls, accs = [], []
    for _ in range(STEADY_CALLS):
        start = time.perf_counter()
        ds = DawidSkene(n_iter=N_ITER, tol=NEVER_STOP)
        labels = ds.fit_predict(df)
        seconds = time.perf_counter() - start
        if len(ds.loss_history_) != N_ITER:
            raise RuntimeError(f"crowd-kit ran {len(ds.loss_history_)} iterations, not {N_ITER}")
        pred = labels.reindex(gold.index)
        accs.append(float((pred.to_numpy() == gold.to_numpy()).mean()))
        calls.append(seconds)
        del ds, labels, pred
        gc.collect()
        if seconds > CROWDKIT_SLOW_CALL_S:
            break
    return {
        "tool": "crowd-kit", **sizes, "n_iter": N_ITER, "first_s": calls[0], "calls_s": calls,
        "steady_s": statistics.median(calls), "accuracy": accs[0], **_finish_memory(mem),
    }


# ============================================================================ driver side
BUSY_LIMIT_CORES = 0.2  # other processes' CPU use above which a measurement is repeated
IDLE_WAIT_S = 300.0  # longest wait for the machine to go idle before a repeat


def wait_for_idle(max_wait: float = IDLE_WAIT_S) -> float:
    """Wait until the machine's CPU use stays under 5% for 5 s; returns the seconds waited."""
    import psutil

    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        if psutil.cpu_percent(interval=5.0) < 5.0:
            break
    return time.perf_counter() - start


def measure(tool: str, dataset: str, timeout: float, retries: int) -> dict:
    """Run a worker; while other processes loaded the CPU meanwhile, wait for idle and repeat
    (up to ``retries`` times), keeping the measurement taken on the quietest machine."""
    best = None
    for attempt in range(retries + 1):
        if attempt:
            waited = wait_for_idle()
            print(f"    (other processes used {best['other_load_cores']:.2f} cores: repeating after "
                  f"{waited:.0f} s wait for an idle machine)", flush=True)
        res = run_worker(tool, dataset, timeout)
        if res.get("status") != "ok":
            return res
        res["attempts"] = attempt + 1
        if best is None or res["other_load_cores"] < best["other_load_cores"]:
            best = res
        if best["other_load_cores"] <= BUSY_LIMIT_CORES:
            break
    return best


WORKER_SNAP: Path | None = None  # the copy of the source the workers run on (machine.frozen_source)


def run_worker(tool: str, dataset: str, timeout: float) -> dict:
    print(f"  {tool:10s} {dataset:20s} ...", end="", flush=True)
    run = _run_worker(__spec__.name, [tool, dataset], timeout, WORKER_SNAP)
    if run.status == "killed":
        return {"tool": tool, "status": f"killed: ran past {timeout:.0f} s (limit ~3 min per call)"}
    if run.result is None:
        return {"tool": tool, "status": run.status}
    res = {**run.result, "status": "ok", "other_load_cores": run.other_load_cores}
    wall, foreign = run.wall_s, run.other_load_cores
    print(f" first {res['first_s']:.3f} s, median {res['steady_s']:.3f} s, acc {res['accuracy']:.4f},"
          f" peak {res['peak_rss'] / 1e6:.0f} MB ({wall:.0f} s wall, other load {foreign:.2f} cores)",
          flush=True)
    return res


def machine_info() -> dict:
    return _machine_info(("jax", "jaxlib", "crowd-kit", "numpy", "pandas", "crowdinfer"))


def fmt_n(n: int) -> str:
    e = round(math.log10(n)) if n > 0 else 0
    if n >= 10**4 and n == 10**e:
        return f"10^{e}"
    for e in range(7, 3, -1):
        if n >= 10**e and n % 10**e == 0:
            return f"{n // 10**e}·10^{e}"
    return f"{n:,}"


def fmt_s(x) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def table_head(title: str, columns: list, align: list) -> list:
    """A markdown section title, a table's header row and its alignment row."""
    return [f"## {title}\n", "| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]


def both(by: dict, dataset: str) -> tuple:
    """The crowdinfer and crowd-kit rows of ``dataset`` (None where missing)."""
    return by.get((dataset, "crowdinfer")), by.get((dataset, "crowd-kit"))


def write_outputs(rows: list[dict], info: dict, out: Path, quick: bool, started: str,
                  total_s: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # ------------------------------------------------------------------ CSV
    import csv

    cols = ["dataset", "tool", "status", "n_annotations", "n_items", "n_workers", "n_classes",
            "n_iter", "first_s", "steady_s", "calls_s", "ns_per_annotation", "accuracy",
            "peak_rss_mb", "baseline_rss_mb", "increment_rss_mb", "setup_peak_rss_mb", "peak_reset",
            "other_load_cores", "attempts", "source"]
    with open(out / f"{STEM}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            rec = dict(r)
            if r.get("status") == "ok":
                rec["ns_per_annotation"] = f"{r['steady_s'] / r['n_annotations'] * 1e9:.2f}"
                for k in ("peak_rss", "baseline_rss", "increment_rss", "setup_peak_rss"):
                    rec[k + "_mb"] = f"{r[k] / 1e6:.1f}"
                rec["calls_s"] = ";".join(f"{c:.4f}" for c in r["calls_s"])
                for k in ("first_s", "steady_s"):
                    rec[k] = f"{r[k]:.4f}"
                rec["accuracy"] = f"{r['accuracy']:.5f}"
                rec["other_load_cores"] = f"{r['other_load_cores']:.2f}"
            w.writerow(rec)

    by = {(r["dataset"], r["tool"]): r for r in rows}
    ok = lambda r: r is not None and r.get("status") == "ok"  # noqa: E731
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    synth = [d for d in datasets if d.startswith("synthetic:")]

    # ------------------------------------------------------------------ plot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for tool, key, style, name in [
        ("crowdinfer", "steady_s", "o-", "crowdinfer, steady state (median of 3)"),
        ("crowdinfer", "first_s", "o--", "crowdinfer, first call (incl. jit compile)"),
        ("crowd-kit", "steady_s", "s-", "crowd-kit DawidSkene (median)"),
    ]:
        pts = [(by[d, tool]["n_annotations"], by[d, tool][key]) for d in synth if ok(by.get((d, tool)))]
        if pts:
            ax.plot(*zip(*pts), style, label=name, alpha=0.4 if key == "first_s" else 1.0,
                    color="C0" if tool == "crowdinfer" else "C1")
    for d in datasets:
        if d in synth:
            continue
        for tool, marker, color in [("crowdinfer", "*", "C0"), ("crowd-kit", "*", "C1")]:
            r = by.get((d, tool))
            if ok(r):
                ax.plot(r["n_annotations"], r["steady_s"], marker, color=color, markersize=11)
                ax.annotate(d, (r["n_annotations"], r["steady_s"]), textcoords="offset points",
                            xytext=(6, -3), fontsize=8, color=color)
    ci_pts = [(by[d, "crowdinfer"]["n_annotations"], by[d, "crowdinfer"]["steady_s"])
              for d in synth if ok(by.get((d, "crowdinfer")))]
    if ci_pts:
        n0, t0 = ci_pts[-1]
        xs = [min(n for n, _ in ci_pts), n0]
        ax.plot(xs, [t0 * x / n0 for x in xs], ":", color="grey", label="linear (slope 1) guide")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("annotations")
    ax.set_ylabel(f"seconds per fit ({N_ITER} EM iterations)")
    ax.set_title(f"Dawid-Skene, K={N_CLASSES}, {N_WORKERS} workers (stars: real data sets)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{STEM}.png", dpi=120)
    plt.close(fig)

    # ------------------------------------------------------------------ markdown
    L = []
    L.append("# Aggregation speed: crowdinfer vs crowd-kit Dawid-Skene\n")
    if quick:
        L.append("**QUICK SMOKE RUN (`--quick`): 10^4 and 10^5 only -- not the benchmark's results.**\n")
    L.append("## How to run\n")
    L.append("```\npython -m experiments.benchmarks.aggregation_speed          # full run, writes "
             f"experiments/results/{STEM}.{{md,csv,png}}\n"
             "python -m experiments.benchmarks.aggregation_speed --quick  # smoke run (10^4, 10^5) "
             "to a temporary folder\n```\n")
    L.append("Needs the `bench` extra (`pip install -e .[bench]`: crowd-kit, psutil) and the real data "
             f"sets under `$CROWDINFER_DATA` (default `{DATA_DIR}`).\n")
    L.append("## Machine\n")
    L.append(f"- date: {started} (total benchmark wall time {total_s / 60:.1f} min)")
    L.append(f"- CPU: {info['cpu']}; {info['logical_cores']} logical cores "
             f"({info['physical_cores']} physical, {info['affinity_cores']} usable); "
             f"RAM {info['ram_gb']:.1f} GB; JAX device (chosen by JAX): {info['device']}")
    L.append(f"- {info['os']}, Python {info['python']}")
    L.append(f"- jax {info['jax']}, jaxlib {info['jaxlib']}, crowd-kit {info['crowd-kit']}, "
             f"numpy {info['numpy']}, pandas {info['pandas']}, crowdinfer {info['crowdinfer']} "
             f"(git {info['commit']}); XLA_FLAGS {info['xla_flags']}")
    loads = [r["other_load_cores"] for r in rows if ok(r)]
    if loads:
        worst = max(rows, key=lambda r: r.get("other_load_cores", -1))
        L.append(f"- other processes' CPU use during the measurements: at most {max(loads):.2f} cores "
                 f"(during {worst['tool']} on {worst['dataset']}), mean {statistics.mean(loads):.2f}"
                 + (" -- **the machine was not idle: timings are distorted**" if max(loads) > BUSY_LIMIT_CORES
                    else " (idle machine)"))
    sources = sorted({r["source"] for r in rows if ok(r) and "source" in r})
    if len(sources) > 1:
        L.append(f"- **the crowdinfer source changed during the run** (fingerprints {', '.join(sources)}):"
                 " rows are not all from the same code")
    elif sources:
        L.append(f"- crowdinfer source fingerprint (sha1 of crowdinfer/ and models/ *.py): {sources[0]}"
                 + (", a copy taken at the start of the run (`--no-freeze` to use the live tree)"
                    if info.get("frozen") else ""))
    L.append("")
    L.append("## Set-up\n")
    L.append(f"- Synthetic tasks: `ci.datasets.synthetic(n_items=n/{PER_ITEM}, n_workers={N_WORKERS}, "
             f"n_classes={N_CLASSES}, annotations_per_item={PER_ITEM}, seed={SEED})` (worker accuracies "
             "uniform in [0.5, 0.9]); real: `product` (binary) and `web` (5 grades) from "
             "`ci.datasets.load`, accuracy on the items with gold.")
    L.append(f"- crowdinfer: `ci.fit(ann, prior=\"none\", max_iter={N_ITER}, tol=0, stop=\"objective\")`"
             f" (maximum-likelihood DS); crowd-kit: `DawidSkene(n_iter={N_ITER}, tol=-inf)` on "
             "`ann.to_dataframe().rename(columns={\"item\": \"task\"})`. Both run exactly "
             f"{N_ITER} EM iterations (checked on every call): no stopping test can fire. crowd-kit "
             "breaks on `new_loss - loss < tol`, so `tol=0` would stop it at any float dip of the "
             "ELBO; crowdinfer stops on `|change| < tol`, which `tol=0` never meets (negative "
             "tolerances are refused; up to commit 39804bd it stopped on `|change| <= tol`, and "
             "earlier runs of this benchmark used `tol=-inf`).")
    L.append("- Each (tool, data set) runs in a fresh subprocess. crowdinfer: *first* = first call "
             "(includes jit compilation; the JAX backend is started beforehand), *steady* = median of "
             f"{STEADY_CALLS} further calls on the same data (each call includes moving the annotations "
             f"to the device and the majority-vote start). crowd-kit: median of {STEADY_CALLS} calls "
             f"(1 if a call takes > {CROWDKIT_SLOW_CALL_S:.0f} s); not run above {fmt_n(CROWDKIT_MAX_N)} "
             "annotations.")
    L.append("- Accuracy: crowdinfer `post.accuracy()` (argmax, ties split); crowd-kit its "
             "`fit_predict` labels against `ann.gold_labels()`.")
    L.append("- Memory: peak RSS (`ru_maxrss`) of the subprocess over all its calls, after resetting the "
             "peak mark (`/proc/self/clear_refs`) once imports and data generation are done; "
             "*increment* = peak minus the RSS at that point (baseline). MB = 10^6 bytes.\n")

    # speed table
    L += table_head("Time and accuracy", [
        "data set", "annotations", "crowdinfer first call (s)", "crowdinfer steady (s)", "crowd-kit (s)",
        "speed-up steady", "speed-up first call", "acc crowdinfer", "acc crowd-kit", "Δacc"],
        ["---"] + ["---:"] * 9)
    for d in datasets:
        a, b = both(by, d)
        name = f"synthetic {fmt_n(int(d.split(':')[1]))}" if d in synth else d
        n = a["n_annotations"] if ok(a) else (b["n_annotations"] if ok(b) else "?")
        cells = [name, f"{n:,}" if isinstance(n, int) else n]
        cells += [fmt_s(a["first_s"]), fmt_s(a["steady_s"])] if ok(a) else [a["status"] if a else "—"] * 2
        cells.append(fmt_s(b["steady_s"]) + (f" ({len(b['calls_s'])} call)" if len(b["calls_s"]) == 1 else "")
                     if ok(b) else (b["status"] if b else "—"))
        if ok(a) and ok(b):
            cells += [f"{b['steady_s'] / a['steady_s']:.1f}x", f"{b['steady_s'] / a['first_s']:.1f}x"]
        else:
            cells += ["—", "—"]
        cells.append(f"{a['accuracy']:.4f}" if ok(a) else "—")
        cells.append(f"{b['accuracy']:.4f}" if ok(b) else "—")
        cells.append(f"{a['accuracy'] - b['accuracy']:+.4f}" if ok(a) and ok(b) else "—")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")

    # linear growth
    L += table_head("Growth with size (synthetic)", [
        "annotations", "crowdinfer steady ns/annotation", "crowdinfer first-call ns/annotation",
        "crowd-kit ns/annotation", "crowdinfer compile + trace ≈ first − steady (s)"], ["---:"] * 5)
    for d in synth:
        a, b = both(by, d)
        n = int(d.split(":")[1])
        L.append("| " + " | ".join([
            fmt_n(n),
            f"{a['steady_s'] / a['n_annotations'] * 1e9:.0f}" if ok(a) else "—",
            f"{a['first_s'] / a['n_annotations'] * 1e9:.0f}" if ok(a) else "—",
            f"{b['steady_s'] / b['n_annotations'] * 1e9:.0f}" if ok(b) else "—",
            f"{a['first_s'] - a['steady_s']:.2f}" if ok(a) else "—",
        ]) + " |")
    ci_fit = [(by[d, "crowdinfer"]["n_annotations"], by[d, "crowdinfer"]["steady_s"]) for d in synth
              if ok(by.get((d, "crowdinfer"))) and by[d, "crowdinfer"]["n_annotations"] >= SLOPE_MIN_N]
    ck_fit = [(by[d, "crowd-kit"]["n_annotations"], by[d, "crowd-kit"]["steady_s"]) for d in synth
              if ok(by.get((d, "crowd-kit"))) and by[d, "crowd-kit"]["n_annotations"] >= SLOPE_MIN_N]
    slope_ci, slope_ck = loglog_slope(ci_fit), loglog_slope(ck_fit)
    L.append("")
    if slope_ci is not None:
        L.append(f"Least-squares log-log slope of steady-state time vs annotations over the sizes ≥ "
                 f"{fmt_n(SLOPE_MIN_N)}: **crowdinfer {slope_ci:.3f}** "
                 f"({', '.join(fmt_n(n) for n, _ in ci_fit)}); crowd-kit "
                 + (f"{slope_ck:.3f} ({', '.join(fmt_n(n) for n, _ in ck_fit)})." if slope_ck is not None
                    else "— (fewer than 2 sizes)."))
    else:
        L.append(f"Log-log slope: fewer than 2 sizes ≥ {fmt_n(SLOPE_MIN_N)} in this run.")
    L.append("")

    # memory
    L += table_head("Peak memory", ["data set", "tool", "baseline RSS (MB)", "peak RSS (MB)",
                                    "increment (MB)", "increment bytes/annotation"],
                    ["---"] * 2 + ["---:"] * 4)
    for d in datasets:
        name = f"synthetic {fmt_n(int(d.split(':')[1]))}" if d in synth else d
        for tool in ("crowdinfer", "crowd-kit"):
            r = by.get((d, tool))
            if not ok(r):
                L.append(f"| {name} | {tool} | — | — | — | {r['status'] if r else '—'} |")
                continue
            L.append(f"| {name} | {tool} | {r['baseline_rss'] / 1e6:.0f} | {r['peak_rss'] / 1e6:.0f} | "
                     f"{r['increment_rss'] / 1e6:.0f} | {r['increment_rss'] / r['n_annotations']:.0f} |")
    if not all(r.get("peak_reset", True) for r in rows if ok(r)):
        L.append("\n(peak mark could not be reset on this system: peaks may include data generation)")
    L.append("")

    # targets
    L += table_head("Targets", ["target", "measured", "result"], ["---"] * 3)
    key = f"synthetic:{TARGET_SPEEDUP_N}"
    a, b = both(by, key)
    if ok(a) and ok(b):
        sp = b["steady_s"] / a["steady_s"]
        gap = abs(a["accuracy"] - b["accuracy"])
        res = "PASS" if sp >= TARGET_SPEEDUP and gap <= TARGET_ACC_GAP else "FAIL"
        L.append(f"| steady state ≥ {TARGET_SPEEDUP:.0f}x faster than crowd-kit at {fmt_n(TARGET_SPEEDUP_N)} "
                 f"annotations, accuracy within {TARGET_ACC_GAP} | {sp:.1f}x "
                 f"({a['steady_s']:.3f} s vs {b['steady_s']:.3f} s); accuracy gap {gap:.4f} "
                 f"(speed {'ok' if sp >= TARGET_SPEEDUP else 'missed'}, accuracy "
                 f"{'ok' if gap <= TARGET_ACC_GAP else 'missed'}) | **{res}** |")
    else:
        L.append(f"| ≥ {TARGET_SPEEDUP:.0f}x at {fmt_n(TARGET_SPEEDUP_N)} | not measured in this run | — |")
    if slope_ci is not None and len(ci_fit) >= 3:
        res = "PASS" if abs(slope_ci - 1) <= TARGET_SLOPE_BAND else "FAIL"
        L.append(f"| time grows linearly: log-log slope within 1 ± {TARGET_SLOPE_BAND} over sizes ≥ "
                 f"{fmt_n(SLOPE_MIN_N)} | {slope_ci:.3f} | **{res}** |")
    else:
        L.append(f"| linear growth (slope ≈ 1) | fewer than 3 sizes ≥ {fmt_n(SLOPE_MIN_N)} in this run | — |")
    a = by.get((f"synthetic:{TARGET_MEMORY_N}", "crowdinfer"))
    if ok(a):
        res = "PASS" if a["peak_rss"] < TARGET_MEMORY_BYTES else "FAIL"
        L.append(f"| {fmt_n(TARGET_MEMORY_N)} annotations fit in < {TARGET_MEMORY_BYTES / 1e9:.0f} GB | "
                 f"peak RSS {a['peak_rss'] / 1e9:.2f} GB (whole process; fit increment "
                 f"{a['increment_rss'] / 1e9:.2f} GB) | **{res}** |")
    else:
        L.append(f"| {fmt_n(TARGET_MEMORY_N)} annotations < 4 GB | "
                 f"{a['status'] if a else 'not measured in this run'} | — |")
    L.append("")
    L.append(f"![time vs annotations]({STEM}.png)\n")
    L.append(f"Raw numbers (every call's time): `{STEM}.csv`.\n")
    (out / f"{STEM}.md").write_text("\n".join(L))


def main(argv=None) -> None:
    p = worker_parser(__doc__, "smoke run: synthetic 10^4 and 10^5 only",
                      f"where to write {STEM}.{{md,csv,png}} (default experiments/results; "
                      "a temporary folder with --quick)", ("TOOL", "DATASET"))
    p.add_argument("--skip-real", action="store_true", help="synthetic sizes only")
    p.add_argument("--retries", type=int, default=2,
                   help="repeat a measurement (after waiting for an idle machine) up to this many "
                        f"times while other processes used more than {BUSY_LIMIT_CORES} cores")
    args = p.parse_args(argv)

    if args.worker:
        tool, dataset = args.worker
        fn = {"crowdinfer": work_crowdinfer, "crowd-kit": work_crowdkit}[tool]
        res = fn(dataset)
        print("RESULT " + json.dumps(res), flush=True)
        return

    out = args.out_dir
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="aggregation_speed_quick_")) if args.quick else RESULTS
    sizes = SIZES_QUICK if args.quick else SIZES_FULL
    datasets = [f"synthetic:{n}" for n in sizes] + ([] if args.skip_real else REAL)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    info = machine_info()
    global WORKER_SNAP
    WORKER_SNAP = snap = None if args.no_freeze else frozen_source("aggregation_speed_src_")
    info["frozen"] = snap is not None
    print(f"aggregation speed benchmark, {started}: {info['logical_cores']} cores, "
          f"{info['ram_gb']:.1f} GB, jax {info['jax']}, crowd-kit {info['crowd-kit']}", flush=True)
    t0 = time.perf_counter()
    rows = []
    for d in datasets:
        n = int(d.split(":")[1]) if d.startswith("synthetic:") else 0
        res = measure("crowdinfer", d, SETUP_ALLOWANCE_S + 4 * CROWDKIT_CALL_LIMIT_S, args.retries)
        rows.append({"dataset": d, **res})
        if n > CROWDKIT_MAX_N:
            rows.append({"dataset": d, "tool": "crowd-kit",
                         "status": f"skipped (> {fmt_n(CROWDKIT_MAX_N)} annotations)"})
            print(f"  {'crowd-kit':10s} {d:20s} skipped (> {CROWDKIT_MAX_N} annotations)")
            continue
        # one call of ~3 min, or three calls of < 60 s each, plus set-up
        res = measure("crowd-kit", d, SETUP_ALLOWANCE_S + CROWDKIT_CALL_LIMIT_S, args.retries)
        rows.append({"dataset": d, **res})
    total = time.perf_counter() - t0
    if snap is not None:
        import shutil

        shutil.rmtree(snap, ignore_errors=True)
    write_outputs(rows, info, out, args.quick, started, total)
    print(f"wrote {out / (STEM + '.md')}, {out / (STEM + '.csv')}, {out / (STEM + '.png')} "
          f"({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
