"""Shared machinery of the online-annotation experiments (``online_sandbox.py``, ``online_real.py``).

* :func:`run_curve` -- one simulated run of the loop of ``crowdinfer.online`` (seed 000, Algorithm 1)
  with ``early_stop=None``, so the whole trajectory up to "every item finished or at the cap" is
  recorded; the step where early stopping with ``beta`` steps (sec. 4.5.9) *would* have stopped is
  flagged (``would_stop``), by :func:`stall_stop`, the library's stall rule read off the
  trajectory and counted in steps (the library counts answers; the trajectory does not depend on
  ``early_stop``, so the prefix of the full run *is* the early-stopped run);
* :func:`mean_curve`, :func:`summarise`, :func:`reach` -- curves averaged over seeds on a common grid
  of annotations per item (a run that has ended keeps its final accuracy: it spends nothing more),
  accuracy at fixed budgets, area under the accuracy curve, and the budget at which a curve first
  reaches an accuracy;
* :func:`plot_curves` -- accuracy against annotations per item, mean over seeds with a min-max band,
  the early-stop points marked ``x``.

Seeds: a run's seed sets the simulated worker pool (chosen by the caller), the answers and the
loop's own PRNG key (item sampling, learner initialisation).  The configuration's ``seed`` field is
kept at 0 so that every seed of a configuration shares one compilation; the loop's key is replaced
after ``init`` instead.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from crowdinfer import online, simulate  # noqa: E402
from crowdinfer.online.session import Session  # noqa: E402
from crowdinfer.online.state import answered_by  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "online"
BETA = 5  # early stopping after beta steps without growth of the finished set (sec. 4.5.9)
BUDGETS = (0.25, 0.5, 1.0, 1.5)  # annotations per item at which accuracies are compared
PRESET_ORDER = ("ds_model", "lean", "improved_lean", "efficient_annotation")
LABELS = {"ds_model": "online DS", "lean": "Lean", "improved_lean": "Lean* (improved)",
          "efficient_annotation": "efficient annotation"}


def command_line(doc: str, config: dict, argv, quick: dict, quick_help: str,
                 experiments=None):
    """An experiment's command line: a flag per ``config`` entry (``--name-with-dashes``; a tuple
    default takes several values), ``--quick`` (applies the settings ``quick`` and writes under
    ``<out>/quick``) and ``--out`` (default :data:`OUT`).  Returns ``(cfg, out, wanted)``: the
    parsed settings, the output folder (made) and the experiments asked for in ``--experiments``
    (checked against ``experiments``, default :data:`EXPERIMENTS`).  Turns the compile cache on."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in config.items():
        if isinstance(default, tuple):
            parser.add_argument(f"--{name.replace('_', '-')}", nargs="+", default=list(default))
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=None)
    cfg = parser.parse_args(argv)
    out = Path(cfg.out) if cfg.out else OUT
    if cfg.quick:
        for name, value in quick.items():
            setattr(cfg, name, value)
        out = out / "quick"
    wanted = [e.strip() for e in cfg.experiments.split(",") if e.strip()]
    bad = sorted(set(wanted) - set(experiments or EXPERIMENTS))
    if bad:
        parser.error(f"unknown experiments {bad}; choose from {EXPERIMENTS}")
    out.mkdir(parents=True, exist_ok=True)
    enable_compile_cache()
    return cfg, out, wanted


def enable_compile_cache(path: str | None = None) -> None:
    """Persistent XLA cache, so that separate invocations do not compile the same update again
    (the CLI's switch: off when ``CROWDINFER_NO_CACHE`` is set, as in the test suite)."""
    from crowdinfer.cli import enable_compilation_cache

    enable_compilation_cache(
        path or os.environ.get("CROWDINFER_JAX_CACHE", "/tmp/crowdinfer_online_jax_cache"))


