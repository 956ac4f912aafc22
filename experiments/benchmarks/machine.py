"""What machine a benchmark ran on (CPU, cores, memory, package versions, git commit), and how a
benchmark runs one measurement in a fresh process (:func:`run_worker`)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """Short HEAD, plus the files of crowdinfer/ and models/ changed since it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                                capture_output=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "crowdinfer", "models"], cwd=REPO,
                               text=True, capture_output=True).stdout.rstrip()  # keep " M path"
    except OSError:
        return "unknown"
    if dirty:
        commit += " + uncommitted changes to " + ", ".join(ln[3:] for ln in dirty.splitlines() if ln)
    return commit


def machine_info(packages=("jax", "jaxlib", "numpy")) -> dict:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": psutil.virtual_memory().total / 1e9,
        "python": platform.python_version(),
        "os": platform.platform(),
        **{p: package_version(p) for p in packages},
        "commit": git_commit(),
        "xla_flags": os.environ.get("XLA_FLAGS", "(unset)"),
        "device": device_info(),
    }


def device_info() -> str:
    """The devices JAX chose (a GPU/TPU when one is present, else the CPU): platform, kind, count."""
    try:
        import jax

        devices = jax.devices()
    except Exception as err:  # noqa: BLE001 -- a benchmark should still say why
        return f"unknown ({err})"
    kinds = sorted({d.device_kind for d in devices})
    return f"{devices[0].platform}: {len(devices)} x {', '.join(kinds)}"


def load_average() -> str:
    """The 1/5/15-minute load averages and the core count: how busy the machine was."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"


def busy_cpu_s() -> float:
    """Non-idle CPU seconds of the whole machine so far."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def frozen_source(prefix: str) -> Path:
    """Copy crowdinfer/ and models/ (installed as crowdinfer.models) to a temporary folder and
    return it: :func:`run_worker` with ``snap=`` that folder runs the worker on this copy, so that
    the workers of a benchmark run one version of the code even if the tree is edited meanwhile."""
    import shutil
    import tempfile

    snap = Path(tempfile.mkdtemp(prefix=prefix))
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "crowdinfer", snap / "crowdinfer", ignore=skip)
    if (REPO / "models").is_dir() and not (snap / "crowdinfer" / "models").exists():
        shutil.copytree(REPO / "models", snap / "crowdinfer" / "models", ignore=skip)
    return snap


def worker_parser(doc: str, quick: str, out_dir: str, worker: tuple):
    """The flags of a benchmark whose measurements run in :func:`run_worker` subprocesses:
    ``--quick`` (help ``quick``), ``--out-dir`` (help ``out_dir``), ``--no-freeze`` and the hidden
    ``--worker`` (two values named ``worker``) that the driver calls the module with."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--out-dir", type=Path, default=None, help=out_dir)
    p.add_argument("--no-freeze", action="store_true",
                   help="run the workers on the live tree instead of a copy of crowdinfer/ and "
                        "models/ taken at the start")
    p.add_argument("--worker", nargs=2, metavar=worker, help=argparse.SUPPRESS)
    return p


class WorkerRun(NamedTuple):
    result: Optional[dict]  # what the worker printed as ``RESULT {json}``; None if it failed
    status: str             # "ok", "killed" (ran past the timeout) or "failed: <its last line>"
    wall_s: float
    other_load_cores: float  # CPU the rest of the machine used meanwhile, in cores


def run_worker(module: str, args: Sequence[str], timeout: float,
               snap: Optional[Path] = None) -> WorkerRun:
    """``python -m MODULE --worker ARGS...`` in a fresh process (its own memory peak, its own
    compilations), on the frozen copy ``snap`` of the source (:func:`frozen_source`) or on the
    live tree; reads the last ``RESULT {json}`` line it prints.  Prints `` killed after ...`` or
    `` FAILED ...`` with the worker's last lines when it does not finish."""
    env, cwd = None, REPO
    if snap is not None:
        # ``-m`` puts the working folder first on sys.path: crowdinfer comes from the copy,
        # ``experiments`` from the repository next on PYTHONPATH
        env, cwd = dict(os.environ), snap
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(snap), str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", module, "--worker", *args]
    busy0, own0 = busy_cpu_s(), children_cpu_s()
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired:
        print(f" killed after {timeout:.0f} s", flush=True)
        return WorkerRun(None, "killed", timeout, float("nan"))
    wall = time.perf_counter() - start
    # CPU the rest of the machine used meanwhile (in cores): other jobs distort the timings
    foreign = max(0.0, (busy_cpu_s() - busy0) - (children_cpu_s() - own0)) / wall
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()][-5:]
        print(f" FAILED (rc={proc.returncode})\n    " + "\n    ".join(tail), flush=True)
        return WorkerRun(None, f"failed: {tail[-1] if tail else proc.returncode}", wall, foreign)
    return WorkerRun(json.loads(lines[-1][len("RESULT "):]), "ok", wall, foreign)


def loglog_slope(points) -> float | None:
    """The least-squares slope of log time against log size over ``points`` ((size, seconds)
    pairs; non-positive times left out), or ``None`` with fewer than two."""
    import math

    pts = [(math.log(n), math.log(t)) for n, t in points if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx
