"""The experiments as packages (``python -m experiments.X``): their shared code reproduces the
committed results, and the benchmarks' subprocess runner runs a worker on a frozen copy of the
source."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import online_common as oc
from experiments.benchmarks import machine

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results" / "online"
DATASETS = {"sandbox": "sandbox_summary.csv", "labelme": "real_summary.csv",
            "music_genre": "real_summary.csv"}


def _runs():
    for name, summary in DATASETS.items():
        for experiment in oc.EXPERIMENTS:
            path = RESULTS / f"{name}_{experiment}.csv"
            if path.exists():
                yield name, experiment, summary, pd.read_csv(path)


def test_summaries_reproduce_the_committed_tables():
    seen = 0
    for name, experiment, summary, runs in _runs():
        table = oc.summarise(runs, ["variant"], 1.0)
        ref = pd.read_csv(RESULTS / summary)
        ref = ref[(ref.dataset == name) & (ref.experiment == experiment)].reset_index(drop=True)
        assert table["variant"].tolist() == ref["variant"].tolist(), (name, experiment)
        numeric = [c for c in table.columns if c in ref.columns and c != "variant"]
        np.testing.assert_allclose(table[numeric].to_numpy(float), ref[numeric].to_numpy(float),
                                   rtol=1e-12, err_msg=f"{name} {experiment}")
        seen += 1
    assert seen >= 14


def test_stop_marks_are_the_rule_of_beta_steps():
    """``would_stop`` on each committed run's finished-set sizes marks the row the CSV marks."""
    checked = 0
    for _, _, _, runs in _runs():
        for _, run in runs.groupby(["variant", "seed"], sort=False):
            stop = oc.would_stop(run["finished"].to_numpy()[1:], oc.BETA)
            marked = np.flatnonzero(run["would_stop"].to_numpy())
            assert marked.tolist() == ([] if stop is None else [stop + 1])
            checked += 1
    assert checked > 300
    assert oc.would_stop(np.array([0, 0, 0, 0, 0]), 5) == 4  # nothing finished: 5 steps
    assert oc.would_stop(np.array([1, 3, 3, 2, 3, 3, 3]), 5) == 6
    assert oc.would_stop(np.array([1, 2, 3, 4]), 5) is None


@pytest.mark.slow
def test_stall_rule_counted_in_answers_is_where_the_library_stops():
    """``stall_stop`` on a run recorded with ``early_stop=None`` marks the update after which the
    same run with ``early_stop`` set stops (``crowdinfer.online.loop.stop_reason``)."""
    from crowdinfer import online

    n, k = 120, 3
    confusion = np.broadcast_to(np.full((k, k), 0.2) + np.eye(k) * 0.4, (6, k, k)).copy()
    truth, task = np.arange(n) % k, online.make_task(n, 6)
    base = dict(hits_per_step=2, hit_size=10, risk_threshold=0.05)

    def run(early_stop):
        config = online.preset("ds_model", k, early_stop=early_stop, **base)
        return online.run_simulation(config, task, confusion, truth, seed=3, max_steps=40)

    full = run(None).history_frame()
    stop = oc.stall_stop(full["finished"].to_numpy(), full["annotations"].to_numpy(), 0.75 * n)
    assert stop is not None and full["finished"].to_numpy()[:stop].max() > 0  # it grew, then stalled
    stopped = run(0.75)
    assert len(stopped.history) == stop + 1 and "has not grown" in stopped.stop_reason()
    assert stopped.history_frame()["finished"].tolist() == full["finished"].tolist()[: stop + 1]


def test_online_summary_reproduces_the_claims(tmp_path):
    from experiments import online_summary

    for path in RESULTS.glob("*.csv"):
        if path.name not in ("claims.csv",):
            shutil.copy(path, tmp_path / path.name)
    online_summary.main(["--results", str(tmp_path)])
    assert (tmp_path / "summary_tables.md").read_text() == (RESULTS / "summary_tables.md").read_text()
    assert (tmp_path / "claims.csv").read_text() == (RESULTS / "claims.csv").read_text()


def test_run_worker_runs_the_frozen_copy_and_reports_failures(tmp_path):
    snap = machine.frozen_source("test_experiments_")
    try:
        (snap / "probe_worker.py").write_text(
            "import json, sys, time\n"
            "import crowdinfer, experiments\n"
            "kind = sys.argv[2]\n"
            "if kind == 'fail':\n"
            "    sys.exit('the worker gave up')\n"
            "if kind == 'sleep':\n"
            "    time.sleep(30)\n"
            "print('noise')\n"
            "print('RESULT ' + json.dumps({'crowdinfer': crowdinfer.__file__, "
            "'experiments': experiments.__file__, 'args': sys.argv[1:]}))\n")
        run = machine.run_worker("probe_worker", ["ok", "x"], timeout=120, snap=snap)
        assert run.status == "ok" and run.wall_s > 0 and run.other_load_cores >= 0
        assert run.result["args"] == ["--worker", "ok", "x"]
        assert Path(run.result["crowdinfer"]).resolve().is_relative_to(snap.resolve())
        assert Path(run.result["experiments"]).resolve() == (machine.REPO / "experiments" / "__init__.py")
        failed = machine.run_worker("probe_worker", ["fail", "x"], timeout=120, snap=snap)
        assert failed.result is None and failed.status == "failed: the worker gave up"
        killed = machine.run_worker("probe_worker", ["sleep", "x"], timeout=3, snap=snap)
        assert killed.result is None and killed.status == "killed"
    finally:
        shutil.rmtree(snap, ignore_errors=True)


@pytest.mark.parametrize("module", ["experiments.online_calibration",  # imports online_real, online_common
                                    "experiments.benchmarks.aggregation_speed",
                                    "experiments.benchmarks.online_speed"])
def test_experiments_run_as_modules(module):
    import subprocess

    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=machine.REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:")
