#!/usr/bin/env python
"""Speed of the online annotation loop (``crowdinfer.online``): seconds per step and compilations.

    python -m experiments.benchmarks.online_speed            # full run (6 min on an idle 2-core
                                                             # machine, ~15 min on a busy one)
    python -m experiments.benchmarks.online_speed --quick    # smoke run (~2 min), temporary folder

The full run writes the report to ``experiments/benchmarks/online_speed.md`` and the raw numbers to
``experiments/results/online_speed/`` (``online_speed_steps.csv``: one row per measured
configuration; ``online_speed_compiles.csv``: every compilation of the 100-step runs).
``--out-dir DIR`` puts all three files in ``DIR``; ``--quick`` writes to a temporary folder (printed
at the end) unless ``--out-dir`` is given, so a smoke run never overwrites the committed results.

What is measured
----------------
1. **Seconds per loop step** against the number of items N, classes K and feature size d, for the
   presets ``ds_model`` (no learner, d = 0), ``efficient_annotation`` and ``lean``.  Each
   configuration runs in its own fresh subprocess:

   * synthetic task: N items with true classes uniform over K; features are Gaussian clusters
     (class means ~ N(0, s^2 I_d) with s = SEPARATION / sqrt(2 d), so that two class means lie
     SEPARATION noise standard deviations apart on average; unit isotropic noise), 5 clean
     prototypes per class drawn the same way; M = 200 simulated workers with uniform label noise
     (``crowdinfer.simulate.uniform_noise_workers``), accuracies uniform in [0.5, 0.9];
   * the state comes from ``online.init(config, task)`` (the shipped default annotation buffer:
     room for ``N * max_per_item`` rows up to 2^18, so no measured step moves to a new capacity
     bucket) and is pre-filled with one annotation per item (``online.ingest``, one batch; each
     from a random worker), so that the measured steps see a mid-run state;
   * a step is ``propose`` -> (simulated answers, not timed) -> ``ingest`` -> ``update`` ->
     ``finished``, each timed to ``block_until_ready``, with the defaults ``hits_per_step=5``,
     ``hit_size=40`` (200 questions per step) and ``early_stop=None``;
   * step 1 compiles everything (its time is reported separately, with the XLA compile and tracing
     seconds of ``_update`` / ``_propose`` from ``jax.monitoring`` events); after one more warm-up
     step, the median of the measured steps is the steady state.  Any step that compiled something
     is excluded from the median (there should be none: the count is reported).
2. **Compilations of a realistic run**: ``online.session.simulate`` (the shipped driver) on
   N = 2*10^4, K = 10, d = 64, ``efficient_annotation``, ``early_stop=None``, ``max_steps=100``
   (at N = 10^4 this task runs out of eligible items after ~70 steps), counting every XLA
   compilation by function (``jax.monitoring`` backend-compile events, cross-checked against
   ``_cache_size()`` of ``crowdinfer.online.loop._update`` and ``crowdinfer.online.samplers._propose``,
   and the buffer capacity of each ``_update`` compilation read from ``jax_log_compiles``).  For
   comparison, the same loop started from the previous default buffer (``capacity=4 * slots``,
   growing by doubling).
3. **Diagnostics**: the XLA compile time of ``_update`` for ``ds_model`` at K = 10 and K = 100
   with numpyro's argument/support validation on (numpyro's default) and off; and the steady
   update time at N = 10^5 with the default buffer against a buffer just large enough.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import json
import logging
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.benchmarks.machine import REPO, frozen_source
from experiments.benchmarks.machine import machine_info as _machine_info
from experiments.benchmarks.machine import run_worker as _run_worker
from experiments.benchmarks.machine import worker_parser

STEM = "online_speed"
MD_DEFAULT = REPO / "experiments" / "benchmarks" / f"{STEM}.md"
CSV_DIR_DEFAULT = REPO / "experiments" / "results" / STEM

SEED = 0
N_WORKERS = 200
SEPARATION = 3.0  # mean distance between two class means, in noise standard deviations
PROTOS_PER_CLASS = 5
ACCURACY_RANGE = (0.5, 0.9)
PREFILL_PER_ITEM = 1
WARMUP_STEPS = 1  # after the first (compiling) step
SINGLE_INGESTS = 12  # single-answer ingest calls timed after the steps
MEASURED_STEPS = {10**3: 6, 10**4: 8, 10**5: 5}

PRESETS = ("ds_model", "efficient_annotation", "lean")
SIZES = (10**3, 10**4, 10**5)
CLASSES = (10, 30, 100)
DIMS = (64, 512)

COMPILE_RUN = dict(preset="efficient_annotation", n_items=2 * 10**4, n_classes=10, dim=64, steps=100)
COMPILE_RUN_QUICK = dict(preset="efficient_annotation", n_items=10**3, n_classes=10, dim=64, steps=20)
DIAG_CLASSES = (100,)
DIAG_ITEMS = 10**4
BUFFER_REPS = 5
BUFFER_DIAG = [dict(preset="ds_model", n_items=10**5, n_classes=10, dim=0),
               dict(preset="ds_model", n_items=10**5, n_classes=100, dim=0),
               dict(preset="efficient_annotation", n_items=10**5, n_classes=10, dim=64)]

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
JAXPR_TRACE = "/jax/core/compile/jaxpr_trace_duration"
TO_MLIR = "/jax/core/compile/jaxpr_to_mlir_module_duration"


def grid(quick: bool, full_grid: bool) -> list[dict]:
    """The configurations measured in part 1."""
    if quick:
        return ([dict(preset="ds_model", n_items=n, n_classes=10, dim=0) for n in (10**3, 10**4)]
                + [dict(preset="efficient_annotation", n_items=n, n_classes=10, dim=64)
                   for n in (10**3, 10**4)])
    rows = [dict(preset="ds_model", n_items=n, n_classes=k, dim=0) for n in SIZES for k in CLASSES]
    ea = [(n, k, 64) for n in SIZES for k in CLASSES]
    if full_grid:
        ea += [(n, k, 512) for n in SIZES for k in CLASSES]
    else:  # d = 512 along N at K = 10, and the largest corner
        ea += [(n, 10, 512) for n in SIZES] + [(10**5, 100, 512)]
    rows += [dict(preset="efficient_annotation", n_items=n, n_classes=k, dim=d) for n, k, d in ea]
    rows += [dict(preset="lean", n_items=n, n_classes=10, dim=64) for n in SIZES]
    return rows


# ============================================================================ worker side
class CompileCounter:
    """Counts XLA compilations by function name (``jax.monitoring`` duration events) and keeps the
    capacity of the annotation buffer of every ``_update`` compilation (``jax_log_compiles``)."""

    def __init__(self):
        import jax

        self.events: list[dict] = []  # {"fun", "compile_s", "t"}
        self.trace_s: dict[str, float] = {}
        self.lower_s: dict[str, float] = {}
        self.update_shapes: list[int] = []
        self.step = 0

        def listener(event, duration, **kw):
            name = kw.get("fun_name", "?")
            if event == BACKEND_COMPILE:
                self.events.append({"fun": name, "compile_s": duration, "step": self.step})
            elif event == JAXPR_TRACE:
                self.trace_s[name] = self.trace_s.get(name, 0.0) + duration
            elif event == TO_MLIR:
                self.lower_s[name] = self.lower_s.get(name, 0.0) + duration

        jax.monitoring.register_event_duration_secs_listener(listener)
        jax.config.update("jax_log_compiles", True)
        counter = self

        class Handler(logging.Handler):
            def emit(self, record):
                msg = record.getMessage()
                if msg.startswith(("Compiling _update ", "Compiling jit(_update) ")):
                    m = re.search(r"int32\[(\d+)\]", msg)  # the first array: data.item
                    counter.update_shapes.append(int(m.group(1)) if m else -1)

        handler = Handler(level=logging.WARNING)
        for name in ("jax._src.interpreters.pxla", "jax._src.dispatch"):
            lg = logging.getLogger(name)
            lg.addHandler(handler)
            lg.propagate = False  # keep the log lines off stderr

    def count(self, fun: str | None = None) -> int:
        return sum(1 for e in self.events if fun is None or e["fun"] == fun)

    def seconds(self, fun: str | None = None) -> float:
        return sum(e["compile_s"] for e in self.events if fun is None or e["fun"] == fun)

    def by_function(self, events=None) -> dict:
        out: dict[str, list] = {}
        for e in self.events if events is None else events:
            c = out.setdefault(e["fun"], [0, 0.0])
            c[0] += 1
            c[1] += e["compile_s"]
        return out


def _synthetic(n: int, k: int, d: int, seed: int = SEED):
    """True classes, Gaussian-cluster features (n, d) and prototypes, worker confusions (M, K, K)."""
    import numpy as np

    from crowdinfer.simulate import uniform_noise_workers

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = px = py = None
    if d:
        mu = (rng.normal(size=(k, d)) * SEPARATION / math.sqrt(2 * d)).astype(np.float32)
        x = mu[y] + rng.standard_normal((n, d), dtype=np.float32)
        py = np.repeat(np.arange(k), PROTOS_PER_CLASS)
        px = mu[py] + rng.standard_normal((len(py), d), dtype=np.float32)
    acc = rng.uniform(*ACCURACY_RANGE, N_WORKERS)
    conf = uniform_noise_workers(np.eye(k)[None] * acc[:, None, None]).astype(np.float32)
    return y, x, px, py, conf


def _make_task(n, k, d):
    from crowdinfer import online

    y, x, px, py, conf = _synthetic(n, k, d)
    task = online.make_task(x, N_WORKERS, px, py, k) if d else online.make_task(n, N_WORKERS)
    return task, y, conf


def _peak_rss() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def work_steps(spec: dict) -> dict:
    """Part 1: one configuration, steady-state seconds per step and the first (compiling) step."""
    counter = CompileCounter()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from crowdinfer import online
    from crowdinfer.online import loop, samplers
    from crowdinfer.online import state as state_mod
    from crowdinfer.simulate import annotate

    n, k, d, preset = spec["n_items"], spec["n_classes"], spec["dim"], spec["preset"]
    measured = spec["steps"]
    t0 = time.perf_counter()
    task, y, conf = _make_task(n, k, d)
    cfg = online.preset(preset, k, early_stop=None)
    loop.init(cfg, task)  # the public init's checks (a task that suits the preset)
    prefill = PREFILL_PER_ITEM * n
    total_steps = 1 + WARMUP_STEPS + measured
    capacity_needed = prefill + total_steps * cfg.slots
    if spec.get("buffer", "default") == "default":
        state = online.init(cfg, task)
    else:  # "tight": just the rows the measured steps need
        state = state_mod.init(cfg, task, capacity=capacity_needed)
    conf_j, truth = jnp.asarray(conf), jnp.asarray(y)
    rng = np.random.default_rng(SEED + 1)
    items = np.repeat(np.arange(n, dtype=np.int32), PREFILL_PER_ITEM)
    workers = np.concatenate([rng.permutation(N_WORKERS)[:PREFILL_PER_ITEM] for _ in range(n)]).astype(np.int32) \
        if PREFILL_PER_ITEM > 1 else rng.integers(0, N_WORKERS, n).astype(np.int32)
    labels = np.asarray(annotate(jax.random.key(SEED + 2), conf_j, truth, jnp.asarray(items),
                                 jnp.asarray(workers)))
    jax.block_until_ready(state)
    setup_s = time.perf_counter() - t0
    t = time.perf_counter()
    state, receipt = online.ingest(state, items, workers, labels)
    jax.block_until_ready(state)
    prefill_s = time.perf_counter() - t
    assert receipt.n_accepted == prefill, receipt.rejected[:3]
    compiles_before_steps = counter.count()

    steps = []
    for s in range(total_steps):
        counter.step = s + 1
        c0, ev0 = counter.count(), len(counter.events)
        t_a = time.perf_counter()
        proposal = online.propose(cfg, state)
        jax.block_until_ready(proposal)
        t_b = time.perf_counter()
        answers = annotate(jax.random.fold_in(jax.random.key(SEED + 3), s), conf_j, truth,
                           proposal.item, proposal.worker)
        valid = np.asarray(proposal.valid)
        it, wk, lb = (np.asarray(a)[valid] for a in (proposal.item, proposal.worker, answers))
        t_c = time.perf_counter()
        state, receipt = online.ingest(state, it, wk, lb)
        jax.block_until_ready(state)
        t_d = time.perf_counter()
        state, report = online.update(cfg, state, task)
        jax.block_until_ready((state, report))
        t_e = time.perf_counter()
        done = online.finished(cfg, state)
        t_f = time.perf_counter()
        new = counter.by_function(counter.events[ev0:])
        steps.append({
            "propose_s": t_b - t_a, "answers_s": t_c - t_b, "ingest_s": t_d - t_c,
            "update_s": t_e - t_d, "finished_s": t_f - t_e,
            "step_s": (t_b - t_a) + (t_d - t_c) + (t_e - t_d) + (t_f - t_e),
            "valid": int(valid.sum()), "accepted": receipt.n_accepted,
            "annotations": int(state.n_annotations), "capacity": int(state.data.item.shape[0]),
            "finished": int(report["finished"]), "eligible": int(report["eligible"]),
            "em_iterations": int(report["em_iterations"]), "stop": bool(done),
            "compiles": counter.count() - c0, "compiled": {f: c for f, (c, _) in new.items()},
            "update_compile_s": new.get("jit(_update)", [0, 0.0])[1],
            "propose_compile_s": new.get("jit(_propose)", [0, 0.0])[1],
            "step_compile_s": sum(s_ for _, s_ in new.values()),
        })
    # one answer per ingest call, as a server that applies answers as they arrive would do
    # (duplicates are rejected before the append and not timed); after every measured step
    single = []
    proposal = online.propose(cfg, state)
    valid = np.asarray(proposal.valid)
    pairs = list(zip(np.asarray(proposal.item)[valid], np.asarray(proposal.worker)[valid]))
    pairs += list(zip(rng.integers(0, n, SINGLE_INGESTS), rng.integers(0, N_WORKERS, SINGLE_INGESTS)))
    for i, w in pairs[:SINGLE_INGESTS]:
        lab = np.asarray(annotate(jax.random.key(int(i)), conf_j, truth, jnp.asarray([i]), jnp.asarray([w])))
        t = time.perf_counter()
        state, receipt = online.ingest(state, np.array([i]), np.array([w]), lab)
        jax.block_until_ready(state)
        if receipt.n_accepted:
            single.append(time.perf_counter() - t)
    single = single[2:]  # the first calls compile the batch-size-1 shapes
    first = steps[0]
    steady = [s for s in steps[1 + WARMUP_STEPS:] if s["compiles"] == 0]
    med = lambda key: statistics.median(s[key] for s in steady) if steady else None  # noqa: E731
    return {
        **spec, "n_workers": N_WORKERS, "slots": cfg.slots, "prefill": prefill,
        "setup_s": setup_s, "prefill_s": prefill_s,
        "first_step_s": first["step_s"], "first_propose_s": first["propose_s"],
        "first_ingest_s": first["ingest_s"], "first_update_s": first["update_s"],
        "first_step_compile_s": first["step_compile_s"],
        "update_compile_s": first["update_compile_s"], "propose_compile_s": first["propose_compile_s"],
        "update_trace_s": counter.trace_s.get("_update", 0.0),
        "update_lower_s": counter.lower_s.get("_update", 0.0),
        "first_step_compiled": first["compiled"],
        "steady_steps": len(steady),
        "steps_with_compiles_after_first": sum(1 for s in steps[1:] if s["compiles"]),
        "later_compiles": [(i + 1, s["compiled"], s["valid"]) for i, s in enumerate(steps) if i and s["compiles"]],
        "step_min_s": min(s["step_s"] for s in steady) if steady else None,
        "ingest_one_s": statistics.median(single) if single else None,
        "step_s": med("step_s"), "update_s": med("update_s"), "propose_s": med("propose_s"),
        "ingest_s": med("ingest_s"), "finished_s": med("finished_s"),
        "step_calls_s": [s["step_s"] for s in steady], "update_calls_s": [s["update_s"] for s in steady],
        "annotations_first": steady[0]["annotations"] if steady else None,
        "annotations_last": steady[-1]["annotations"] if steady else None,
        "capacity": steps[-1]["capacity"], "valid_median": med("valid"),
        "finished_median": med("finished"), "eligible_median": med("eligible"),
        "em_iterations_median": med("em_iterations"),
        "cache_update": loop._update._cache_size(), "cache_propose": samplers._propose._cache_size(),
        "compiles_setup": compiles_before_steps, "compiles_total": counter.count(),
        "peak_rss": _peak_rss(), "jax_device": str(jax.devices()[0]),
    }


def work_compiles(spec: dict) -> dict:
    """Part 2: count the compilations of a realistic run (``simulate``), and of the same run with
    the previous default annotation buffer, ``4 * slots`` rows growing by doubling (``mode="growing"``)."""
    counter = CompileCounter()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from crowdinfer import online
    from crowdinfer.online import loop, samplers
    from crowdinfer.online.session import simulate
    from crowdinfer.simulate import annotate

    n, k, d, steps = spec["n_items"], spec["n_classes"], spec["dim"], spec["steps"]
    task, y, conf = _make_task(n, k, d)
    cfg = online.preset(spec["preset"], k, early_stop=None)
    jax.block_until_ready(task)
    setup_compiles = len(counter.events)
    times, records = [], []
    start = time.perf_counter()
    last = [start]

    def on_step(record):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        records.append(record)
        counter.step = len(records) + 1

    counter.step = 1
    if spec["mode"] == "simulate":
        session = simulate(cfg, task, conf, y, seed=SEED, max_steps=steps, callback=on_step)
        state = session.state
    else:  # the same loop as simulate (no ledger), from the previous default buffer (4 x slots)
        state = online.init(cfg, task, capacity=4 * cfg.slots)
        key = jax.random.key(SEED)
        conf_j, truth = jnp.asarray(conf), jnp.asarray(y)
        while int(state.step) < steps:
            if int(state.step) > 0 and online.finished(cfg, state):
                break
            proposal = online.propose(cfg, state)
            answers = annotate(jax.random.fold_in(key, int(state.step)), conf_j, truth,
                               proposal.item, proposal.worker)
            valid = np.asarray(proposal.valid)
            if not valid.any():
                break
            it, wk, lb = (np.asarray(a)[valid] for a in (proposal.item, proposal.worker, answers))
            state, _ = online.ingest(state, it, wk, lb)
            state, report = online.update(cfg, state, task)
            on_step({"annotations": int(state.n_annotations), "finished": float(report["finished"]),
                     "accuracy": online.label_accuracy(state, y)})
    wall = time.perf_counter() - start
    run_events = counter.events[setup_compiles:]
    compile_steps = {e["step"] for e in run_events}
    quiet = [t for i, t in enumerate(times) if (i + 1) not in compile_steps]
    return {
        **spec, "steps_done": len(records), "wall_s": wall,
        "annotations": int(state.n_annotations), "capacity": int(state.data.item.shape[0]),
        "accuracy": records[-1].get("accuracy") if records else None,
        "finished": records[-1].get("finished") if records else None,
        "update_compiles": sum(1 for e in run_events if e["fun"] == "jit(_update)"),
        "propose_compiles": sum(1 for e in run_events if e["fun"] == "jit(_propose)"),
        "total_compiles": len(run_events), "setup_compiles": setup_compiles,
        "compile_s": sum(e["compile_s"] for e in run_events),
        "update_compile_s": sum(e["compile_s"] for e in run_events if e["fun"] == "jit(_update)"),
        "by_function": counter.by_function(run_events),
        "events": run_events, "update_capacities": counter.update_shapes,
        "cache_update": loop._update._cache_size(), "cache_propose": samplers._propose._cache_size(),
        "steps_with_compiles": len(compile_steps), "median_quiet_step_s":
            statistics.median(quiet) if quiet else None, "sum_quiet_steps_s": sum(quiet),
        "step_times_s": times,
    }


def work_diag(spec: dict) -> dict:
    """Part 3: XLA compile time of ``_update`` with numpyro validation on or off."""
    counter = CompileCounter()
    import jax
    import numpy as np
    import numpyro

    from crowdinfer import online
    from crowdinfer.online import loop
    from crowdinfer.online import state as state_mod

    numpyro.enable_validation(spec["validation"])
    n, k = spec["n_items"], spec["n_classes"]
    task, y, _ = _make_task(n, k, 0)
    cfg = online.preset(spec["preset"], k, early_stop=None)
    state = state_mod.init(cfg, task, capacity=2 * n)
    rng = np.random.default_rng(SEED)
    state, _ = online.ingest(state, np.arange(n), rng.integers(0, N_WORKERS, n), y)
    jax.block_until_ready(state)
    t = time.perf_counter()
    state, report = online.update(cfg, state, task)
    jax.block_until_ready(state)
    first = time.perf_counter() - t
    t = time.perf_counter()
    state, report = online.update(cfg, state, task)
    jax.block_until_ready(state)
    second = time.perf_counter() - t
    compiles = [counter.seconds("jit(_update)")]
    for _ in range(2):  # two more compilations of the same update, for the minimum
        jax.clear_caches()  # or lower().compile() is served from the in-memory cache
        lowered = loop._update.lower(cfg, state, task)
        t = time.perf_counter()
        lowered.compile()
        compiles.append(time.perf_counter() - t)
    return {**spec, "first_update_s": first, "second_update_s": second,
            "update_compile_s": min(compiles), "update_compile_all_s": compiles,
            "update_compiles": counter.count("jit(_update)"),
            "finished": int(report["finished"])}


def work_buffer(spec: dict) -> dict:
    """Diagnostic: the same mid-run state in the default buffer and in a buffer just large enough;
    ``update`` timed alternately on the two (same process, same load), ``reps`` times each."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from crowdinfer import online
    from crowdinfer.online import state as state_mod
    from crowdinfer.simulate import annotate

    n, k, d = spec["n_items"], spec["n_classes"], spec["dim"]
    task, y, conf = _make_task(n, k, d)
    cfg = online.preset(spec["preset"], k, early_stop=None)
    rng = np.random.default_rng(SEED + 1)
    items, workers = np.arange(n, dtype=np.int32), rng.integers(0, N_WORKERS, n).astype(np.int32)
    labels = np.asarray(annotate(jax.random.key(SEED + 2), jnp.asarray(conf), jnp.asarray(y),
                                 jnp.asarray(items), jnp.asarray(workers)))
    states = {"default": online.init(cfg, task),
              "tight": state_mod.init(cfg, task, capacity=n + 10 * cfg.slots)}
    times = {}
    for name in states:
        states[name], _ = online.ingest(states[name], items, workers, labels)
        states[name], _ = online.update(cfg, states[name], task)  # compiles; a step-1 state
        jax.block_until_ready(states[name])
        times[name] = []
    for _ in range(spec["reps"]):
        for name, st in states.items():
            t = time.perf_counter()
            jax.block_until_ready(online.update(cfg, st, task))
            times[name].append(time.perf_counter() - t)
    return {**spec, **{f"capacity_{a}": int(b.data.item.shape[0]) for a, b in states.items()},
            **{f"update_{a}_s": statistics.median(t) for a, t in times.items()},
            **{f"update_{a}_calls_s": t for a, t in times.items()}}


