"""The `crowdinfer` command."""
import subprocess
import sys

import pandas as pd

import crowdinfer as ci
from crowdinfer.cli import main


def test_fit_writes_labels_confusions_and_prints_gold_accuracy(tmp_path, capsys, dataset):
    folder = ci.datasets.shared_data_dir() / "dog"
    out, conf, skills = tmp_path / "labels.csv", tmp_path / "conf.csv", tmp_path / "skills.csv"
    rc = main(["fit", str(folder / "annotations.csv"), "--model", "dawid_skene", "--out", str(out),
               "--confusion-out", str(conf), "--skills-out", str(skills),
               "--gold", str(folder / "truth.csv")])
    assert rc == 0
    labels = pd.read_csv(out)
    assert list(labels.columns) == ["item", "label", "confidence"] and len(labels) == 807
    truth = pd.read_csv(folder / "truth.csv").set_index("item").label
    acc = (labels.set_index("item").label == truth.reindex(labels.item).to_numpy()).mean()
    assert acc > 0.83
    err = capsys.readouterr().err
    assert f"accuracy on 807 gold items: {acc:.4f}" in err
    c = pd.read_csv(conf)
    assert list(c.columns) == ["worker", "true_class", "observed_class", "probability"]
    assert len(c) == 109 * 4 * 4
    assert len(pd.read_csv(skills)) == 109


def test_fit_reports_bad_input_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("item,worker,answer\n1,2,3\n")
    assert main(["fit", str(bad)]) == 2
    assert "missing label column 'label'" in capsys.readouterr().err
    assert main(["fit", str(bad), "--label-col", "answer"]) == 2
    assert "fewer than 2 classes" in capsys.readouterr().err


def test_majority_vote_to_stdout(capsys):
    folder = ci.datasets.shared_data_dir() / "temp"
    assert main(["fit", str(folder / "annotations.csv"), "--model", "majority_vote"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "item,label,confidence" and len(out) == 463


def test_demo_runs_as_a_console_script():
    proc = subprocess.run(
        [sys.executable, "-m", "crowdinfer.cli", "demo", "--items", "3000", "--workers", "60"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
    assert "Dawid-Skene" in rows and "majority vote" in rows
    table = [l.split() for l in proc.stdout.splitlines() if l.startswith(("majority", "Dawid"))]
    mv, ds = float(table[0][2]), float(table[1][1])
    assert ds > mv, proc.stdout


def test_fit_runs_every_engine_from_the_command_line(tmp_path, capsys):
    folder = ci.datasets.shared_data_dir() / "temp"
    for model, method in [("bcc", "vb"), ("dawid_skene", "svi"), ("glad", None), ("one_coin", "em")]:
        args = ["fit", str(folder / "annotations.csv"), "--model", model, "--out", str(tmp_path / "l.csv"),
                "--gold", str(folder / "truth.csv"), "--force"]  # the same --out each time
        if method:
            args += ["--method", method]
        assert main(args) == 0, (model, method)
        assert "accuracy on 462 gold items" in capsys.readouterr().err
    assert main(["fit", str(folder / "annotations.csv"), "--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def _feature_csv(path, n=400, k=4, d=6, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(k, size=n)
    x = rng.normal(size=(k, d))[y] * 2 + rng.normal(size=(n, d))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(d)])
    frame.insert(0, "label", [f"class{v}" for v in y])
    frame.insert(0, "item", [f"img{i}" for i in range(n)])
    frame.to_csv(path, index=False)
    return frame


def test_online_runs_resumes_and_writes_labels(tmp_path, capsys):
    frame = _feature_csv(tmp_path / "features.csv")
    args = ["online", str(tmp_path / "features.csv"), "--n-workers", "8", "--no-progress",
            "--dir", str(tmp_path / "run"), "--out", str(tmp_path / "labels.csv"),
            "--history", str(tmp_path / "history.csv"), "--prototypes", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "efficient_annotation:" in out and "stopped:" in out
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert list(labels.columns) == ["item", "label", "risk", "annotations"]
    assert len(labels) == 400 - 4 * 5  # the prototypes are not annotated
    truth = frame.set_index("item").label
    assert (labels.label.to_numpy() == truth.reindex(labels.item).to_numpy()).mean() > 0.9
    steps = len(pd.read_csv(tmp_path / "history.csv"))
    assert main(args) == 2  # the same command again would overwrite labels.csv and history.csv
    assert capsys.readouterr().err.endswith("labels.csv exists: pass --force to overwrite it\n")
    assert main(args + ["--force"]) == 0  # resumes the finished run, asks nothing more
    err = capsys.readouterr().err
    assert "resumed the run" in err
    assert len(pd.read_csv(tmp_path / "history.csv")) == steps


def test_online_reports_bad_input_clearly(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("item,f0\na,1.0\n")
    assert main(["online", str(bad), "--no-progress"]) == 2
    assert "needs a column 'label'" in capsys.readouterr().err
    _feature_csv(tmp_path / "ok.csv")
    assert main(["online", str(tmp_path / "ok.csv"), "--workers", "robots", "--no-progress"]) == 2
    assert "unknown --workers 'robots'" in capsys.readouterr().err