def stall_stop(finished, spent, limit) -> int | None:
    """The early-stopping rule read off a recorded run: the index (0-based update) of the first
    update after which ``spent`` (cumulative per update: answers, or steps) has grown by ``limit``
    or more since the finished set last grew past its maximum (the maximum starts at 0, and
    nothing is spent before the first update); None if that never happens.  With ``spent`` =
    answers and ``limit = early_stop * n_items`` it is the rule of ``crowdinfer.online``
    (``loop.stop_reason``; tests/test_experiments.py checks that a run with ``early_stop`` stops
    exactly there); with ``spent`` = steps and ``limit = beta``, the paper's rule of ``beta`` steps
    (sec. 4.5.9) that the curves mark (:func:`would_stop`)."""
    best, at = 0, 0
    for t, (size, now) in enumerate(zip(finished, spent)):
        if size > best:
            best, at = size, now
        if now - at >= limit:
            return t
    return None


def would_stop(finished: np.ndarray, beta: int = BETA) -> int | None:
    """Index (0-based update) after which early stopping with ``beta`` *steps* without growth of
    the finished set (sec. 4.5.9, the rule of the curves' ``x`` marks) would end the run, or None."""
    return stall_stop(finished, np.arange(1, len(finished) + 1), beta)


def hit_greedy_proposer(alpha: int):
    """Greedy task assignment *per HIT*, as the official ``GreedyTaskAssignmentSampler`` of seed 001
    (``online_label/sampler/task_assignment_sampler.py``): for each of the ``hits_per_step`` HITs,
    ``hit_size`` distinct eligible items are drawn at random, and the HIT goes to the worker with the
    largest mean expected accuracy on them, ``mean_i sum_y q_i(y) w_j[y, y]`` (eq. 7), among the
    workers that have not had a HIT this step and stay within ``alpha`` annotations (ties broken at
    random).  Items the chosen worker already answered are left out of the HIT.  Implemented here,
    outside ``crowdinfer.online``, from the state's posterior and MAP confusions; it differs from
    ``sampler="greedy"`` (which assigns item by item and lets one worker take a whole step)."""

    def propose(config, state, rng):
        q = np.exp(np.asarray(state.log_q))
        acc = np.diagonal(np.asarray(state.confusion), axis1=1, axis2=2)  # (M, K)
        load = np.asarray(state.worker_count).copy()
        free = np.array(~state.finished & (state.item_count < config.max_per_item))
        m = acc.shape[0]
        usable = np.ones(m, bool)
        items, workers = [], []
        for _ in range(config.hits_per_step):
            pool = np.flatnonzero(free)
            ok = usable & (load + config.hit_size <= alpha)
            if pool.size == 0 or not ok.any():
                break
            hit = rng.choice(pool, min(config.hit_size, pool.size), replace=False)
            score = (q[hit] @ acc.T).mean(0) + rng.random(m) * 1e-8
            j = int(np.argmax(np.where(ok, score, -np.inf)))
            hit = hit[~np.asarray(answered_by(state.answered, hit, np.int32(j)))]
            usable[j] = False
            free[hit] = False
            load[j] += hit.size
            items.append(hit)
            workers.append(np.full(hit.size, j))
        if not items:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        return np.concatenate(items).astype(np.int32), np.concatenate(workers).astype(np.int32)

    return propose


