"""Reading annotations: before and after issue 12 (item 2), at 10^6 and 10^7 rows.

    python -m experiments.benchmarks.io_speed [--sizes 1e6,1e7] [--repeats 3] [--skip-cli]

*Before* is the reader of commit ``BEFORE`` (loaded from git into a temporary module, run
unchanged): ``pd.read_csv(dtype=str)``, then a regular expression per column to find integers,
then ``from_dataframe`` with Python-sorted ids.  For Parquet, before is ``pd.read_parquet`` then
that ``from_dataframe`` (there was no Parquet reader).  *After* is ``Annotations.from_csv``
(pyarrow's CSV reader, every field exact text, checks on the distinct values) and
``Annotations.from_parquet``.  Both read the same files; the benchmark checks that they give the
same annotations (same ids, codes and order) -- on these clean files nothing changes but the time.

Two id styles: integer ids (``item`` 0..N/5, ``worker`` 0..1999, ``label`` 0..4) and text ids
(``img0000123.jpg``, ``A0000000007D0``, ``cat``..``yak``).  Best of ``--repeats`` at 10^6, one run
at 10^7 (each in this process, after a ``gc.collect()``).  Then, unless ``--skip-cli``:
``import crowdinfer`` and the first and second ``crowdinfer fit`` on a 10^4-row file (fresh
processes, an empty then a filled compilation cache), timed by ``cli_speed.py``'s helpers.

Writes ``experiments/benchmarks/io_speed.md`` (and the read timings to ``io_speed.json``;
``--cli-only`` re-times the start-up alone).
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.benchmarks.machine import REPO, load_average, machine_info

OUT = Path(__file__).resolve().with_name("io_speed.md")
RAW = OUT.with_suffix(".json")
BEFORE = "41467d6"  # the last commit with the text-then-regex reader


def old_module(work: Path):
    """The ``crowdinfer.annotations`` of commit BEFORE, imported as a stand-alone module."""
    source = subprocess.run(["git", "show", f"{BEFORE}:crowdinfer/annotations.py"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    path = work / "annotations_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("annotations_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["annotations_before"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def make_table(n: int, style: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    item = np.repeat(np.arange(-(-n // 5)), 5)[:n]
    worker = rng.integers(0, 2000, n)
    label = rng.integers(0, 5, n)
    if style == "integer":
        return pd.DataFrame({"item": item, "worker": worker, "label": label})
    names = np.array(["cat", "dog", "fox", "owl", "yak"])
    return pd.DataFrame({
        "item": pd.Series(item).map("img{:07d}.jpg".format),
        "worker": pd.Series(worker).map("A{:012X}".format),
        "label": names[label],
    })


def best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def same(a, b) -> bool:
    return (list(map(str, a.item_ids)) == list(map(str, b.item_ids))
            and list(map(str, a.worker_ids)) == list(map(str, b.worker_ids))
            and list(map(str, a.classes)) == list(map(str, b.classes))
            and np.array_equal(a.item, b.item) and np.array_equal(a.worker, b.worker)
            and np.array_equal(a.label, b.label))


def read_rows(sizes, repeats, work, old, new):
    rows = []
    for n in sizes:
        styles = ("integer", "text") if n <= 1_000_000 else ("text",)
        reps = repeats if n <= 1_000_000 else 1
        for style in styles:
            df = make_table(n, style)
            csv_path, pq_path = work / f"{style}_{n}.csv", work / f"{style}_{n}.parquet"
            df.to_csv(csv_path, index=False)
            df.to_parquet(pq_path, index=False)
            mb = csv_path.stat().st_size / 1e6
            del df
            for fmt, before_fn, after_fn in (
                ("CSV", lambda: old.Annotations.from_csv(csv_path),
                 lambda: new.Annotations.from_csv(csv_path)),
                ("Parquet", lambda: old.Annotations.from_dataframe(pd.read_parquet(pq_path)),
                 lambda: new.Annotations.from_parquet(pq_path)),
            ):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the collapsed-duplicates warning
                    t_new, a_new = best(after_fn, reps)
                    t_old, a_old = best(before_fn, reps)
                rows.append(dict(rows=n, ids=style, format=fmt, mb=mb, before=t_old, after=t_new,
                                 same=same(a_old, a_new), n=a_new.n_annotations))
                print(rows[-1], file=sys.stderr, flush=True)
                del a_new, a_old
            csv_path.unlink()
            pq_path.unlink()
    return rows


def cli_rows(work: Path, repeats: int):
    """Import time and first/second ``crowdinfer fit`` on a 10^4-row file (fresh processes)."""
    from cli_speed import simulated_csv, timed

    exe = shutil.which("crowdinfer")
    cli = [exe] if exe else [sys.executable, "-m", "crowdinfer.cli"]
    env = {**os.environ, "CROWDINFER_CACHE_DIR": str(work / "cache")}
    env.pop("CROWDINFER_NO_CACHE", None)
    data = work / "cli.csv"
    simulated_csv(data, 10_000)
    out = []
    walls = [timed([sys.executable, "-c", "import crowdinfer"], env)[0] for _ in range(repeats)]
    out.append(("python -c 'import crowdinfer'", statistics.median(walls), repeats))
    shutil.rmtree(work / "cache", ignore_errors=True)
    cmd = cli + ["fit", str(data)]
    out.append(("crowdinfer fit (10^4 rows), first run: empty cache", timed(cmd, env)[0], 1))
    walls = [timed(cmd, env)[0] for _ in range(repeats)]
    out.append(("crowdinfer fit (10^4 rows), second and later runs", statistics.median(walls),
                repeats))
    return out


def machine_line() -> str:
    info = machine_info(packages=("jax", "numpy", "pandas", "pyarrow"))
    return (f"{info['cpu']}, {info['affinity_cores']} cores usable, {info['ram_gb']:.0f} GB; "
            f"pandas {info['pandas']}, pyarrow {info['pyarrow']}; commit {info['commit']}; "
            f"{load_average()} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--cli-only", action="store_true",
                        help="re-use the read timings of io_speed.json, time only the start-up")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    import crowdinfer.annotations as new

    work = Path(tempfile.mkdtemp(prefix="io_speed_"))
    try:
        if args.cli_only:
            saved = json.loads(RAW.read_text())
            rows, args.sizes, args.repeats = saved["rows"], saved["sizes"], saved["repeats"]
            read_machine = saved.get("machine", "not recorded")
        else:
            rows = read_rows(sizes, args.repeats, work, old_module(work), new)
            read_machine = machine_line()
            RAW.write_text(json.dumps({"rows": rows, "sizes": args.sizes, "repeats": args.repeats,
                                       "machine": read_machine}, indent=1))
        cli = [] if args.skip_cli else cli_rows(work, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "# Reading annotations: before and after (issue 12, item 2)", "",
        f"`python -m {__spec__.name} --sizes {args.sizes} --repeats "
        f"{args.repeats}`. Before: the reader of commit `{BEFORE}` (text, then a regular "
        "expression per column, then Python-sorted ids; Parquet via `pd.read_parquet` and the old "
        "`from_dataframe`). After: `Annotations.from_csv` (pyarrow's CSV reader -- the engine "
        "behind pandas' `engine=\"pyarrow\"`, called directly so that every field stays exact "
        "text and a bad line can be named) and `Annotations.from_parquet`. Wall seconds, best of "
        f"{args.repeats} at 10^6 rows, one run at 10^7. *same*: both give identical annotations "
        "(ids, codes, order).", "",
        f"Machine (read timings): {read_machine}. Other sessions share the machine, so absolute "
        "times are inflated; before and after ran back to back on the same files.", "",
        "| rows | ids | format | file MB (CSV) | before s | after s | speed-up | same |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['rows']:,} | {r['ids']} | {r['format']} | {r['mb']:.0f} | "
                     f"{r['before']:.2f} | {r['after']:.2f} | {r['before'] / r['after']:.1f}x | "
                     f"{'yes' if r['same'] else 'NO'} |")
    csv_1e6 = [r["before"] / r["after"] for r in rows if r["format"] == "CSV" and r["rows"] == 10**6]
    if csv_1e6:
        lines += ["", f"CSV at 10^6 rows: {min(csv_1e6):.1f}x to {max(csv_1e6):.1f}x faster "
                  f"(target: at least 2x) -- {'met' if min(csv_1e6) >= 2 else 'NOT met'}."]
    if cli:
        lines += ["", "Start-up (fresh processes; `CROWDINFER_CACHE_DIR` in a temporary folder; "
                  "medians; `cli_speed.md` has the full table). Machine: " + machine_line() + ".",
                  "",
                  "| command | seconds | runs |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {sec:.2f} | {n} |" for name, sec, n in cli]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
