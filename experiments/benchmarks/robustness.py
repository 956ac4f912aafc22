"""Robustness: thousands of generated inputs per entry point, and what each did (issue 12).

    python -m experiments.benchmarks.robustness [--examples 500] [--fits 60] [--cli 40]

Entry points and their generated inputs:

* the readers -- ``from_csv`` (CSV and TSV files written with correct quoting, from an alphabet of
  separators, quotes, newlines, signs, leading zeros, dots, ASCII and Unicode spaces, a full-width
  digit; plus known traps: ``007``/``7``, ``+1``, 20-digit ids, ``NA``), ``from_csv`` with one
  malformed line appended (an extra field, a missing field, a trailing comma, an unclosed
  quote), ``from_arrow`` (the same tables as Arrow string columns), ``from_dataframe`` (object
  columns mixing ints, huge ints, floats, NaN, inf, None, bools, text) and ``from_arrays`` (codes
  with negatives, NaN, fractions, bad sizes and weights).  The properties are those of
  ``tests/test_fuzz.py`` (whose helpers are called here), run on ``--examples`` inputs each;
* ``ci.fit`` options: a random (model, engine, option, bad value) -- NaN, inf, negative, zero,
  huge, wrong type, a misspelled option name -- on a small task; when the value passes the checks
  the fit is run (at most ``--fits`` runs; larger values of step/sample counts are not run here);
* the command line: ``crowdinfer fit FILE`` in a subprocess on malformed files and bad
  arguments.

Outcomes: **loaded exactly** (the round trip of ids and labels holds) / **ran** (a fit with
finite output) / **clear ValueError** (one line, naming the problem; for ``fit``, the option;
for the CLI, a non-zero exit with one line on stderr and no traceback) / **unclear** (any other
exception, a multi-line or empty message, a traceback, or a valid input refused) / **silent**
(a malformed input accepted, an inexact round trip, NaN returned).  Target: zero unclear, zero
silent.  Writes ``experiments/benchmarks/robustness.md``.
"""
from __future__ import annotations

import argparse
import collections
import math
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from experiments.benchmarks.machine import load_average, machine_info

OUT = Path(__file__).resolve().with_name("robustness.md")
OUTCOMES = ("loaded exactly", "ran", "clear ValueError", "unclear", "silent")


class Tally:
    """Counts of outcomes per entry point, with a few examples of anything not clean."""

    def __init__(self):
        self.counts = collections.defaultdict(collections.Counter)
        self.examples = collections.defaultdict(list)
        self.seconds = collections.Counter()

    def add(self, entry: str, outcome: str, example: str = "") -> None:
        self.counts[entry][outcome] += 1
        if outcome in ("unclear", "silent") and len(self.examples[entry]) < 6:
            self.examples[entry].append(f"{outcome}: {example}"[:400])


def classify(call, entry: str, tally: Tally, describe) -> None:
    """Run ``call()`` (a test_fuzz helper returning "loaded" or "error: ..."), and file it."""
    try:
        outcome = call()
    except AssertionError as err:
        kind = "unclear" if "refused" in str(err) else "silent"
        tally.add(entry, kind, f"{describe()} -> AssertionError {err}")
    except Exception as err:  # noqa: BLE001 -- anything but ValueError is what we count
        tally.add(entry, "unclear", f"{describe()} -> {type(err).__name__}: {err}")
    else:
        tally.add(entry, "loaded exactly" if outcome == "loaded" else "clear ValueError")


