#!/usr/bin/env python
"""Scale: the defaults against crowd-kit's defaults, per-iteration time against the memory
bandwidth from 10^5 to 10^8 annotations, peak memory, bigger-than-memory EM, 2 processes.

    python -m experiments.benchmarks.scale defaults      # ci.fit vs DawidSkene(n_iter=100), 1e5..1e6
    python -m experiments.benchmarks.scale iterations    # per-iteration time, 1e5..1e7 (K=10, K=2)
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.benchmarks.scale iterations2
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.benchmarks.scale big
    python -m experiments.benchmarks.scale big1          # 10^8 on one device (per-item layout)
    python -m experiments.benchmarks.scale outofcore     # Parquet file >= 2x the run's memory limit
    python -m experiments.benchmarks.scale multiprocess  # the same fit over 2 processes x 2 devices
    python -m experiments.benchmarks.scale report        # experiments/benchmarks/scale.md

Each part writes ``experiments/benchmarks/scale_results/<part>.json``; ``report`` turns them into
``scale.md``.  Every measurement runs in its own subprocess (peak RSS belongs to it alone) on the
device JAX chooses (a GPU when there is one), which each table names.  The machine is shared: times
are the minimum over repeats, and the load average is written next to them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.benchmarks.machine import (REPO, device_info, load_average, loglog_slope,
                                             machine_info)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "scale_results"
SPARK_CROWD_DS_1E8_S = 703.0  # spark-crowd's Dawid-Skene on 10^8 binary labels, one machine


# ============================================================================ measurements
def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e9


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _best(fn, repeats: int, clock=time.perf_counter) -> float:
    best = math.inf
    for _ in range(repeats):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def _per_iteration(loop, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds per iteration: (6 iterations - 1) / 5, each the best of ``repeats``.
    The CPU time (all threads of the process) hardly depends on the other jobs of a busy machine,
    which stretch the wall time."""
    out = []
    for clock in (time.perf_counter, time.process_time):
        t1, t6 = _best(lambda: loop(1), repeats, clock), _best(lambda: loop(6), repeats, clock)
        out.append(max(t6 - t1, 1e-9) / 5)
    return out[0], out[1]


def bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """Memory bandwidth of one core (numpy ``c = a + b`` on arrays far larger than the caches:
    2 reads + 1 write), best of ``repeats``."""
    import numpy as np

    a = np.ones(mb * 2**20 // 4, np.float32)
    b, c = np.ones_like(a), np.empty_like(a)
    return 3 * a.nbytes / _best(lambda: np.add(a, b, out=c), repeats) / 1e9


def bytes_per_iteration(n_annotations: int, n_items: int, k: int) -> int:
    """A lower bound on the bytes one EM iteration must move: one read of the annotations (item,
    worker, label as int32) and one write + one read of the (items, K) float32 posterior."""
    return 12 * n_annotations + 8 * n_items * k


def generate_blocks(n: int, k: int, n_workers: int = 200, per_item: int = 10, seed: int = 0,
                    block: int = 10**7):
    """Dawid-Skene data fast enough for 10^8 rows: item-sorted, ``per_item`` annotations per item,
    workers uniform at random, each worker right with probability uniform in [0.5, 0.9] and
    otherwise uniform over the other classes.  Returns (truth, iterator of (item, worker, label)
    int32 blocks of at most ``block`` rows)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_items = n // per_item
    truth = rng.integers(0, k, n_items).astype(np.int32)
    acc = rng.uniform(0.5, 0.9, n_workers).astype(np.float32)
    block = block // per_item * per_item

    def blocks():
        for lo in range(0, n_items * per_item, block):
            hi = min(n_items * per_item, lo + block)
            item = (np.arange(lo, hi, dtype=np.int64) // per_item).astype(np.int32)
            w = rng.integers(0, n_workers, hi - lo).astype(np.int32)
            t = truth[item]
            wrong = (t + rng.integers(1, k, hi - lo)) % k
            label = np.where(rng.random(hi - lo, np.float32) < acc[w], t, wrong).astype(np.int32)
            yield item, w, label

    return truth, blocks()


def generate(n: int, k: int, n_workers: int = 200, per_item: int = 10, seed: int = 0):
    """:func:`generate_blocks` in memory: (item, worker, label, truth) as int32 arrays."""
    import numpy as np

    truth, blocks = generate_blocks(n, k, n_workers, per_item, seed)
    item, worker, label = (np.empty(len(truth) * per_item, np.int32) for _ in range(3))
    lo = 0
    for a, b, c in blocks:
        item[lo:lo + len(a)], worker[lo:lo + len(a)], label[lo:lo + len(a)] = a, b, c
        lo += len(a)
    return item, worker, label, truth


def device_data(item, worker, label, n_items, n_workers, k):
    """CrowdData straight from int32 arrays (the 10^8 runs skip ``Annotations``' pandas checks),
    sharded like ``Annotations.to_device`` when JAX has several devices, and like it with the
    per-item layout (``CrowdData.slots``) on one device."""
    import jax
    import numpy as np

    from crowdinfer.annotations import CrowdData, slot_layout
    from crowdinfer.distributed import annotation_sharding

    sharding = annotation_sharding()
    parts = 1 if sharding is None else len(sharding.device_set)
    n = len(item)
    cap = -(-n // (parts * 1024)) * parts * 1024
    pad = cap - n

    def put(a, fill):
        a = np.concatenate([a, np.full(pad, fill, a.dtype)]) if pad else a
        return jax.device_put(a, sharding) if sharding is not None else jax.device_put(a)

    weight = np.ones(n, np.float32)
    slots = None if sharding is not None else slot_layout(item, worker, label, None, n_items,
                                                          n_workers, k)
    return CrowdData(put(item, n_items - 1), put(worker, 0), put(label, 0), put(weight, 0.0),
                     n_items, n_workers, k,
                     slots=None if slots is None else jax.device_put(slots))


def em_pieces(data, k):
    """The Dawid-Skene EM of ``ci.fit(ann, prior="none")`` on device data: (spec, start)."""
    import jax.numpy as jnp

    from crowdinfer.inference.loop import Spec
    from crowdinfer.models import class_prior, dawid_skene, majority_vote

    spec = Spec(dawid_skene.map_part(jnp.ones((k, k), jnp.float32)),
                class_prior.part("em", k, concentration=2.0))
    return spec, majority_vote.soft(data)


# ------------------------------------------------------------------ part: defaults vs crowd-kit
def defaults_worker(n: int) -> dict:
    import warnings

    import numpy as np

    warnings.simplefilter("ignore")
    import crowdinfer as ci
    from crowdkit.aggregation import DawidSkene

    task = ci.datasets.synthetic(n_items=n // 10, n_workers=200, n_classes=10,
                                 annotations_per_item=10, seed=0)
    ann = task.annotations
    truth = np.asarray(task.truth) if hasattr(task, "truth") else None
    df = ann.to_dataframe().rename(columns={"item": "task"})
    gold = ann.gold_labels()
    out = {"n": n, "device": device_info(), "load_before": load_average()}
    # every call on a fresh copy (the same arrays, an empty Annotations.derived cache): what a
    # user's first fit on new data pays
    calls = {"default": lambda: ci.fit(dataclasses.replace(ann)),
             "dawid_skene": lambda: ci.fit(dataclasses.replace(ann), "dawid_skene")}
    if os.environ.get("SCALE_SKIP_DEFAULT"):  # keep an earlier run's (slow) default-model row
        del calls["default"]
    for name, call in calls.items():
        t = time.perf_counter()
        post = call()
        out[f"{name}_first_s"] = time.perf_counter() - t
        out[f"{name}_repeats"] = 5 if out[f"{name}_first_s"] < 20 else 1  # a slow default: 1 more
        out[f"{name}_s"] = _best(call, out[f"{name}_repeats"])
        out[f"{name}_model"] = f"{post.model}/{post.method}"
        out[f"{name}_n_iter"] = post.n_iter
        out[f"{name}_acc"] = float(post.accuracy())
    # the default Dawid-Skene fit phase by phase
    out["phases"] = phases(ann)
    ck_repeats = 5 if n <= 5 * 10**5 else 2  # as many as ours where it is affordable
    labels = {}

    def crowdkit():
        model = DawidSkene(n_iter=100)
        labels["y"] = model.fit_predict(df)
        labels["n_iter"] = len(model.loss_history_)

    out["crowdkit_s"] = _best(crowdkit, ck_repeats)
    pred = labels["y"].reindex(gold.index)
    out["crowdkit_acc"] = float((pred.to_numpy() == gold.to_numpy()).mean())
    out["crowdkit_n_iter"] = labels["n_iter"]
    out["load_after"] = load_average()
    del truth
    return out


def phases(ann, repeats: int = 5) -> dict:
    """Seconds of each phase of ``ci.fit(ann, "dawid_skene")`` (best of ``repeats``), in the
    order the fit runs them; each on a fresh copy of the annotations (nothing cached)."""
    import jax
    import numpy as np

    from crowdinfer import identifiability
    from crowdinfer.inference.loop import run
    from crowdinfer.models import dawid_skene, majority_vote, priors
    from crowdinfer.runners import _confusion_spec

    ann = dataclasses.replace(ann, gold=None)  # as fit() sees it: the gold is for scoring only
    res = {}
    res["to_device"] = _best(lambda: jax.block_until_ready(
        dataclasses.replace(ann).to_device()), repeats)
    data = ann.to_device()
    res["prior (pooled, on the device)"] = _best(
        lambda: priors.resolve(dataclasses.replace(ann), data=data), repeats)
    res["identifiability check"] = _best(
        lambda: identifiability.unidentified_workers(dataclasses.replace(ann)), repeats)
    spec, _ = _confusion_spec(ann, "em", dawid_skene.MAP, 1.0, False, data=data)
    res["majority-vote start"] = _best(
        lambda: jax.block_until_ready(majority_vote.soft(data)), repeats)
    start = majority_vote.soft(data)
    state = run(spec, data, start)
    res["EM loop (default stop)"] = _best(
        lambda: jax.block_until_ready(run(spec, data, start)), repeats)
    res["EM iterations"] = int(state.iteration)
    res["posterior to host"] = _best(
        lambda: np.exp(np.asarray(jax.device_get(state.log_q), np.float64)), repeats)
    return res


# ------------------------------------------------------------------ part: per-iteration time
def iteration_worker(n: int, k: int, full_fit: bool = False) -> dict:
    import jax
    import numpy as np

    from crowdinfer.inference.loop import run

    out = {"n": n, "k": k, "device": device_info(), "load_before": load_average()}
    out["bandwidth_gbs"] = bandwidth_gbs()
    t = time.perf_counter()
    item, worker, label, truth = generate(n, k)
    out["generate_s"] = time.perf_counter() - t
    n_items = len(truth)
    base = _rss_gb()
    _reset_peak()
    data = device_data(item, worker, label, n_items, 200, k)
    del item, worker, label
    out["layout"] = "rows" if data.slots is None else f"slots ({data.slots.shape[0]} per item)"
    spec, start = em_pieces(data, k)

    def loop(max_iter):
        return jax.block_until_ready(
            run(spec, data, start, max_iter=max_iter, tol=-math.inf, stop="objective"))

    for m in (1, 6):
        loop(m)  # compile
    out["iteration_s"], out["cpu_iteration_s"] = _per_iteration(
        loop, 10 if n <= 10**6 else 4 if n <= 10**7 else 2)
    if data.slots is not None and n <= 10**7:  # the same loop without the layout (as before it)
        out["peak_rss_gb"] = _peak_rss_gb()  # of the layout's run, before the rows' chunks
        rows_data, full = data.rows_only(), data

        def loop(max_iter):  # noqa: F811
            return jax.block_until_ready(run(spec, rows_data, start, max_iter=max_iter,
                                             tol=-math.inf, stop="objective"))

        for m in (1, 6):
            loop(m)
        out["rows_iteration_s"], out["rows_cpu_iteration_s"] = _per_iteration(
            loop, 10 if n <= 10**6 else 4)
        del rows_data
        data = full
    if full_fit:  # to convergence with the default stopping rule, compile included
        from crowdinfer.models import majority_vote

        t = time.perf_counter()
        start = majority_vote.soft(data)
        state = jax.block_until_ready(run(spec, data, start))
        out["fit_s"] = time.perf_counter() - t
        out["fit_n_iter"] = int(state.iteration)
        labels = np.asarray(jax.device_get(state.log_q.argmax(-1)))
        out["accuracy"] = float((labels == truth).mean())
    out["bytes_per_iteration"] = bytes_per_iteration(n, n_items, k)
    out["bound_s"] = out["bytes_per_iteration"] / (out["bandwidth_gbs"] * 1e9)
    out.setdefault("peak_rss_gb", _peak_rss_gb())
    out["baseline_rss_gb"] = base
    out["load_after"] = load_average()
    return out


# ------------------------------------------------------------------ part: out-of-core
def outofcore_worker(path: str, limit_gb: float, k: int, n_workers: int, engine: str) -> dict:
    import resource

    # RLIMIT_DATA (`ulimit -d`): the process's private writable memory -- heap and anonymous
    # mappings, what the data would need.  RLIMIT_AS (`ulimit -v`) also counts the ~2.9 GB of
    # address space that importing crowdinfer (jaxlib, flax, pandas, ...) maps without using it.
    resource.setrlimit(resource.RLIMIT_DATA, (int(limit_gb * 1e9),) * 2)
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # no large arena reservations
    import numpy as np

    from crowdinfer import outofcore

    out = {"device": device_info(), "limit_gb": limit_gb, "load_before": load_average()}
    n_items = len(np.load(path + ".truth.npy", mmap_mode="r"))
    t = time.perf_counter()
    if engine == "em":
        res = outofcore.em(path, n_items=n_items, n_classes=k, n_workers=n_workers, max_iter=2,
                           tol=-math.inf, stop="objective", progress=False, rows=2**21)
        out["em_n_iter"] = res.n_iter
        out["em_objective"] = res.history.tolist()
    else:
        res = outofcore.svi(path, n_items=n_items, n_classes=k, n_workers=n_workers,
                            progress=False)
    out[f"{engine}_s"] = time.perf_counter() - t
    truth = np.load(path + ".truth.npy")
    out[f"{engine}_accuracy"] = float((res.label_probs.argmax(1) == truth).mean())
    out[f"{engine}_peak_rss_gb"] = _peak_rss_gb()
    out["load_after"] = load_average()
    return out


def write_parquet(path: str, n: int, k: int, per_item: int = 20) -> dict:
    """An item-sorted, uncompressed Parquet file of ``n`` generated annotations, written block by
    block (the true labels beside it, ``path + ".truth.npy"``)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    truth, blocks = generate_blocks(n, k, per_item=per_item, seed=1)
    np.save(path + ".truth.npy", truth)
    schema = pa.schema([("item", pa.int32()), ("worker", pa.int32()), ("label", pa.int32())])
    nbytes = 0
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for item, worker, label in blocks:
            table = pa.table({"item": item, "worker": worker, "label": label}, schema=schema)
            nbytes += table.nbytes
            writer.write_table(table, row_group_size=4 * 10**6)
    return {"rows": len(truth) * per_item, "file_gb": os.path.getsize(path) / 1e9,
            "in_memory_gb": nbytes / 1e9, "n_items": len(truth)}


# ------------------------------------------------------------------ part: 2 processes
MP_WORKER = r"""
import json, sys, time
pid, port, out, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
if port != "single":
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
import crowdinfer as ci
ann = ci.datasets.synthetic(n_items=n // 10, n_workers=200, n_classes=10, annotations_per_item=10,
                            seed=0).annotations
post = ci.fit(ann, "dawid_skene")
t = time.perf_counter(); post = ci.fit(ann, "dawid_skene"); s = time.perf_counter() - t
if pid == 0:
    json.dump({"s": s, "n_iter": post.n_iter, "acc": post.accuracy(), "devices": len(jax.devices()),
               "processes": jax.process_count(), "probs_head": post.label_probs[:2000].tolist()},
              open(out, "w"))
"""


def multiprocess_part(n: int = 10**6) -> dict:
    import socket

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="scale_mp_"))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs = [subprocess.Popen([sys.executable, "-c", MP_WORKER, str(p), port, str(tmp / "mp.json"),
                               str(n)], env=env) for p in (0, 1)]
    for p in procs:
        p.wait(timeout=900)
    single_env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    subprocess.run([sys.executable, "-c", MP_WORKER, "0", "single", str(tmp / "one.json"), str(n)],
                   env=single_env, check=True, timeout=900)
    mp, one = json.loads((tmp / "mp.json").read_text()), json.loads((tmp / "one.json").read_text())
    diff = float(np.abs(np.asarray(mp["probs_head"]) - np.asarray(one["probs_head"])).max())
    return {"n": n, "multi": {k: v for k, v in mp.items() if k != "probs_head"},
            "single": {k: v for k, v in one.items() if k != "probs_head"},
            "max_abs_diff_first_2000_items": diff, "device": device_info()}