def run_curve(config: online.OnlineConfig, task: online.Task, confusion, truth, seed: int,
              max_steps: int = 10_000, beta: int = BETA, proposer=None) -> pd.DataFrame:
    """One simulated run to its natural end; one row per update plus a row for 0 annotations.
    ``proposer(config, state, rng) -> (items, workers)`` replaces ``Session.propose``."""
    if config.early_stop is not None:
        raise ValueError("curves are recorded with early_stop=None (the stop is marked afterwards)")
    truth = np.asarray(truth)
    first = Session(config, task)  # the state before any answer (the curve's first point)
    initial = {"step": 0, "annotations": 0, "per_item": 0.0,
               "accuracy": online.label_accuracy(first.state, truth), "finished": 0.0,
               "finished_precision": np.nan, "eligible": float(task.n_items)}
    first.close()
    rng = np.random.default_rng(int(seed) + 555)
    host = None if proposer is None else (lambda s: proposer(config, s.state, rng))
    start = time.perf_counter()
    session = online.run_simulation(config, task, confusion, truth, seed=int(seed),
                                    max_steps=max_steps, loop_seed=100_003 + 7919 * int(seed),
                                    host_proposer=host)
    hist = pd.concat([pd.DataFrame([initial]), session.history_frame()], ignore_index=True)
    hist["seed"] = int(seed)
    hist["seconds"] = time.perf_counter() - start
    stop = would_stop(hist["finished"].to_numpy()[1:], beta)
    hist["would_stop"] = False
    if stop is not None:
        hist.loc[stop + 1, "would_stop"] = True
    worker_load = np.asarray(session.state.worker_count)
    hist["max_worker_share"] = worker_load.max() / max(worker_load.sum(), 1)
    session.close()
    return hist


# --------------------------------------------------------------------------- summaries
def grid_for(runs: pd.DataFrame, step: float = 0.005) -> np.ndarray:
    return np.arange(0.0, runs["per_item"].max() + step / 2, step)


def interp_run(run: pd.DataFrame, grid: np.ndarray, column: str = "accuracy") -> np.ndarray:
    """A run's curve on ``grid`` (held at its final value after it ended)."""
    return np.interp(grid, run["per_item"].to_numpy(), run[column].to_numpy())


def mean_curve(runs: pd.DataFrame, grid: np.ndarray, column: str = "accuracy"):
    """(mean, min, max) over seeds on ``grid``."""
    curves = np.stack([interp_run(r, grid, column) for _, r in runs.groupby("seed")])
    return curves.mean(0), curves.min(0), curves.max(0)


def reach(grid: np.ndarray, curve: np.ndarray, target: float) -> float:
    """First budget (annotations per item) where ``curve`` reaches ``target``, linearly
    interpolated between grid points; NaN if never."""
    hit = np.flatnonzero(curve >= target - 1e-9)
    if hit.size == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(grid[0])
    x0, x1, y0, y1 = grid[i - 1], grid[i], curve[i - 1], curve[i]
    return float(x0 + (target - y0) / (y1 - y0) * (x1 - x0)) if y1 > y0 else float(x1)


def auc(grid: np.ndarray, curve: np.ndarray, upto: float) -> float:
    """Mean accuracy over budgets 0..``upto`` annotations per item (area / upto)."""
    keep = grid <= upto + 1e-12
    return float(np.trapezoid(curve[keep], grid[keep]) / upto)