def readers(tally: Tally, examples: int, work: Path) -> None:
    import pyarrow as pa
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import crowdinfer as ci
    from tests import test_fuzz as fz

    run = settings(max_examples=examples, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))

    @run
    @given(table=fz.rows)
    def csv_files(table):
        classify(lambda: fz.csv_outcome(table, work / "f.csv"), "from_csv (CSV file)", tally,
                 lambda: repr(table))

    @run
    @given(table=fz.rows)
    def tsv_files(table):
        classify(lambda: fz.csv_outcome(table, work / "f.tsv", sep="\t"),
                 "from_csv (TSV file)", tally, lambda: repr(table))

    @run
    @given(table=fz.rows, extra=st.sampled_from(["i1,w1,cat,0.9\n", "a,b\n", "a,b,c,\n",
                                                 "a,\"b,c\n", ",,\n", "a,b,c,d,e\n"]))
    def malformed(table, extra):
        def call():
            out = fz.csv_outcome(table, work / "m.csv", extra=extra)
            assert out.startswith("error"), "a malformed line was accepted"
            return out
        classify(call, "from_csv (one malformed line)", tally, lambda: repr((table, extra)))

    def arrow_outcome(table):
        t = pa.table({c: pa.array([r[i] for r in table], pa.string())
                      for i, c in enumerate(("item", "worker", "label"))})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ann = ci.Annotations.from_arrow(t, duplicates="keep")
            except ValueError as err:
                assert str(err) and "\n" not in str(err)
                return "error: " + str(err)
        got = collections.Counter(ann.to_dataframe().itertuples(index=False, name=None))
        assert got == collections.Counter(map(tuple, table)), "not an exact round trip"
        return "loaded"

    @run
    @given(table=fz.rows)
    def arrow_tables(table):
        classify(lambda: arrow_outcome(table), "from_arrow (string columns)", tally,
                 lambda: repr(table))

    @run
    @given(item=fz.columns, worker=fz.columns, label=fz.columns)
    def frames(item, worker, label):
        classify(lambda: fz.frame_outcome(item, worker, label), "from_dataframe (mixed values)",
                 tally, lambda: repr((item, worker, label)))

    @run
    @given(item=fz.codes, worker=fz.codes, label=fz.codes,
           n_classes=st.one_of(st.none(), st.integers(-1, 4)),
           weight=st.one_of(st.none(), st.lists(st.floats(), min_size=0, max_size=6)))
    def arrays(item, worker, label, n_classes, weight):
        if weight is not None and len(weight) != len(item):
            weight = weight[: len(item)] + [1.0] * max(0, len(item) - len(weight))
        classify(lambda: fz.arrays_outcome(np.asarray(item), np.asarray(worker),
                                           np.asarray(label), n_classes, weight),
                 "from_arrays (codes)", tally, lambda: repr((item, worker, label, n_classes, weight)))

    for prop in (csv_files, tsv_files, malformed, arrow_tables, frames, arrays):
        t0 = time.perf_counter()
        prop()
        tally.seconds[prop.__name__] += time.perf_counter() - t0
        print(f"{prop.__name__}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)


BAD_VALUES = [math.nan, math.inf, -math.inf, -1, 0, 0.5, 1e6, -1e6, 2**40, "abc", None, True,
              [1, 2], (3,)]
MISSPELLED = ["lerning_rate", "max_iters", "num_step", "tolerance", "nonsense"]
FAST = {"nuts": dict(num_warmup=10, num_samples=10, num_chains=1), "svi": dict(num_steps=30),
        "em": dict(max_iter=30), "vb": dict(max_iter=30)}
COUNT_LIKE = ("num_", "max_iter", "steps", "restarts", "subtypes", "communities", "hidden",
              "folds", "batch_items")


def fit_options(tally: Tally, trials: int, max_fits: int, seed: int = 0) -> None:
    import crowdinfer as ci
    from crowdinfer import options as opts
    from crowdinfer.fit import MODELS, fit

    ann = ci.datasets.synthetic(n_items=30, n_workers=5, n_classes=3, annotations_per_item=3,
                                seed=0).annotations
    rng = np.random.default_rng(seed)
    engines = [(m, e) for m, entry in MODELS.items() for e in entry.methods]
    fits = 0
    for _ in range(trials):
        model, method = engines[rng.integers(len(engines))]
        names = opts.options_for(model, method, MODELS[model].methods[method])
        name = (MISSPELLED[rng.integers(len(MISSPELLED))] if rng.random() < 0.15 or not names
                else names[rng.integers(len(names))])
        value = BAD_VALUES[rng.integers(len(BAD_VALUES))]
        entry = "ci.fit options"
        options = {**{k: v for k, v in FAST.get(method, {}).items() if k in names}, name: value}
        where = f"fit({model!r}, {method!r}, {name}={value!r})"
        try:
            opts.validate(model, method, {name: value}, MODELS[model].methods[method])
            valid = True
        except (ValueError, TypeError):
            valid = False
        if valid:
            big = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > 1e3
            if fits >= max_fits or (big and any(k in name for k in COUNT_LIKE)):
                tally.add(entry, "valid value, not run here")
                continue
            fits += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                post = fit(ann, model, method, **options)
        except (ValueError, TypeError) as err:
            message = str(err)
            clear = message and "\n" not in message and name in message
            tally.add(entry, "clear ValueError" if clear else "unclear",
                      f"{where} -> {type(err).__name__}: {message}")
        except Exception as err:  # noqa: BLE001
            tally.add(entry, "unclear", f"{where} -> {type(err).__name__}: {err}")
        else:
            finite = np.all(np.isfinite(post.label_probs)) and np.all(np.isfinite(post.confusion))
            tally.add(entry, "ran" if finite else "silent", f"{where} returned NaN")


def cli_cases(work: Path, n_random: int, seed: int = 0) -> list[tuple[str, list[str], str | None]]:
    """(name, arguments after ``crowdinfer``, expected: "ok" or "error")."""
    from tests import test_fuzz as fz

    rng = np.random.default_rng(seed)
    cases = []

    def file(name, text, binary=False):
        path = work / name
        path.write_bytes(text if binary else text.encode("utf-8"))
        return str(path)

    fixed = {
        "extra field (shifted columns before)": "item,worker,label\ni1,w1,cat,0.9\ni2,w2,dog\n",
        "trailing comma on data lines": "item,worker,label\n1,a,x,\n2,a,y,\n",
        "duplicate column names": "item,label,label\n1,x,y\n",
        "whitespace-padded id": "item,worker,label\n 1,a,x\n1,a,y\n",
        "empty file": "",
        "header only": "item,worker,label\n",
        "missing label column": "item,worker\n1,a\n",
        "one class": "item,worker,label\n1,a,x\n2,a,x\n",
        "NA id": "item,worker,label\nNA,a,x\n2,a,y\n",
        "unclosed quote": 'item,worker,label\n"a,w,x\n2,w,y\n',
        "negative weight": "item,worker,label,weight\n1,a,x,-1\n2,a,y,1\n",
    }
    for name, text in fixed.items():
        cases.append((name, ["fit", file(f"{len(cases)}.csv", text)], "error"))
    cases.append(("latin-1 bytes", ["fit", file("latin.csv", b"item,worker,label\n\xe9,a,x\n2,a,y\n",
                                                 binary=True)], "error"))
    cases.append(("binary garbage", ["fit", file("garbage.csv", bytes(range(256)) * 4, True)],
                  "error"))
    cases.append(("a directory", ["fit", str(work)], "error"))
    cases.append(("a missing file", ["fit", str(work / "nope.csv")], "error"))
    good = file("good.csv", "item,worker,label\n007,a,x\n7,a,y\n12345678901234567890,b,x\n")
    cases.append(("007/7/20-digit ids (valid)", ["fit", good], "ok"))
    cases.append(("unknown model", ["fit", good, "--model", "nope"], "error"))
    cases.append(("--out is the input", ["fit", good, "--out", good], "error"))
    cases.append(("--out is a directory", ["fit", good, "--out", str(work)], "error"))
    cases.append(("--out in a missing folder", ["fit", good, "--out", str(work / "no" / "x.csv")],
                  "error"))
    for k in range(n_random):
        n = int(rng.integers(1, 6))
        table = [tuple(str(rng.choice(list(fz.ALPHABET))) * int(rng.integers(0, 3))
                       + str(rng.choice(["1", "7", "007", "x", "y", " ", ""])) for _ in range(3))
                 for _ in range(n)]
        path = work / f"r{k}.csv"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected = "ok" if fz.csv_outcome(table, path) == "loaded" else "error"
            except AssertionError:
                expected = "error"
        cases.append((f"random table {table!r}", ["fit", str(path)], expected))
    return cases


def cli(tally: Tally, n_random: int, work: Path) -> None:
    exe = shutil.which("crowdinfer")
    base = [exe] if exe else [sys.executable, "-m", "crowdinfer.cli"]
    for name, args, expected in cli_cases(work, n_random):
        try:
            proc = subprocess.run(base + args, capture_output=True, text=True, timeout=600,
                                  cwd=work)
        except subprocess.TimeoutExpired:
            tally.add("crowdinfer fit (CLI)", "unclear", f"{name}: timed out")
            continue
        err_lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        if proc.returncode == 0:
            outcome = "loaded exactly" if expected == "ok" else "silent"
        elif "Traceback" in proc.stderr or len(err_lines) != 1:
            outcome = "unclear"
        else:
            outcome = "clear ValueError" if expected == "error" else "unclear"
        tally.add("crowdinfer fit (CLI)", outcome,
                  f"{name}: exit {proc.returncode}, stderr {proc.stderr[-300:]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="inputs per reader")
    parser.add_argument("--trials", type=int, default=600, help="fit option trials")
    parser.add_argument("--fits", type=int, default=60, help="at most this many fits run")
    parser.add_argument("--cli", type=int, default=25, help="random malformed files for the CLI")
    args = parser.parse_args()
    tally = Tally()
    work = Path(tempfile.mkdtemp(prefix="robustness_"))
    t0 = time.perf_counter()
    try:
        readers(tally, args.examples, work)
        t1 = time.perf_counter()
        fit_options(tally, args.trials, args.fits)
        tally.seconds["fit options"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        cli(tally, args.cli, work)
        tally.seconds["CLI"] = time.perf_counter() - t1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    outcomes = list(OUTCOMES) + sorted({o for c in tally.counts.values() for o in c} - set(OUTCOMES))
    info = machine_info()
    lines = [
        "# Robustness: generated inputs per entry point (issue 12)", "",
        f"`python -m {__spec__.name} --examples {args.examples} --trials "
        f"{args.trials} --fits {args.fits} --cli {args.cli}` ({time.perf_counter() - t0:.0f} s; "
        f"commit {info['commit']}; {load_average()}). The generators and checks are those of "
        "`tests/test_fuzz.py` (its default run uses 40 inputs per reader); the module docstring "
        "of the script defines each outcome. Target: zero *unclear*, zero *silent*.", "",
        "| entry point | inputs | " + " | ".join(outcomes) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in outcomes) + " |",
    ]
    total = collections.Counter()
    for entry, counts in tally.counts.items():
        total.update(counts)
        lines.append(f"| {entry} | {sum(counts.values())} | "
                     + " | ".join(str(counts.get(o, 0)) for o in outcomes) + " |")
    lines.append(f"| **all** | {sum(total.values())} | "
                 + " | ".join(str(total.get(o, 0)) for o in outcomes) + " |")
    bad = {e: ex for e, ex in tally.examples.items() if ex}
    lines += ["", "Unclear or silent cases (up to 6 per entry point):" if bad
              else "No unclear or silent case."]
    for entry, examples in bad.items():
        lines += ["", f"**{entry}**", ""] + [f"- `{e}`" for e in examples]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