WORKERS = {"steps": work_steps, "compiles": work_compiles, "diag": work_diag, "buffer": work_buffer}


# ============================================================================ driver side
WORKER_SNAP: Path | None = None  # the copy of the source the workers run on (machine.frozen_source)


def source_fingerprint(snap: Path | None = None) -> str:
    """sha1 of the *.py of crowdinfer/ and models/ (as crowdinfer/models), of the frozen copy when
    there is one: the same source gives the same fingerprint either way."""
    if snap is not None:
        files = [(f.relative_to(snap).as_posix(), f) for f in (snap / "crowdinfer").rglob("*.py")]
    else:
        files = [(f.relative_to(REPO).as_posix(), f) for f in (REPO / "crowdinfer").rglob("*.py")]
        files += [("crowdinfer/models/" + f.relative_to(REPO / "models").as_posix(), f)
                  for f in (REPO / "models").rglob("*.py")]
    h = hashlib.sha1()
    for name, f in sorted(files):
        h.update(name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def run_worker(kind: str, spec: dict, timeout: float) -> dict:
    label = f"{kind:8s} " + " ".join(f"{k}={v}" for k, v in spec.items() if k != "steps" or kind != "steps")
    print(f"  {label} ...", end="", flush=True)
    run = _run_worker(__spec__.name, [kind, json.dumps(spec)], timeout, WORKER_SNAP)
    if run.status == "killed":
        return {**spec, "status": f"killed after {timeout:.0f} s"}
    if run.result is None:
        return {**spec, "status": run.status}
    wall, foreign = run.wall_s, run.other_load_cores
    res = {**run.result, "status": "ok", "wall_total_s": wall, "other_load_cores": foreign}
    if kind == "steps":
        print(f" step {fmt_s(res['step_s'])} (update {fmt_s(res['update_s'])}), first step "
              f"{res['first_step_s']:.1f} s ({wall:.0f} s wall, other load {foreign:.2f} cores)", flush=True)
    elif kind == "compiles":
        print(f" {res['steps_done']} steps in {res['wall_s']:.0f} s, {res['total_compiles']} compiles "
              f"(update {res['update_compiles']}, propose {res['propose_compiles']}), compile "
              f"{res['compile_s']:.0f} s (other load {foreign:.2f} cores)", flush=True)
    elif kind == "buffer":
        print(f" update {res['update_default_s']:.3f} s (default buffer) vs {res['update_tight_s']:.3f} s "
              f"(tight) (other load {foreign:.2f} cores)", flush=True)
    else:
        print(f" update compile {res['update_compile_s']:.1f} s (other load {foreign:.2f} cores)", flush=True)
    return res


def machine_info(snap: Path | None = None) -> dict:
    dev = subprocess.run([sys.executable, "-c", "import jax; d = jax.devices(); "
                          "print(f'{jax.default_backend()}: {len(d)} x {d[0].device_kind}')"],
                         capture_output=True, text=True).stdout.strip()
    info = _machine_info(("jax", "jaxlib", "flax", "optax", "numpyro", "numpy"))
    return {**info, "device": dev or "unknown", "source": source_fingerprint(snap),
            "loadavg_start": os.getloadavg()}


def fmt_n(n) -> str:
    if n is None:
        return "—"
    e = round(math.log10(n)) if n > 0 else 0
    return f"10^{e}" if n == 10**e else f"{n:,}"


def fmt_s(x) -> str:
    if x is None:
        return "—"
    if x < 0.1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_sec(x) -> str:
    """Seconds to three significant digits."""
    return "—" if x is None else f"{x:.3g}"


def fmt_ms(x) -> str:
    return "—" if x is None else f"{x * 1e3:.1f}"


def write_csvs(rows, comp_rows, diag_rows, csv_dir: Path) -> list[Path]:
    csv_dir.mkdir(parents=True, exist_ok=True)
    steps_path = csv_dir / f"{STEM}_steps.csv"
    cols = ["preset", "n_items", "n_classes", "dim", "status", "n_workers", "slots", "prefill",
            "annotations_first", "annotations_last", "capacity", "valid_median", "finished_median",
            "eligible_median", "em_iterations_median", "steady_steps", "step_s", "step_min_s", "update_s",
            "propose_s", "ingest_s", "finished_s", "ingest_one_s", "step_calls_s", "update_calls_s",
            "first_step_s", "first_propose_s", "first_ingest_s", "first_update_s",
            "first_step_compile_s", "update_compile_s", "update_trace_s", "update_lower_s",
            "propose_compile_s", "steps_with_compiles_after_first", "cache_update", "cache_propose",
            "compiles_setup", "compiles_total", "later_compiles", "buffer", "prefill_s", "setup_s", "peak_rss",
            "other_load_cores", "wall_total_s"]
    with open(steps_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            rec = {k: (";".join(f"{x:.5f}" for x in v)
                       if isinstance(v, list) and all(isinstance(x, float) for x in v) else
                       json.dumps(v) if isinstance(v, (list, dict)) else
                       f"{v:.5f}" if isinstance(v, float) else v) for k, v in r.items()}
            w.writerow(rec)
    comp_path = csv_dir / f"{STEM}_compiles.csv"
    with open(comp_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "kind", "step", "function", "compile_s", "detail"])
        for r in comp_rows:
            if r.get("status") != "ok":
                continue
            caps = iter(r["update_capacities"])
            for e in r["events"]:
                detail = f"buffer capacity {next(caps, '?')}" if e["fun"] == "jit(_update)" else ""
                w.writerow([r["mode"], "compile", e["step"], e["fun"], f"{e['compile_s']:.4f}", detail])
            for i, t in enumerate(r["step_times_s"]):
                w.writerow([r["mode"], "step_wall", i + 1, "", f"{t:.4f}", ""])
        for r in diag_rows:
            if r.get("status") == "ok":
                w.writerow([f"diag K={r['n_classes']} validation={r['validation']}", "compile", 1,
                            "jit(_update)", f"{r['update_compile_s']:.4f}", ""])
    return [steps_path, comp_path]


def write_markdown(rows, comp_rows, diag_rows, buf_rows, info, md_path: Path, csv_paths, quick,
                   started, total_s, full_grid) -> None:
    ok = lambda r: r is not None and r.get("status") == "ok"  # noqa: E731
    L = ["# Online loop speed (`crowdinfer.online`)\n"]
    if quick:
        L.append("**QUICK SMOKE RUN (`--quick`): a few small configurations -- not the benchmark's "
                 "results.**\n")
    L.append("Produced by `python -m experiments.benchmarks.online_speed`"
             + (" --full-grid" if full_grid else " (`--full-grid` adds d = 512 at every (N, K) for "
                "`efficient_annotation`)") + "; `--quick` for a smoke run. Raw numbers: " + ", ".join(f"`{os.path.relpath(p, md_path.parent)}`" for p in csv_paths)
             + ".\n")
    L.append("## Machine\n")
    loads = [r["other_load_cores"] for r in rows + comp_rows + diag_rows if ok(r)]
    L.append(f"- date: {started}; total benchmark wall time {total_s / 60:.1f} min")
    L.append(f"- CPU: {info['cpu']}; {info['logical_cores']} logical cores ({info['physical_cores']} "
             f"physical, {info['affinity_cores']} usable); RAM {info['ram_gb']:.1f} GB")
    L.append(f"- JAX device: {info['device']}")
    L.append(f"- {info['os']}, Python {info['python']}; jax {info['jax']}, jaxlib {info['jaxlib']}, "
             f"flax {info['flax']}, optax {info['optax']}, numpyro {info['numpyro']}, numpy {info['numpy']}; "
             f"XLA_FLAGS {info['xla_flags']}")
    L.append(f"- crowdinfer: git {info['commit']}; source fingerprint (sha1 of crowdinfer/ and models/ "
             f"*.py) {info['source']}" + (", a copy taken at the start of the run" if info.get("frozen") else ""))
    if loads:
        L.append(f"- the machine is shared: load average {info['loadavg_start'][0]:.2f} at the start; "
                 f"other processes used {statistics.mean(loads):.2f} cores on average during the "
                 f"measurements (at most {max(loads):.2f}) -- timings are per-step medians, but expect "
                 "noise of tens of percent")
    L.append("")
    L.append("## Set-up\n")
    L.append(f"- Synthetic tasks: true classes uniform over K; features d-dimensional Gaussian clusters "
             f"(class means N(0, s² I), s = {SEPARATION} / sqrt(2d): two means lie {SEPARATION} noise "
             f"standard deviations apart on average; unit noise), {PROTOS_PER_CLASS} clean prototypes per "
             f"class; {N_WORKERS} simulated workers with uniform label noise, accuracies uniform in "
             f"[{ACCURACY_RANGE[0]}, {ACCURACY_RANGE[1]}]. d = 0 for `ds_model` (no learner).")
    L.append("- Presets from `crowdinfer.online.preset(name, K, early_stop=None)`: defaults "
             "`hits_per_step=5`, `hit_size=40` (200 questions per step), random sampler, "
             "`max_per_item=3`, learner MLP (64 hidden units, 300 AdamW steps of 256 items, "
             "trained from scratch each step; `lean`: 3-fold CV, 3 networks).")
    L.append(f"- Each configuration runs in a fresh subprocess. The state comes from "
             "`online.init(config, task)` (default buffer: `N * max_per_item` rows up to 2^18, to a "
             f"capacity bucket) and is pre-filled with {PREFILL_PER_ITEM} annotation per item through "
             "`online.ingest` (one batch). The *buffer* column gives the annotations at the first and "
             "last measured step / the buffer capacity (no measured step changes capacity).")
    L.append(f"- A step = `propose` + `ingest` + `update` + `finished` (simulated answers drawn in "
             f"between, not timed), each to `block_until_ready`. *First step* = step 1, which compiles; "
             f"after {WARMUP_STEPS} warm-up step, *steady* = median over {MEASURED_STEPS[10**3]} "
             f"(N = 10^3), {MEASURED_STEPS[10**4]} (10^4) or {MEASURED_STEPS[10**5]} (10^5) steps. "
             "*XLA compile* = backend compile seconds of `_update` from `jax.monitoring` (tracing and "
             "lowering are in *first update* too).")
    L.append(f"- *ingest of 1 answer*: after the steps, {SINGLE_INGESTS} calls of `online.ingest` with a "
             "single answer each (as a server applying answers as they arrive would make), median of "
             "all but the first two (which compile the batch-of-one shapes).")
    L.append("")

    # ---------------------------------------------------------------- part 1
    L.append("## 1. Seconds per step, steady state\n")
    for preset in PRESETS:
        pr = [r for r in rows if r["preset"] == preset]
        if not pr:
            continue
        L.append(f"### `{preset}`\n")
        L.append("| N | K | d | buffer: annotations / capacity | questions per step | finished items "
                 "| EM iter. | **step (s)** | **update (s)** | propose (ms) | ingest (ms) | finished (ms) "
                 "| ingest of 1 answer (ms) |")
        L.append("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in pr:
            head = [fmt_n(r["n_items"]), str(r["n_classes"]), str(r["dim"])]
            if not ok(r):
                L.append("| " + " | ".join(head + [r.get("status", "?")] + ["—"] * 9) + " |")
                continue
            L.append("| " + " | ".join(head + [
                f"{r['annotations_first']:,}–{r['annotations_last']:,} / {r['capacity']:,}",
                f"{r['valid_median']:.0f}",
                f"{r['finished_median']:,.0f} ({r['finished_median'] / r['n_items']:.0%})",
                f"{r['em_iterations_median']:.0f}",
                f"**{fmt_sec(r['step_s'])}**", f"**{fmt_sec(r['update_s'])}**",
                fmt_ms(r["propose_s"]), fmt_ms(r["ingest_s"]), fmt_ms(r["finished_s"]),
                fmt_ms(r["ingest_one_s"]),
            ]) + " |")
        L.append("")
    bad = [r for r in rows if ok(r) and (r["steps_with_compiles_after_first"] or r["valid_median"] < r["slots"])]
    for r in bad:
        what = "; ".join(f"step {st}: {', '.join(f'{f} x{c}' for f, c in comp.items())} "
                         f"({v} answers)" for st, comp, v in r["later_compiles"])
        parts = []
        if r["valid_median"] < r["slots"]:
            parts.append(f"only {r['valid_median']:.0f} of {r['slots']} questions per step (median) "
                         "could be asked: the other items are finished or at the per-item cap "
                         "(a late-run state)")
        if r["steps_with_compiles_after_first"]:
            parts.append(f"{r['steps_with_compiles_after_first']} step(s) after the first compiled "
                         f"something (left out of the median): {what}")
        L.append(f"- note: `{r['preset']}` N={fmt_n(r['n_items'])} K={r['n_classes']} d={r['dim']}: "
                 + "; ".join(parts))
    if bad:
        L.append("")

    L.append("## 2. First step (compilation)\n")
    L.append("| preset | N | K | d | first step (s) | first propose (s) | first ingest (s) | first update (s) "
             "| `_update` XLA compile (s) | `_update` trace + lower (s) | all compiles in step 1 (s) "
             "| steady step (s) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if not ok(r):
            continue
        L.append("| " + " | ".join([
            f"`{r['preset']}`", fmt_n(r["n_items"]), str(r["n_classes"]), str(r["dim"]),
            f"{r['first_step_s']:.2f}", f"{r['first_propose_s']:.2f}", f"{r['first_ingest_s']:.2f}",
            f"{r['first_update_s']:.2f}", f"{r['update_compile_s']:.2f}",
            f"{r['update_trace_s'] + r['update_lower_s']:.2f}", f"{r['first_step_compile_s']:.2f}",
            fmt_sec(r["step_s"]),
        ]) + " |")
    L.append("")
    one = [r for r in rows if ok(r)]
    if one:
        extra = [r for r in one if r["cache_update"] != 1 or r["cache_propose"] != 1]
        L.append("Every configuration above compiled `_update` and `_propose` exactly once "
                 "(`_cache_size()` = 1 after all its steps)." if not extra else
                 "Configurations with more than one compilation of `_update`/`_propose`: " +
                 ", ".join(f"{r['preset']} N={r['n_items']} K={r['n_classes']} d={r['dim']} "
                           f"({r['cache_update']}/{r['cache_propose']})" for r in extra))
        L.append("")

    # ---------------------------------------------------------------- part 2
    L.append("## 3. Compilations over a run\n")
    sim = next((r for r in comp_rows if r.get("mode") == "simulate"), None)
    pre = next((r for r in comp_rows if r.get("mode") == "growing"), None)
    if sim is not None:
        L.append(f"`online.session.simulate(preset(\"{sim['preset']}\", {sim['n_classes']}, early_stop=None), "
                 f"task, ..., max_steps={sim['steps']})` on N = {fmt_n(sim['n_items'])}, K = "
                 f"{sim['n_classes']}, d = {sim['dim']} (same synthetic task and workers as above); "
                 "compilations counted from `jax.monitoring` backend-compile events (every `jax.jit` "
                 "and every eager op that had not run with that shape before), after building the "
                 "task. Second row: the same loop (propose, simulated answers, ingest, update, "
                 "`finished`; no ledger) started from `online.init(config, task, capacity=4 * slots)`, "
                 "the initial buffer of the previous default, which doubles when full.\n")
        L.append("| run | steps | annotations (capacity) | **`_update` compiles** | **`_propose` compiles** "
                 "| **all compiles** | compile time (s) | of which `_update` (s) | run wall time (s) "
                 "| steps without compile: median (s) | … total (s) | accuracy at the end |")
        L.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r, name in ((sim, "`simulate` (as shipped)"),
                        (pre, "manual loop from `init(capacity=4 * slots)` (the default before 05067c2)")):
            if r is None:
                continue
            if not ok(r):
                L.append(f"| {name} | {r.get('status')} |" + " — |" * 10)
                continue
            L.append("| " + " | ".join([
                name, str(r["steps_done"]), f"{r['annotations']:,} ({r['capacity']:,})",
                f"**{r['update_compiles']}** (`_cache_size` {r['cache_update']})",
                f"**{r['propose_compiles']}** (`_cache_size` {r['cache_propose']})",
                f"**{r['total_compiles']}**", f"{r['compile_s']:.1f}", f"{r['update_compile_s']:.1f}",
                f"{r['wall_s']:.1f}", fmt_sec(r["median_quiet_step_s"]), f"{r['sum_quiet_steps_s']:.1f}",
                f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "—",
            ]) + " |")
        L.append("")
        if ok(sim):
            caps = iter(sim["update_capacities"])
            ups = [(e["step"], next(caps, "?"), e["compile_s"]) for e in sim["events"] if e["fun"] == "jit(_update)"]
            L.append("`_update` compilations in the `simulate` run: " + "; ".join(
                f"step {s} (buffer {c:,})" if isinstance(c, int) else f"step {s}" for s, c, _ in ups)
                + f" -- {sum(t for *_, t in ups):.1f} s of XLA compile against "
                f"{sim['sum_quiet_steps_s']:.1f} s for the {sim['steps_done'] - sim['steps_with_compiles']} "
                "steps that compiled nothing.\n")
            L.append("All compilations of the `simulate` run by function:\n")
            L.append("| function | compilations | seconds |")
            L.append("|---|---:|---:|")
            for fun, (c, s) in sorted(sim["by_function"].items(), key=lambda kv: -kv[1][1]):
                L.append(f"| `{fun}` | {c} | {s:.2f} |")
            L.append("")

    # ---------------------------------------------------------------- part 3
    if buf_rows:
        L.append("## 4. Diagnostic: buffer padding\n")
        L.append("The EM passes run over the whole annotation buffer, padding included. The same "
                 "state (N = 10^5, 1 annotation per item, after one update) in the default buffer "
                 "(`online.init`) and in a buffer just large enough (`crowdinfer.online.state.init("
                 "config, task, capacity=N + 10 * slots)`); `update` timed alternately on the two, in "
                 f"one process, median of {BUFFER_REPS} calls each:\n")
        L.append("| preset | N | K | d | default buffer | update (s) | tight buffer | update (s) | ratio |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for b in buf_rows:
            if not ok(b):
                L.append(f"| `{b['preset']}` | {fmt_n(b['n_items'])} | {b['n_classes']} | {b['dim']} | "
                         f"{b.get('status')} |" + " — |" * 4)
                continue
            L.append(f"| `{b['preset']}` | {fmt_n(b['n_items'])} | {b['n_classes']} | {b['dim']} | "
                     f"{b['capacity_default']:,} | {fmt_sec(b['update_default_s'])} | "
                     f"{b['capacity_tight']:,} | {fmt_sec(b['update_tight_s'])} | "
                     f"{b['update_default_s'] / b['update_tight_s']:.2f} |")
        L.append("")
    if diag_rows:
        L.append("## 5. Diagnostic: compile time and numpyro validation\n")
        L.append("Regression check: before commit e1a943e the Dawid-Skene EM objective built its "
                 "Dirichlet prior with numpyro's support checks on, and XLA spent seconds "
                 "constant-folding them at large K (`slow_operation_alarm` on a reduce-window of "
                 "shape (M, K, K/32)); `_update` compiled several times faster with validation off. "
                 "With the fix the two rows should match.\n")
        L.append(f"`ds_model`, N = {fmt_n(DIAG_ITEMS)}, {N_WORKERS} workers, one update after 1 annotation "
                 "per item, with `numpyro.enable_validation(True)` (numpyro's default here) or `(False)`. "
                 "XLA compile = the fastest of 3 compilations of the same `_update` (the first call, and "
                 "two `_update.lower(...).compile()` after `jax.clear_caches()`).\n")
        L.append("| K | validation | `_update` XLA compile, min of 3 (s) | first update (s) | second update (s) |")
        L.append("|---:|---|---:|---:|---:|")
        for r in diag_rows:
            if ok(r):
                L.append(f"| {r['n_classes']} | {'on' if r['validation'] else 'off'} | "
                         f"{r['update_compile_s']:.2f} | {r['first_update_s']:.2f} | {fmt_sec(r['second_update_s'])} |")
        L.append("")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(L) + "\n")


def main(argv=None) -> None:
    p = worker_parser(__doc__, "smoke run: N = 10^3, 10^4, K = 10 only",
                      f"write {STEM}.md and the CSVs here (default: the markdown to "
                      f"experiments/benchmarks/, the CSVs to experiments/results/{STEM}/; "
                      "a temporary folder with --quick)", ("KIND", "SPEC"))
    p.add_argument("--full-grid", action="store_true",
                   help="efficient_annotation on every (N, K) for d = 512 too (about 2-3 more minutes)")
    p.add_argument("--skip-grid", action="store_true", help="no per-step table (parts 2-3 only)")
    p.add_argument("--skip-compiles", action="store_true", help="no 100-step compile-count run")
    p.add_argument("--skip-diag", action="store_true",
                   help="no diagnostics (numpyro validation, buffer padding)")
    p.add_argument("--from-raw", type=Path, default=None, metavar="JSON",
                   help=f"only rewrite the markdown from a {STEM}_raw.json of an earlier run")
    args = p.parse_args(argv)

    if args.worker:
        kind, spec = args.worker
        res = WORKERS[kind](json.loads(spec))
        print("RESULT " + json.dumps(res), flush=True)
        return

    if args.out_dir is not None:
        md_path, csv_dir = args.out_dir / f"{STEM}.md", args.out_dir
    elif args.quick:
        tmp = Path(tempfile.mkdtemp(prefix="online_speed_quick_"))
        md_path, csv_dir = tmp / f"{STEM}.md", tmp
    else:
        md_path, csv_dir = MD_DEFAULT, CSV_DIR_DEFAULT
    if args.from_raw is not None:
        raw = json.loads(args.from_raw.read_text())
        paths = [csv_dir / f"{STEM}_steps.csv", csv_dir / f"{STEM}_compiles.csv", args.from_raw]
        write_markdown(raw["steps"], raw["compiles"], raw["diag"], raw["buffer"], raw["info"], md_path,
                       paths, args.quick, raw["started"], raw["total_s"], args.full_grid)
        print(f"wrote {md_path}")
        return
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    global WORKER_SNAP
    WORKER_SNAP = snap = None if args.no_freeze else frozen_source("online_speed_src_")
    info = machine_info(snap)
    info["frozen"] = snap is not None
    print(f"online speed benchmark, {started}: {info['logical_cores']} cores, jax {info['jax']}, "
          f"{info['device']}, load average {info['loadavg_start'][0]:.2f}", flush=True)
    t0 = time.perf_counter()
    rows, comp_rows, diag_rows, buf_rows = [], [], [], []
    try:
        if not args.skip_grid:
            print("part 1: seconds per step")
            for spec in grid(args.quick, args.full_grid):
                spec["steps"] = 3 if args.quick else MEASURED_STEPS[spec["n_items"]]
                rows.append(run_worker("steps", spec, timeout=600))
        if not args.skip_compiles:
            print("part 2: compilations over a run")
            base = COMPILE_RUN_QUICK if args.quick else COMPILE_RUN
            for mode in ("simulate", "growing"):
                comp_rows.append(run_worker("compiles", {**base, "mode": mode}, timeout=900))
        if not args.skip_diag and not args.quick:
            print("part 3: compile-time diagnostic")
            for k in DIAG_CLASSES:
                for validation in (True, False):
                    diag_rows.append(run_worker("diag", dict(preset="ds_model", n_items=DIAG_ITEMS,
                                                             n_classes=k, validation=validation), 300))
            for spec in BUFFER_DIAG:
                buf_rows.append(run_worker("buffer", {**spec, "reps": BUFFER_REPS}, timeout=600))
    finally:
        if snap is not None:
            shutil.rmtree(snap, ignore_errors=True)
    total = time.perf_counter() - t0
    csv_dir.mkdir(parents=True, exist_ok=True)
    raw = csv_dir / f"{STEM}_raw.json"
    raw.write_text(json.dumps({"info": info, "steps": rows, "compiles": comp_rows, "diag": diag_rows,
                               "buffer": buf_rows, "total_s": total, "started": started}, indent=1))
    csv_paths = write_csvs(rows, comp_rows, diag_rows, csv_dir) + [raw]
    write_markdown(rows, comp_rows, diag_rows, buf_rows, info, md_path, csv_paths, args.quick,
                   started, total, args.full_grid)
    print(f"wrote {md_path}, " + ", ".join(str(p) for p in csv_paths) + f" ({total / 60:.1f} min)")


if __name__ == "__main__":
    main()