def summarise(runs: pd.DataFrame, keys: list[str], auc_upto: float) -> pd.DataFrame:
    """One row per variant (``keys``): end of run, early-stop point, accuracy at budgets, AUC;
    means over seeds (curves averaged first for the budget/AUC columns)."""
    rows = []
    for values, group in runs.groupby(keys, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        grid = grid_for(group)
        grid = np.arange(0.0, max(auc_upto, grid[-1]) + 0.0025, 0.005)
        mean, _, _ = mean_curve(group, grid)
        ends = group.groupby("seed").tail(1)
        stops = group[group["would_stop"]]
        n_seeds = group["seed"].nunique()
        row = dict(zip(keys, values))
        row.update({
            "seeds": n_seeds,
            "end_per_item": ends["per_item"].mean(),
            "end_accuracy": ends["accuracy"].mean(),
            "end_accuracy_sd": ends["accuracy"].std(ddof=1) if n_seeds > 1 else np.nan,
            "end_finished_precision": ends["finished_precision"].mean(),
            "stop_per_item": stops["per_item"].mean() if len(stops) else np.nan,
            "stop_accuracy": stops["accuracy"].mean() if len(stops) else np.nan,
            "stopped_runs": len(stops),
            "steps": ends["step"].mean(),
            "seconds_per_run": ends["seconds"].mean(),
            f"auc_0_{auc_upto:g}": auc(grid, mean, auc_upto),
        })
        for b in BUDGETS:
            row[f"acc@{b:g}"] = float(np.interp(b, grid, mean))
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- plots
def plot_curves(ax, runs: pd.DataFrame, key: str, order=None, labels=None, xmax=None,
                colors=None, linestyle="-", suffix=""):
    """Mean accuracy curve per value of ``key`` with a min-max band; ``x`` at the mean early-stop
    point."""
    order = order or list(dict.fromkeys(runs[key]))
    cmap = plt.get_cmap("tab10")
    for n, value in enumerate(order):
        group = runs[runs[key] == value]
        if group.empty:
            continue
        grid = grid_for(group)
        mean, lo, hi = mean_curve(group, grid)
        end = group.groupby("seed")["per_item"].max().max()  # the mean holds ended runs flat
        keep = grid <= end + 1e-9
        color = (colors or {}).get(value, cmap(n % 10))
        label = (labels or {}).get(value, str(value)) + suffix
        ax.plot(grid[keep], mean[keep], linestyle, color=color, label=label, lw=1.6)
        if group["seed"].nunique() > 1 and linestyle == "-":
            ax.fill_between(grid[keep], lo[keep], hi[keep], color=color, alpha=0.15, lw=0)
        stops = group[group["would_stop"]]
        if len(stops):
            ax.plot(stops["per_item"].mean(), stops["accuracy"].mean(), "x", color=color, ms=9,
                    mew=2.2)
    ax.set_xlabel("annotations per item")
    ax.set_ylabel("label accuracy")
    if xmax is not None:
        ax.set_xlim(0, xmax)
    ax.grid(alpha=0.3)


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = list(frame.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, (float, np.floating)):
                cells.append("nan" if np.isnan(v) else format(v, floatfmt))
            else:
                cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


EXPERIMENTS = ("presets", "noise", "samplers", "risk", "workers", "frequency", "skills")


# --------------------------------------------------------------------------- run specifications
def specs(n_workers, n_items):
    """(variant, experiments, preset, noise, n_workers, overrides)."""
    alpha = max(1, round(2000 * n_items / 36000))
    ea, ds = "efficient_annotation", "ds_model"
    out = [
        (ds, ("presets", "noise", "samplers"), ds, "structured", n_workers, {}),
        ("lean", ("presets",), "lean", "structured", n_workers, {}),
        ("improved_lean", ("presets",), "improved_lean", "structured", n_workers, {}),
        (ea, ("presets", "noise", "samplers", "risk", "workers", "frequency"), ea, "structured",
         n_workers, {}),
        (f"{ds}|uniform", ("noise",), ds, "uniform", n_workers, {}),
        (f"{ea}|uniform", ("noise",), ea, "uniform", n_workers, {}),
        (f"{ea}|greedy", ("samplers",), ea, "structured", n_workers,
         dict(sampler="greedy", max_per_worker=alpha)),
        (f"{ea}|greedy_nocap", ("samplers",), ea, "structured", n_workers,
         dict(sampler="greedy", max_per_worker=2000)),
        (f"{ea}|greedy_hit", ("samplers",), ea, "structured", n_workers,
         dict(proposer=hit_greedy_proposer(alpha))),
        (f"{ea}|greedy_hit_nocap", ("samplers",), ea, "structured", n_workers,
         dict(proposer=hit_greedy_proposer(2000))),
        (f"{ea}|bald", ("samplers",), ea, "structured", n_workers, dict(sampler="bald")),
        (f"{ds}|greedy", ("samplers",), ds, "structured", n_workers,
         dict(sampler="greedy", max_per_worker=alpha)),
        (f"{ds}|greedy_hit", ("samplers",), ds, "structured", n_workers,
         dict(proposer=hit_greedy_proposer(alpha))),
        (f"{ds}|bald", ("samplers",), ds, "structured", n_workers, dict(sampler="bald")),
        (f"{ea}|C=0.05", ("risk",), ea, "structured", n_workers, dict(risk_threshold=0.05)),
        (f"{ea}|C=0.2", ("risk",), ea, "structured", n_workers, dict(risk_threshold=0.2)),
        (f"{ea}|M=10", ("workers",), ea, "structured", 10, {}),
        (f"{ea}|M=25", ("workers",), ea, "structured", 25, {}),
        (f"{ea}|hits=2", ("frequency",), ea, "structured", n_workers, dict(hits_per_step=2)),
        (f"{ea}|hits=10", ("frequency",), ea, "structured", n_workers, dict(hits_per_step=10)),
    ]
    return out


def skill_specs(n_items):
    """Greedy assignment where it has more to exploit (``online_real.py --experiments skills``):
    pools whose workers differ as much as the AMT ones (``hetero``) and a pool of 10 workers, each
    answering more questions (better skill estimates; sec. 4.5.6)."""
    alpha = max(1, round(2000 * n_items / 36000))
    ea = "efficient_annotation"
    out = []
    for pool, m in (("hetero", 50), ("structured", 10)):
        tag = "hetero" if pool == "hetero" else f"M={m}"
        alpha_m = alpha if m == 50 else max(alpha, round(alpha * 50 / m))
        out += [
            (f"{ea}|random|{tag}", ("skills",), ea, pool, m, {}),
            (f"{ea}|greedy|{tag}", ("skills",), ea, pool, m,
             dict(sampler="greedy", max_per_worker=alpha_m)),
            (f"{ea}|greedy_hit|{tag}", ("skills",), ea, pool, m,
             dict(proposer=hit_greedy_proposer(alpha_m))),
        ]
    return out


def log(message) -> None:
    print(message, flush=True)


def run_specs(chosen, cfg, pool, make_workers, truth, k, seeds, max_steps=10_000, base=None,
              seeds_for=None):
    """Run every spec belonging to an experiment in ``chosen`` on the items ``pool = (features,
    prototypes, prototype classes)``; returns a long frame.  ``base``: config overrides for every
    run; ``seeds_for(preset) -> int`` overrides ``seeds``."""
    frames = []
    tasks = {}  # one task per number of workers
    for variant, experiments, preset_name, noise, m, overrides in chosen:
        settings = dict(hits_per_step=cfg.hits_per_step, hit_size=cfg.hit_size, early_stop=None)
        settings.update(base or {})
        overrides = dict(overrides)
        proposer = overrides.pop("proposer", None)
        settings.update(overrides)
        config = online.preset(preset_name, k, **settings)
        if m not in tasks:
            x, px, py = pool
            tasks[m] = online.make_task(x, m, px, py, k)
        task = tasks[m]
        t0 = time.perf_counter()
        n_seeds = seeds_for(preset_name) if seeds_for else seeds
        for seed in range(n_seeds):
            conf = make_workers(m, seed, noise)
            if noise == "uniform":
                conf = simulate.uniform_noise_workers(conf)
            hist = run_curve(config, task, conf, truth, seed, max_steps=max_steps, proposer=proposer)
            hist.insert(0, "variant", variant)
            hist["preset"] = preset_name
            hist["noise"] = noise
            hist["sampler"] = variant.split("|")[1] if "greedy_hit" in variant else config.sampler
            hist["prior_accuracy"] = config.prior_accuracy
            hist["risk_threshold"] = config.risk_threshold
            hist["n_workers"] = m
            hist["hits_per_step"] = config.hits_per_step
            hist["max_per_worker"] = config.max_per_worker
            hist["experiments"] = ",".join(experiments)
            frames.append(hist)
            end = hist.iloc[-1]
            log(f"  {variant:34s} seed {seed}: {int(end['step']):3d} steps, "
                f"{end['per_item']:.2f} ann/item, acc {end['accuracy']:.3f} "
                f"({hist['seconds'].iloc[0]:.1f}s)")
        log(f"  -- {variant}: {time.perf_counter() - t0:.1f}s")
    return pd.concat(frames, ignore_index=True)


EXPERIMENT_PLOTS = {
    # experiment: (key column, title)
    "presets": ("preset", "four presets (random sampler, structured noise)"),
    "noise": ("variant", "structured (solid) vs uniform (dashed) noise"),
    "samplers": ("variant", "task assignment"),
    "risk": ("risk_threshold", "risk threshold C (efficient annotation)"),
    "workers": ("n_workers", "number of workers (efficient annotation)"),
    "frequency": ("hits_per_step", "HITs per step, i.e. update frequency (efficient annotation)"),
    "skills": ("variant", "task assignment with heterogeneous workers / 10 workers"),
}


def write_experiment(runs, name, experiment, out, auc_upto, title_prefix):
    sub = runs[runs["experiments"].str.split(",").apply(lambda e: experiment in e)].copy()
    sub.insert(0, "experiment", experiment)
    sub.insert(0, "dataset", name)
    sub.to_csv(out / f"{name}_{experiment}.csv", index=False)
    key, title = EXPERIMENT_PLOTS[experiment]
    table = summarise(sub, ["variant"], auc_upto)
    table.insert(0, "experiment", experiment)
    table.insert(0, "dataset", name)
    plot_experiment(sub, experiment, key, f"{title_prefix}: {title}", out / f"{name}_{experiment}.png")
    log(markdown_table(table[["variant", "seeds", "end_per_item", "end_accuracy", "stop_per_item",
                                 "stop_accuracy", f"auc_0_{auc_upto:g}", "acc@0.5", "acc@1"]]))
    return table


def update_summary(path, tables) -> pd.DataFrame:
    """Write ``tables`` to ``path``, replacing earlier rows of the same (dataset, experiment)."""
    new = pd.concat(tables, ignore_index=True)
    if Path(path).exists():
        old = pd.read_csv(path)
        done = set(zip(new["dataset"], new["experiment"]))
        old = old[[(d, e) not in done for d, e in zip(old["dataset"], old["experiment"])]]
        new = pd.concat([old, new], ignore_index=True)
    new.to_csv(path, index=False)
    return new


def plot_experiment(sub, experiment, key, title, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    draw_experiment(ax, sub, experiment, key)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def draw_experiment(ax, sub, experiment, key):
    if experiment == "presets":
        plot_curves(ax, sub, "preset", order=list(PRESET_ORDER), labels=LABELS)
        ds = sub[sub["preset"] == "ds_model"]
        if len(ds):
            ax.axhline(ds.groupby("seed").tail(1)["accuracy"].mean(), color="grey", ls=":", lw=1,
                       label="online DS at its end")
    elif experiment == "noise":
        colors = {"ds_model": "tab:blue", "efficient_annotation": "tab:red"}
        for noise, style in (("structured", "-"), ("uniform", "--")):
            part = sub[sub["noise"] == noise]
            plot_curves(ax, part, "preset", order=["ds_model", "efficient_annotation"],
                           labels=LABELS, colors=colors, linestyle=style, suffix=f", {noise}")
    else:
        order = list(dict.fromkeys(sub.sort_values(key)[key]))
        labels = {v: f"{key} = {v}" for v in order}
        if experiment == "skills":
            labels = {v: v.replace("efficient_annotation", "EA").replace("|", ", ") for v in order}
        if experiment == "samplers":
            labels = {v: v.replace("efficient_annotation", "EA").replace("ds_model", "DS")
                      .replace("|", ", ") for v in order}
            labels = {v: (lab if "," in lab else lab + ", random") for v, lab in labels.items()}
        plot_curves(ax, sub, key, order=order, labels=labels)