# ============================================================================ driver
def _in_subprocess(fn_name: str, *args, env=None, timeout=3600) -> dict:
    code = (f"import json; from experiments.benchmarks import scale; "
            f"print('RESULT ' + json.dumps(scale.{fn_name}(*{args!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env or os.environ, timeout=timeout, cwd=REPO)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout)[-2000:], "args": list(args)}


def _save(part: str, rows) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{part}.json").write_text(json.dumps(
        {"machine": machine_info(("jax", "jaxlib", "numpy", "crowd-kit", "pyarrow")),
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}, indent=1))


def main(part: str) -> None:
    if part == "defaults":  # optional sizes after the part name; rows of other sizes are kept
        sizes = [int(float(a)) for a in sys.argv[2:]] or [10**5, 5 * 10**5, 10**6]
        old = _load(part)
        rows = [r for r in (old["rows"] if old else []) if r.get("n") not in sizes]
        for n in sizes:
            got = _in_subprocess("defaults_worker", n, timeout=2400)
            if os.environ.get("SCALE_SKIP_DEFAULT") and old:
                before = [r for r in old["rows"] if r.get("n") == n]
                if before:
                    got = {**{k: v for k, v in before[0].items() if k.startswith("default_")},
                           "default_from_earlier_run": old["date"], **got}
            rows.append(got)
            print(rows[-1], flush=True)
        _save(part, sorted(rows, key=lambda r: r.get("n", 0)))
    elif part == "iterations":
        rows = []
        for k in (10, 2):
            for n in (10**5, 10**6, 10**7):
                rows.append(_in_subprocess("iteration_worker", n, k))
                print(rows[-1], flush=True)
        _save(part, rows)
    elif part == "iterations2":  # 10^6 and 10^7 on 2 CPU devices, as the 10^8 runs
        rows = []
        for k in (10, 2):
            for n in (10**6, 10**7):
                rows.append(_in_subprocess("iteration_worker", n, k))
                print(rows[-1], flush=True)
        _save(part, rows)
    elif part in ("big", "big1"):  # optional K values after the part name; rows of other K kept
        ks = [int(a) for a in sys.argv[2:]] or [2, 10]
        old = _load(part)
        rows = [r for r in (old["rows"] if old else []) if r.get("k") not in ks]
        for k in ks:
            rows.append(_in_subprocess("iteration_worker", 10**8, k, True, timeout=2400))
            print(rows[-1], flush=True)
        _save(part, sorted(rows, key=lambda r: r.get("k", 0)))
    elif part == "outofcore":
        n, k, limit = int(os.environ.get("SCALE_OOC_ROWS", 42 * 10**7)), 2, 2.5
        tmp = Path(os.environ.get("SCALE_OOC_DIR", tempfile.gettempdir()))
        path = str(tmp / f"scale_ooc_{n}.parquet")
        if os.path.exists(path + ".truth.npy") and os.path.exists(path):  # written before
            import numpy as np
            import pyarrow.parquet as pq

            rows_ = pq.ParquetFile(path).metadata.num_rows
            meta = {"rows": rows_, "file_gb": os.path.getsize(path) / 1e9,
                    "in_memory_gb": 12 * rows_ / 1e9,
                    "n_items": len(np.load(path + ".truth.npy", mmap_mode="r"))}
        else:
            meta = write_parquet(path, n, k)
        row = dict(meta)
        for engine in ("em", "svi"):
            # glibc's per-thread malloc arenas reserve 64 MB each (counted by RLIMIT_DATA)
            env = {**os.environ, "MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}
            got = _in_subprocess("outofcore_worker", path, limit, k, 200, engine, env=env,
                                 timeout=1500)
            row.update(got if "error" not in got else {f"{engine}_error": got["error"]})
            print(got, flush=True)
        print(row, flush=True)
        _save(part, [row])
    elif part == "multiprocess":
        row = multiprocess_part()
        print(row, flush=True)
        _save(part, [row])
    elif part == "report":
        report()
    else:
        raise SystemExit(__doc__)


PARTS = ("defaults", "iterations", "iterations2", "big", "big1", "outofcore", "multiprocess")


def _load(part: str):
    f = RESULTS / f"{part}.json"
    return json.loads(f.read_text()) if f.exists() else None


def _load1(text: str) -> str:
    """The 1-minute load average out of :func:`machine.load_average`'s line."""
    return text.split()[2]


def _slopes(rows) -> list[tuple]:
    """``(K, device, [(n, s / iteration)], slope)`` per K and device set with two or more sizes
    from 10^6 up: the log-log slope of time per iteration against annotations."""
    out = []
    for k, device in sorted({(r["k"], r["device"]) for r in rows}):
        pts = sorted((r["n"], r["iteration_s"]) for r in rows
                     if r["k"] == k and r["device"] == device and r["n"] >= 10**6)
        slope = loglog_slope(pts)
        if slope is not None:
            out.append((k, device, pts, slope))
    return out


def _targets(d, rows) -> list[str]:
    """The issue's targets, each PASS or FAIL from the tables below."""
    runs = []
    for part in PARTS:
        got = _load(part)
        if got is not None:
            runs.append(f"{part} {got.get('date', '?')} on {got.get('machine', {}).get('cpu', '?')}"
                        f" (commit {str(got.get('machine', {}).get('commit', '?')).split(' ')[0]})")
    out = ["## Targets (issue 11), from the tables below\n",
           "Each part's run: " + "; ".join(runs) + ". The 1-minute load average on the 2 cores "
           "is written next to each number (about 1-2 is this benchmark alone: XLA runs on both "
           "cores). Every time is the best of repeated calls.\n"]
    at = [r for r in (d["rows"] if d else []) if r.get("n") == 5 * 10**5 and "error" not in r]
    for r in at:
        for name, label in (("dawid_skene", '`ci.fit(ann, "dawid_skene")`'),
                            ("default", f"`ci.fit(ann)` ({r['default_model']})")):
            ck = r.get("default_crowdkit_s", r["crowdkit_s"]) if name == "default" else r["crowdkit_s"]
            ck_acc = (r.get("default_crowdkit_acc", r["crowdkit_acc"]) if name == "default"
                      else r["crowdkit_acc"])
            ratio = ck / r[f"{name}_s"]
            gap = abs(r[f"{name}_acc"] - ck_acc)
            ok = ratio >= 30 and gap <= 0.002
            out.append(f"- {label} >= 30x crowd-kit's default at 5·10^5, accuracy within 0.002: "
                       f"{ratio:.1f}x, accuracy gap {gap:.4f} -- **{'PASS' if ok else 'FAIL'}**")
    if rows:
        for layout in sorted({r.get("layout", "rows").split(" (")[0] for r in rows}):
            mine = [r for r in rows if r["n"] >= 10**6
                    and r.get("layout", "rows").split(" (")[0] == layout]
            if not mine:
                continue
            worst = max(mine, key=lambda r: r["iteration_s"] / r["bound_s"])
            ratio = worst["iteration_s"] / worst["bound_s"]
            best = min(r["iteration_s"] / r["bound_s"] for r in mine)
            out.append(f"- time per iteration within 3x of the bandwidth bound (10^6 and up), "
                       f"layout `{layout}`: {best:.1f}x to {ratio:.1f}x (worst: {worst['n']:.0e}, "
                       f"K = {worst['k']}, {worst['device']}) -- "
                       f"**{'PASS' if ratio <= 3 else 'FAIL'}**")
        for k, device, pts, slope in _slopes(rows):
            sizes = ", ".join(f"{n:.0e}" for n, _ in pts)
            out.append(f"- time per iteration linear in the annotations (log-log slope <= 1.05 from "
                       f"10^6 up), {device}, K = {k} ({sizes}): slope {slope:.2f} -- "
                       f"**{'PASS' if slope <= 1.05 else 'FAIL'}**")
        for r in rows:
            if "fit_s" in r and r["k"] == 2:
                ratio = SPARK_CROWD_DS_1E8_S / r["fit_s"]
                out.append(f"- 10^8 binary labels >= 10x faster than spark-crowd's 703 s, "
                           f"{r['device']}: {r['fit_s']:.1f} s, {ratio:.1f}x -- **{'PASS' if ratio >= 10 else 'FAIL'}**"
                           f" (peak RSS {r['peak_rss_gb']:.1f} GB)")
    return out + [""]


def report() -> None:
    import numpy as np

    L = ["# Scale: the defaults, 10^5 to 10^8 annotations, bigger than memory, 2 processes\n",
         "Written by `python -m experiments.benchmarks.scale report` from "
         "`experiments/benchmarks/scale_results/*.json` (see the script's doc for the parts).\n"]
    d = _load("defaults")
    if d:
        m = d["machine"]
        L.append(f"Machine: {m['cpu']}, {m['logical_cores']} cores, {m['ram_gb']:.0f} GB; JAX device: "
                 f"{m['device']}; jax {m['jax']}, crowd-kit {m['crowd-kit']}; commit {m['commit']}; "
                 f"{d['date']}.\n")
        L.append("## Defaults against crowd-kit's defaults (each to its own convergence, one process)\n")
        L.append("`ci.fit(ann)` (the default model, whatever it is) and `ci.fit(ann, \"dawid_skene\")` "
                 "(pooled prior, soft stopping rule, tol 1e-5, max 100 iterations) against crowd-kit "
                 "`DawidSkene(n_iter=100).fit_predict(df)` (its default tol 1e-5), in the same "
                 "subprocess, on `ci.datasets.synthetic(n/10 items, 200 workers, K=10, 10 per item, "
                 "seed=0)`. Seconds: best of 5 calls after a first (compiling) call for crowdinfer (1 "
                 "call when the first took over 20 s), "
                 "best of 5 calls (2 at 10^6) for crowd-kit. Accuracy against the true labels.\n")
        L.append("| annotations | default model | default s | DS s | DS first call s | crowd-kit s "
                 "| speed-up default | speed-up DS | iterations default / DS / crowd-kit "
                 "| acc default | acc DS | acc crowd-kit | load before / after |")
        L.append("|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
        for r in d["rows"]:
            if "error" in r:
                L.append(f"| {r['args']} | error: {r['error'][-200:]!r} |")
                continue
            L.append(
                f"| {r['n']:,} | {r['default_model']} | {r['default_s']:.3f} | "
                f"{r['dawid_skene_s']:.3f} | {r['dawid_skene_first_s']:.2f} | {r['crowdkit_s']:.2f} | "
                f"{r.get('default_crowdkit_s', r['crowdkit_s']) / r['default_s']:.2g}x"
                f"{'*' if 'default_crowdkit_s' in r else ''} | {r['crowdkit_s'] / r['dawid_skene_s']:.1f}x"
                f" | {r['default_n_iter']} / {r['dawid_skene_n_iter']} / {r['crowdkit_n_iter']} | "
                f"{r['default_acc']:.4f} | {r['dawid_skene_acc']:.4f} | {r['crowdkit_acc']:.4f} | "
                f"{_load1(r['load_before'])} / {_load1(r['load_after'])} |")
        earlier = [r for r in d["rows"] if "default_crowdkit_s" in r]
        if earlier:
            L.append("\n\\* The default model's rows come from earlier runs of this part (load "
                     + ", ".join(_load1(r["default_load"]) for r in earlier) + ": it takes minutes, "
                     "and the machine was too busy to repeat it); their speed-up is against "
                     "crowd-kit in those same runs "
                     "(" + ", ".join(f"{r['default_crowdkit_s']:.1f} s" for r in earlier) + ").")
        L.append("\nPhases of `ci.fit(ann, \"dawid_skene\")` (seconds, best of 5; the Posterior "
                 "wrapping is the rest):\n")
        names = [k for k in d["rows"][0].get("phases", {})]
        if names:
            L.append("| annotations | " + " | ".join(names) + " |")
            L.append("|---:|" + "---:|" * len(names))
            for r in d["rows"]:
                if "phases" in r:
                    L.append(f"| {r['n']:,} | " + " | ".join(
                        f"{r['phases'][k]:.4f}" if isinstance(r['phases'][k], float)
                        else str(r['phases'][k]) for k in names) + " |")
    rows = []
    for part in ("iterations", "iterations2", "big", "big1"):
        got = _load(part)
        if got:
            rows += [r for r in got["rows"] if "error" not in r]
    if rows:
        L.append("\n## Per-iteration time and peak memory, 10^5 to 10^8 annotations\n")
        L.append("Dawid-Skene EM (`dawid_skene.MAP` in the shared loop, float32, no items x workers "
                 "array) on generated item-sorted data (10 annotations per item, 200 workers). "
                 "Layout `slots`: on one device the annotations also come laid out per item "
                 "(`CrowdData.slots`, S x N worker-label codes): the E-step's item sums are one "
                 "fused pass of gathers slot by slot and the expected counts a scatter of the "
                 "posterior per slot, no (annotations, K) array is written. Layout `rows`: sharded "
                 "over several devices the sums gather "
                 "(annotations, K) rows and segment-sum them, chunk by chunk above 64 MB. "
                 "Per iteration = (time of 6 iterations - time of 1) / 5, best of 10 up to 10^6 "
                 "and of 4 at 10^7, of 2 at 10^8. The CPU time is that of all "
                 "the process's threads (XLA runs loop fusions on 2), which other jobs stretch less "
                 "than the wall time; the ratio to the bound is of the wall time. "
                 "Bound = the bytes an iteration must move (12 B per annotation: item, worker, label; "
                 "8 B per item and class: the posterior written and read) / the memory bandwidth "
                 "of one core measured in the same process (numpy `a + b`, 2 reads + 1 write). "
                 "Peak RSS of the whole subprocess (data included). The bound is not reachable by this "
                 "algorithm at K = 10: the expected counts scatter the posterior once per slot (S "
                 "reads of the (N, K) posterior, not one), and XLA's CPU gather and scatter move a "
                 "row of K floats element by element, so K = 10 takes 3-4.5x K = 2's time per "
                 "annotation in the table (its bound is 1.2-1.5x K = 2's).\n")
        L.append("| annotations | K | device | layout | s / iteration | same run, layout `rows` "
                 "| CPU s / iteration, layout / `rows` | bound s | ratio | bandwidth GB/s "
                 "| peak RSS GB | load |")
        L.append("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sorted(rows, key=lambda r: (r["k"], r["n"])):
            same = (f"{r['rows_iteration_s']:.4f} ({r['rows_iteration_s'] / r['iteration_s']:.1f}x)"
                    if "rows_iteration_s" in r else "")
            cpu = (f"{r['cpu_iteration_s']:.4f}" if "cpu_iteration_s" in r else "") + (
                f" / {r['rows_cpu_iteration_s']:.4f} ({r['rows_cpu_iteration_s'] / r['cpu_iteration_s']:.1f}x)"
                if "rows_cpu_iteration_s" in r else "")
            L.append(f"| {r['n']:.0e} | {r['k']} | {r['device']} | "
                     f"{r.get('layout', 'rows').split(' (')[0]} | {r['iteration_s']:.4f} | {same} | "
                     f"{cpu} | "
                     f"{r['bound_s']:.4f} | {r['iteration_s'] / r['bound_s']:.1f}x | "
                     f"{r['bandwidth_gbs']:.1f} | {r['peak_rss_gb']:.2f} | "
                     f"{_load1(r['load_before'])} |")
        for k, dev, pts, slope in _slopes(rows):
            L.append(f"\nK = {k}, {dev}: log-log slope of time per iteration vs annotations "
                     f"from 10^6 up ({', '.join(f'{p[0]:.0e}' for p in pts)}): **{slope:.3f}** "
                     f"(target <= 1.05: {'PASS' if slope <= 1.05 else 'FAIL'}).")
        big = [r for r in rows if "fit_s" in r]
        if big:
            L.append("\n### 10^8 annotations to convergence\n")
            L.append("The default stopping rule (soft, tol 1e-5, at most 100 iterations), maximum-"
                     "likelihood Dawid-Skene (`prior=\"none\"`, spark-crowd's model), majority-vote "
                     "start and compilation included; data generation not included.\n")
            L.append("| K | device | layout | seconds | iterations | accuracy | peak RSS GB | "
                     "vs spark-crowd's 703 s (binary) | load |")
            L.append("|---:|---|---|---:|---:|---:|---:|---:|---|")
            for r in sorted(big, key=lambda r: r["k"]):
                vs = f"{SPARK_CROWD_DS_1E8_S / r['fit_s']:.1f}x" if r["k"] == 2 else ""
                L.append(f"| {r['k']} | {r['device']} | {r.get('layout', 'rows').split()[0]} | "
                         f"{r['fit_s']:.1f} | {r['fit_n_iter']} | {r['accuracy']:.4f} "
                         f"| {r['peak_rss_gb']:.2f} | {vs} | "
                         f"{_load1(r['load_before'])} |")
    o = _load("outofcore")
    if o:
        r = o["rows"][0]
        L.append("\n## Bigger than memory: EM from a Parquet file\n")
        if "error" in r:
            L.append(f"error: {r['error'][-500:]}")
        else:
            L.append(
                f"`crowdinfer.outofcore.em(path)` on an item-sorted Parquet file of {r['rows']:,} "
                f"annotations (K = 2, {r['n_items']:,} items; {r['file_gb']:.2f} GB on disk, "
                f"{r['in_memory_gb']:.2f} GB as int32 columns in memory) in a subprocess whose "
                f"private memory is limited to {r.get('limit_gb', 2.5)} GB (`RLIMIT_DATA`, as `ulimit -d`; "
                "`ulimit -v` would also count the ~2.9 GB of address space that importing "
                "crowdinfer maps without using): the "
                f"annotations are {r['in_memory_gb'] / r.get('limit_gb', 2.5):.1f}x the memory the run may "
                f"use. Device: {r.get('device', '?')}.\n")
            L.append("| engine | passes over the file | seconds | accuracy | peak RSS GB |")
            L.append("|---|---:|---:|---:|---:|")
            for e, name, passes in (("em", "exact EM (2 iterations, fixed)", "1 + 2"),
                                    ("svi", "minibatch SVI (1 Adam step per 2^18 rows)",
                                     "1 + 1 to label")):
                if f"{e}_s" in r:
                    L.append(f"| {name} | {passes} | {r[e + '_s']:.1f} | {r[e + '_accuracy']:.4f} | "
                             f"{r[e + '_peak_rss_gb']:.2f} |")
                else:
                    L.append(f"| {name} | {passes} | not finished: "
                             f"{r.get(e + '_error', '')[-120:]!r} | | |")
            if "em_s" in r:
                per_pass = r["em_s"] / (1 + r["em_n_iter"])
                L.append(f"\nOne pass over the file (read, decode, E-step and expected counts) takes "
                         f"{per_pass:.0f} s, {r['rows'] / per_pass / 1e6:.1f} M annotations/s; an "
                         "EM iteration is one pass. Sizes (items, workers, classes) given, so no "
                         "pass to find them.")
            L.append(f"\nLoad: {r.get('load_before', '?')}.")
    mp = _load("multiprocess")
    if mp:
        r = mp["rows"][0]
        L.append("\n## 2 processes\n")
        L.append(
            f"The same `ci.fit(ann, \"dawid_skene\")` on {r['n']:,} annotations (K = 10) in 2 processes "
            f"on 127.0.0.1 (`jax.distributed.initialize`, gloo), 2 CPU devices each (a global mesh of "
            f"{r['multi']['devices']}), against 1 process with 1 device: "
            f"{r['multi']['s']:.2f} s vs {r['single']['s']:.2f} s (second call), iterations "
            f"{r['multi']['n_iter']} vs {r['single']['n_iter']}, accuracy {r['multi']['acc']:.4f} vs "
            f"{r['single']['acc']:.4f}, largest difference in the label probabilities of the first "
            f"2000 items {r['max_abs_diff_first_2000_items']:.1e}. The 4 devices share this "
            "machine's 2 cores, so this shows the code path, not a speed-up; "
            "`tests/test_multiprocess.py` checks the answer.\n")
    L[2:2] = _targets(d, rows)
    (HERE / "scale.md").write_text("\n".join(L) + "\n")
    print((HERE / "scale.md").read_text())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
