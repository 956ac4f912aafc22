"""The `crowdinfer` command."""
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

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


def test_fit_without_a_model_says_what_it_chose_and_why(tmp_path, capsys):
    task = ci.datasets.synthetic(n_items=200, n_workers=12, n_classes=3, seed=5)
    path = tmp_path / "a.csv"
    task.annotations.to_dataframe().to_csv(path, index=False)
    assert main(["fit", str(path), "--out", str(tmp_path / "labels.csv")]) == 0
    err = capsys.readouterr().err
    chosen = ci.fit(task.annotations).selection["chosen"]
    assert f"chose {chosen} (" in err and "held-out log-likelihood per answer" in err


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
    # a VB, an SVI and (by default) an EM engine; every engine in-process: test_weights
    for model, method in [("bcc", "vb"), ("dawid_skene", "svi"), ("one_coin", None)]:
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


# ---------------------------------------------------------------- issue 12: one consistent CLI
def _small_csv(path, rows=None, header="item,worker,label"):
    import numpy as np

    if rows is None:
        rng = np.random.default_rng(0)
        truth = rng.integers(3, size=60)
        rows = []
        for i, t in enumerate(truth):
            for w in rng.choice(8, size=3, replace=False):
                label = t if rng.random() < 0.8 else rng.integers(3)
                rows.append(f"i{i},w{w},c{label}")
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_outputs_are_checked_before_the_fit(tmp_path, capsys):
    data = _small_csv(tmp_path / "a.csv")
    cases = [
        (["--out", str(data)], f"--out {data} is the input file {data}: choose another name"),
        (["--out", str(tmp_path)], f"--out {tmp_path} is a directory: give a file name"),
        (["--out", str(tmp_path / "no" / "l.csv")],
         f"--out {tmp_path / 'no' / 'l.csv'}: the folder {tmp_path / 'no'} does not exist"),
        (["--out", str(tmp_path / "l.csv"), "--skills-out", str(tmp_path / "l.csv")],
         f"--skills-out and --out both name {tmp_path / 'l.csv'}: give different files"),
    ]
    for extra, message in cases:
        assert main(["fit", str(data), "--model", "majority_vote", *extra]) == 2
        err = capsys.readouterr().err
        assert err == f"crowdinfer fit: error: {message}\n", err
    assert data.read_text().startswith("item,worker,label\ni0,")  # the input is untouched
    out = tmp_path / "l.csv"
    out.write_text("keep me")
    assert main(["fit", str(data), "--model", "majority_vote", "--out", str(out)]) == 2
    assert capsys.readouterr().err.endswith(f"--out {out} exists: pass --force to overwrite it\n")
    assert out.read_text() == "keep me"
    assert main(["fit", str(data), "--model", "majority_vote", "--out", str(out), "--force"]) == 0
    assert pd.read_csv(out).shape == (60, 3)


def test_errors_are_one_line_never_a_traceback(tmp_path, capsys):
    data = _small_csv(tmp_path / "a.csv")
    cases = [
        (["fit", str(tmp_path)], f"{tmp_path} is a directory, not an annotation file"),
        (["fit", str(tmp_path / "none.csv")], f"no such file: {tmp_path / 'none.csv'}"),
        (["fit", str(data), "--model", "glad", "-O", "learning_rate=nan"],
         "learning_rate must be a finite number in (0, 1], got nan"),
        (["fit", str(data), "--model", "dawid_skene", "--max-iter", "0"],
         "max_iter must be an integer >= 1, got 0"),
        (["fit", str(data), "--model", "dawid_skene", "-O", "colour=red"],
         "dawid_skene/em: unexpected keyword option 'colour': model 'dawid_skene' with engine "
         "'em' takes accuracy, class_prior, classifier_steps, features, folds, hidden, "
         "label_prior, learning_rate, max_iter, prior, prior_logits, progress, seed, stop, strength, "
         "tol, weight_decay"),
        (["fit", str(data), "--model", "dawid_skene", "-O", "tol"], "-O 'tol': write NAME=VALUE, e.g. -O tol=1e-6"),
        (["report", str(data), "--out", str(data)], f"--out {data} is a file: give a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err == f"crowdinfer {argv[0]}: error: {message}\n", err


def test_gold_and_columns_by_name_for_every_command(tmp_path, capsys):
    rows = _small_csv(tmp_path / "x.csv").read_text().splitlines()[1:]
    data = tmp_path / "a.tsv"
    data.write_text("img\tannotator\tanswer\n" + "\n".join(r.replace(",", "\t") for r in rows) + "\n")
    gold = tmp_path / "gold.csv"
    gold.write_text("picture,truth\n" + "\n".join(f"i{i},{r.split(',')[2]}"
                                                  for i, r in enumerate(rows[::3][:20])) + "\n")
    cols = ["--item-col", "img", "--worker-col", "annotator", "--label-col", "answer",
            "--gold", str(gold), "--gold-item", "picture", "--gold-label", "truth"]
    assert main(["fit", str(data), "--model", "majority_vote", *cols]) == 0
    captured = capsys.readouterr()
    assert "accuracy on 20 gold items" in captured.err
    assert captured.out.splitlines()[0] == "item,label,confidence"
    assert main(["fit", str(data), "--model", "majority_vote", *cols[:6], "--gold", str(gold)]) == 2
    assert capsys.readouterr().err == (
        f"crowdinfer fit: error: gold table {gold} has no column 'item' (columns: picture, "
        "truth); name it with --gold-item\n")
    out = tmp_path / "rep"
    assert main(["report", str(data), "--model", "majority_vote", "--out", str(out), "--draws",
                 "40", "--no-progress", *cols]) == 0
    assert "accuracy on 20 gold items" in (out / "report.md").read_text()


def test_report_names_files_safely_and_embeds_its_figures(tmp_path, capsys):
    rows = _small_csv(tmp_path / "x.csv").read_text().splitlines()[1:]
    evil = {"w0": "../../escape", "w1": "a/b", "w2": "..", "w3": "con:1"}
    for old, new in evil.items():
        rows = [r.replace(f",{old},", f",{new},") for r in rows]
    data = _small_csv(tmp_path / "evil.csv", rows)
    out = tmp_path / "deep" / "rep"
    assert main(["report", str(data), "--model", "dawid_skene", "--out", str(out),
                 "--draws", "40", "--confusions", "8", "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert all(p.parent == out for p in out.iterdir())
    assert not list(tmp_path.glob("**/escape*.png")) or all(
        p.parent == out for p in tmp_path.glob("**/escape*.png"))
    conf = [n for n in names if n.startswith("confusion_worker_")]
    assert len(conf) == 8 and all(re.fullmatch(r"confusion_worker_[A-Za-z0-9_-]+\.png", n) for n in conf)
    assert "confusion_worker_escape.png" in conf and "confusion_worker_a_b.png" in conf
    md = (out / "report.md").read_text()
    for n in ["worker_accuracy.png", "label_confidence.png", *conf]:
        assert f"]({n})" in md, n
    assert "r_hat" not in md  # the draws are not MCMC
    assert main(["report", str(data), "--model", "dawid_skene", "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err


def test_compilation_cache_can_be_switched_off(tmp_path, monkeypatch):
    from crowdinfer.cli import enable_compilation_cache

    monkeypatch.setenv("CROWDINFER_NO_CACHE", "1")
    assert enable_compilation_cache(tmp_path) is None
    monkeypatch.delenv("CROWDINFER_NO_CACHE")
    import jax

    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache(tmp_path / "c") == str(tmp_path / "c")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_second_run_reads_compiled_programs_from_the_cache(tmp_path):
    data = _small_csv(tmp_path / "a.csv")
    env = {**__import__("os").environ, "CROWDINFER_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CROWDINFER_NO_CACHE", None)
    cmd = [sys.executable, "-m", "crowdinfer.cli", "fit", str(data), "--model", "dawid_skene"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    entries = list((tmp_path / "cache").iterdir())
    assert entries  # compiled programs were written
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert sorted((tmp_path / "cache").iterdir()) == sorted(entries)  # nothing new to compile


def test_worker_accuracy_names_the_worst_workers_readably_at_200(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from crowdinfer import plot

    task = ci.datasets.synthetic(n_items=600, n_workers=200, n_classes=3, annotations_per_item=4, seed=2)
    df = task.annotations.to_dataframe()
    df["worker"] = "annotator/" + df.worker.astype(str)  # ids that are text, as people's are
    post = ci.fit(ci.Annotations.from_dataframe(df), "majority_vote")
    idata = post.to_arviz(num_draws=40, label_probs=False)
    assert post.to_arviz(num_draws=40, label_probs=False) is idata  # computed once, then cached
    mean = idata.posterior["accuracy"].mean(("chain", "draw")).to_numpy()
    ax = plot.worker_accuracy(post, idata=idata, worst=30)
    names = [t.get_text() for t in ax.get_yticklabels()]
    expect = post.annotations.worker_ids[np.argsort(mean, kind="stable")[:30]]
    assert names == [str(w) for w in expect]  # the 30 least accurate, least accurate first
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the first row is drawn at the top
    assert "30 least accurate of 200" in ax.get_title()
    everyone = plot.worker_accuracy(post, idata=idata)
    labels = everyone.get_yticklabels()
    assert len(labels) == 200 and labels[0].get_fontsize() == 6
    assert everyone.figure.get_size_inches()[1] >= 0.16 * 200  # room for every name
    plt.close("all")


@pytest.mark.slow  # five fits and five sets of draws: about a minute
def test_to_arviz_for_every_default_engine_and_svi():
    task = ci.datasets.synthetic(n_items=200, n_workers=12, n_classes=3, annotations_per_item=3, seed=4)
    for model, method in [("glad", None), ("majority_vote", None), ("dawid_skene", "svi"),
                          ("one_coin", "svi"), ("bcc", None)]:
        options = {"num_steps": 200} if method == "svi" else {}
        post = ci.fit(task.annotations, model, method, **options)
        idata = post.to_arviz(num_draws=40)
        p = idata.posterior
        assert p["confusion"].shape == (4, 10, 12, 3, 3), model
        assert p["label_probs"].shape == (4, 10, 200, 3), model
        assert p.attrs["mcmc"] == 0 and post.diagnostics is None, model  # no r-hat for these
        assert float(p["confusion"].sum("observed_class").min()) > 0.999, model


@pytest.mark.slow  # EBCC compiles for ~30 s
def test_to_arviz_for_ebcc_mixes_the_subtypes():
    """EBCC's draws are each worker's confusion mixed over a class's subtypes (shape (M, K, K),
    rows sum to 1, centred on the point estimate); no label_probs draws (subtypes mix per item)."""
    task = ci.datasets.synthetic(n_items=60, n_workers=6, n_classes=2, annotations_per_item=3, seed=4)
    post = ci.fit(task.annotations, "ebcc", restarts=2)
    p = post.to_arviz(num_draws=400).posterior
    assert p["confusion"].shape == (4, 100, 6, 2, 2)
    assert "label_probs" not in p and "subtypes" in p.attrs["draws"]
    np.testing.assert_allclose(p["confusion"].sum("observed_class"), 1.0, atol=1e-5)
    np.testing.assert_allclose(p["confusion"].mean(("chain", "draw")), post.confusion, atol=0.03)


def test_an_unexpected_error_is_one_line_too(tmp_path, capsys, monkeypatch):
    from crowdinfer import cli

    def broken(args):
        raise OverflowError("Python int too large to convert to C long\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "fit", (cli.COMMANDS["fit"][0], broken))
    assert main(["fit", "x.csv"]) == 2
    assert capsys.readouterr().err == (
        "crowdinfer fit: error: OverflowError: Python int too large to convert to C long; "
        "second line\n")
    monkeypatch.setenv("CROWDINFER_DEBUG", "1")
    with pytest.raises(OverflowError):
        main(["fit", "x.csv"])
