"""What machine a benchmark ran on: CPU, cores, memory, package versions, git commit."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

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


def frozen_source(prefix: str):
    """Copy crowdinfer/ and models/ (installed as crowdinfer.models) to a temporary folder; returns
    the folder and an environment that puts it first on PYTHONPATH, so that benchmark workers run
    one version of the code even if the tree is edited while the benchmark runs."""
    import shutil
    import tempfile

    snap = Path(tempfile.mkdtemp(prefix=prefix))
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "crowdinfer", snap / "crowdinfer", ignore=skip)
    if (REPO / "models").is_dir() and not (snap / "crowdinfer" / "models").exists():
        shutil.copytree(REPO / "models", snap / "crowdinfer" / "models", ignore=skip)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(snap), env.get("PYTHONPATH")]))
    return snap, env
