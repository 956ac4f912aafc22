"""The labelling server and the durability of its session: one writer per project, foreign and
truncated ledgers refused, named checkpoints, new workers joining, and the HTTP application."""
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

from crowdinfer import online
from crowdinfer.online.session import Session, SessionError, load_checkpoint

K = 3


def _task(n=12, m=8):
    return online.make_task(n, m)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the session -----------------------------------------------------------------------------------
def test_second_process_on_the_same_folder_is_refused(tmp_path):
    cfg = online.preset("ds_model", K)
    sess = Session(cfg, _task(), tmp_path)
    script = textwrap.dedent(f"""
        from crowdinfer import online
        from crowdinfer.online.session import Session, SessionError
        try:
            Session(online.preset("ds_model", {K}), online.make_task(12, 8), {str(tmp_path)!r})
        except SessionError as err:
            print("REFUSED", err)
    """)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert f"REFUSED {tmp_path} is in use by another process (pid {os.getpid()})" in out.stdout, out.stderr
    sess.close()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         timeout=300)
    assert "REFUSED" not in out.stdout and out.returncode == 0, out.stderr


def test_newest_session_in_a_process_takes_over(tmp_path):
    cfg = online.preset("ds_model", K)
    old = Session(cfg, _task(), tmp_path)
    new = Session(cfg, _task(), tmp_path)
    with pytest.raises(SessionError, match="superseded"):
        old.submit([0], [0], [1])
    assert new.submit([0], [0], [1]).n_accepted == 1


@pytest.mark.parametrize("kind", ["table", "text", "wal"])
def test_foreign_database_is_left_byte_identical(tmp_path, kind):
    path = tmp_path / "ledger.sqlite"
    if kind == "text":
        path.write_text("item,worker,label\n1,2,3\n")
    else:
        db = sqlite3.connect(path)
        if kind == "wal":
            db.execute("PRAGMA journal_mode=WAL")
        # the user's own table, even with our table's name and columns
        db.execute("CREATE TABLE annotations (seq INTEGER PRIMARY KEY, item INT, worker INT, "
                   "label INT, step INT, received REAL)" if kind == "wal" else
                   "CREATE TABLE annotations (id INTEGER PRIMARY KEY, text TEXT)")
        db.execute("INSERT INTO annotations VALUES (1, 1, 1, 1, 1, 1.0)" if kind == "wal" else
                   "INSERT INTO annotations VALUES (1, 'mine')")
        db.commit()
        db.close()
    before = _digest(path)
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(SessionError, match="untouched"):
        Session(online.preset("ds_model", K), _task(), tmp_path)
    assert _digest(path) == before
    assert sorted(f for f in os.listdir(tmp_path) if f != "lock") == listing


def test_missing_or_truncated_ledger_with_a_checkpoint_is_refused(tmp_path):
    cfg = online.preset("ds_model", K)
    sess = Session(cfg, _task(), tmp_path)
    rng = np.random.default_rng(0)
    for j in range(8):
        sess.submit(np.arange(12), np.full(12, j), rng.integers(0, K, 12))
    sess.update()
    sess.close()
    ledger = tmp_path / "ledger.sqlite"
    data = ledger.read_bytes()
    ledger.write_bytes(data[: len(data) // 2])
    with pytest.raises(SessionError, match="ledger.sqlite is truncated"):
        Session(cfg, _task(), tmp_path)
    ledger.write_bytes(b"")
    with pytest.raises(SessionError, match="missing or empty: the answers it records are gone"):
        Session(cfg, _task(), tmp_path)
    ledger.unlink()
    with pytest.raises(SessionError, match="missing or empty"):
        Session(cfg, _task(), tmp_path)
    assert not ledger.exists()  # refused before creating anything


def test_a_ledger_shorter_than_its_checkpoint_is_refused(tmp_path):
    cfg = online.preset("ds_model", K)
    a = Session(cfg, _task(), tmp_path / "a")
    a.submit([0, 1], [0, 0], [1, 2])
    a.close()
    b = Session(cfg, _task(), tmp_path / "b")
    b.submit([0, 1, 2, 3], [0, 0, 0, 0], [1, 2, 0, 0])
    b.update()
    b.close()
    # a checkpoint of 4 rows next to a ledger of 2 (e.g. an old backup restored)
    os.replace(tmp_path / "b" / "checkpoint.npz", tmp_path / "a" / "checkpoint.npz")
    with pytest.raises(SessionError, match="another ledger|truncated"):
        Session(cfg, _task(), tmp_path / "a")


def test_checkpoint_is_stored_by_name(tmp_path):
    cfg = online.preset("ds_model", K)
    sess = Session(cfg, _task(), tmp_path)
    sess.submit([0, 1, 2], [0, 1, 2], [1, 1, 2])
    sess.update()
    sess.close()
    with np.load(tmp_path / "checkpoint.npz") as z:
        names = set(z.files)
    assert {"data.item", "log_q", "confusion", "answered", "step"} <= names
    assert not any(n.startswith("leaf_") for n in names)
    template = online.init(cfg, _task())
    state, meta = load_checkpoint(tmp_path / "checkpoint.npz", template)
    assert int(state.n_annotations) == 3 and meta["ledger_seq"] == 3
    # a changed state layout: a clear error, not a silent misassignment
    with np.load(tmp_path / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["log_prior"] = arrays.pop("log_q")
    np.savez(tmp_path / "renamed.npz", **arrays)
    with pytest.raises(SessionError, match=r"missing fields \['log_q'\], unexpected fields \['log_prior'\]"):
        load_checkpoint(tmp_path / "renamed.npz", template)
    arrays["log_q"] = arrays.pop("log_prior").astype(np.float64)
    np.savez(tmp_path / "retyped.npz", **arrays)
    with pytest.raises(SessionError, match="field log_q is float64"):
        load_checkpoint(tmp_path / "retyped.npz", template)
    legacy = {f"leaf_{i}": a for i, a in enumerate(arrays.values())}
    np.savez(tmp_path / "legacy.npz", meta=np.zeros(2, np.uint8), **legacy)
    with pytest.raises(SessionError, match="by position"):
        load_checkpoint(tmp_path / "legacy.npz", template)


def test_workers_join_by_string_id_and_the_state_grows(tmp_path):
    cfg = online.preset("ds_model", K)
    items = [f"img-{i}" for i in range(12)]
    sess = Session(cfg, _task(m=2), tmp_path, item_ids=items, worker_ids=[])
    codes = [sess.add_worker(f"annotator-{j}") for j in range(5)]
    assert codes == [0, 1, 2, 3, 4] and sess.add_worker("annotator-3") == 3
    receipt = sess.record([0, 1, 0], [0, 4, 0], [1, 2, 2])
    assert receipt.accepted.tolist() == [True, True, False]
    assert "duplicate" in receipt.reasons[2]
    record = sess.update()
    assert record["annotations"] == 2 and sess.state.confusion.shape[0] >= 5
    sess.record([3], [4], [0])  # recorded, not yet in the state
    sess.close()
    again = Session(cfg, _task(m=2), tmp_path, item_ids=items, worker_ids=[])
    assert again.worker_ids == [f"annotator-{j}" for j in range(5)]
    assert int(again.state.n_annotations) == 3 and again.pending == 1
    assert again.item_index["img-3"] == 3
    with pytest.raises(ValueError, match="over other items"):
        Session(cfg, _task(m=2), tmp_path, item_ids=items[::-1], worker_ids=[])


# -- the HTTP application --------------------------------------------------------------------------
CLASSES = ["cat", "dog", "bird"]


def _items(tmp_path, n=12):
    truth = {f"t{i:02d}": CLASSES[i % 3] for i in range(n)}
    pd.DataFrame({"item": list(truth), "text": [f"a picture of a {c}" for c in truth.values()]}) \
        .to_csv(tmp_path / "items.csv", index=False)
    return truth


@pytest.fixture()
def served(tmp_path):
    from starlette.testclient import TestClient

    from crowdinfer.serve import Project, create_app, create_project

    truth = _items(tmp_path)
    spec = create_project(tmp_path / "proj", tmp_path / "items.csv", CLASSES, update_every=4,
                          annotators=["alice", "bob", "carol"], early_stop=None)
    project = Project(tmp_path / "proj", update_interval=0.2)
    with TestClient(create_app(project)) as client:
        yield client, project, spec, truth


def _answer_all(client, token, truth, wrong=()):
    """Answer every item this annotator is given (truthfully, except items in ``wrong``)."""
    h = {"X-Token": token}
    given = []
    r = client.get("/api/next", headers=h)
    nxt = r.json()
    while nxt["item"] is not None:
        item = nxt["item"]
        given.append(item)
        label = CLASSES[(CLASSES.index(truth[item]) + 1) % 3] if item in wrong else truth[item]
        r = client.post("/api/answer", headers=h, json={"item": item, "label": label})
        assert r.status_code == 200, r.text
        nxt = r.json()["next"]
    return given, nxt


def test_a_small_project_to_completion(served):
    client, project, spec, truth = served
    tokens = project.tokens
    wrong = {"t00", "t05"}
    answered = {}
    for name in ("carol", "alice", "bob"):  # carol first: no item is finished before she answers
        given, last = _answer_all(client, tokens[name], truth, wrong if name == "carol" else ())
        assert len(given) == len(set(given))  # never the same item twice to one annotator
        answered[name] = len(given)
    # the updater catches up; the loop then finds every item finished or at its cap
    for _ in range(100):
        if project.stopped:
            break
        time.sleep(0.1)
    assert project.stopped == "every item is finished or has reached the per-item cap"
    assert client.get("/api/next", headers={"X-Token": tokens["alice"]}).json()["finished"]
    ledger = project.session.ledger.read()
    assert len(ledger) == project.answers_total
    assert not ledger.duplicated(["item", "worker"]).any()
    assert ledger.groupby("item").size().max() <= 3
    r = client.get("/api/labels.csv", headers={"X-Token": spec["requester_token"]})
    labels = pd.read_csv(io.StringIO(r.text))
    assert (labels["label"] == labels["item"].map(truth)).all()  # carol's two slips are outvoted
    skills = pd.read_csv(io.StringIO(client.get(
        "/api/skills.csv", params={"token": spec["requester_token"]}).text))
    # carol answers first, so she is given every item (answering last, a fresh run gave her 1 of
    # 12: by then the background updates had finished the rest)
    assert answered["carol"] == 12
    assert skills.set_index("worker").loc["carol", "answers"] == 12
    assert skills.set_index("worker").loc["carol", "accuracy"] < skills.set_index("worker").loc["alice", "accuracy"]
    board = client.get("/api/dashboard", headers={"X-Token": spec["requester_token"]}).json()
    assert board["finished"] == labels["finished"].sum() >= 10
    assert (labels.loc[~labels["finished"], "annotations"] == 3).all()  # the rest is at the cap
    assert board["answers"] == len(ledger) and len(board["history"]) >= 2
    assert len(board["confusions"]) == 3 and len(board["confusions"][0]) == 3


def test_bad_requests_get_a_clear_4xx_and_lose_nothing(served):
    client, project, spec, truth = served
    alice = {"X-Token": project.tokens["alice"]}
    item = client.get("/api/next", headers=alice).json()["item"]
    cases = [
        ({}, {"item": item, "label": "cat"}, 401, "missing token"),
        ({"X-Token": "nope"}, {"item": item, "label": "cat"}, 403, "unknown annotator token"),
        (alice, {"item": "zz-missing", "label": "cat"}, 404, "unknown item 'zz-missing'"),
        (alice, {"item": item, "label": "horse"}, 422, "label 'horse' is not one of the classes"),
        (alice, {"item": item, "label": 3}, 422, "label index 3 outside 0..2"),
        (alice, {"item": item}, 400, "the body must be JSON"),
    ]
    for headers, body, status, message in cases:
        r = client.post("/api/answer", headers=headers, json=body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
    r = client.post("/api/answer", headers=alice, content=b"not json")
    assert r.status_code == 400
    assert len(project.session.ledger.read()) == 0  # nothing was recorded
    ok = client.post("/api/answer", headers=alice, json={"item": item, "label": truth[item]})
    assert ok.status_code == 200
    again = client.post("/api/answer", headers=alice, json={"item": item, "label": "dog"})
    assert again.status_code == 409 and "alice already answered item" in again.json()["error"]
    led = project.session.ledger.read()
    assert len(led) == 1 and led["label"].tolist() == [CLASSES.index(truth[item])]


def test_tokens_keep_annotators_off_the_dashboard(served):
    client, project, spec, truth = served
    alice = {"X-Token": project.tokens["alice"]}
    for path in ("/api/dashboard", "/api/labels.csv", "/api/skills.csv"):
        assert client.get(path, headers=alice).status_code == 403
        assert client.get(path).status_code == 401
    assert client.post("/api/stop", headers=alice).status_code == 403
    assert client.post("/api/annotators", headers=alice, json={"id": "mallory"}).status_code == 403
    assert client.get(f"/r/{project.tokens['alice']}").status_code == 403
    assert client.get(f"/a/{spec['requester_token']}").status_code == 403
    assert client.get(f"/a/{project.tokens['alice']}").status_code == 200
    # what an annotator receives never carries others' answers or the model's guesses
    client.post("/api/answer", headers={"X-Token": project.tokens["bob"]},
                json={"item": "t01", "label": "dog"})
    body = client.get("/api/next", headers=alice).json()
    assert set(body) <= {"worker", "classes", "item", "kind", "text", "src", "answered",
                         "finished", "message"}
    # a new annotator joins through the requester, and can work at once
    req = {"X-Token": spec["requester_token"]}
    new = client.post("/api/annotators", headers=req, json={"id": "dave"}).json()
    assert new["link"] == f"/a/{new['token']}"
    first = client.get("/api/next", headers={"X-Token": new["token"]}).json()
    assert first["worker"] == "dave" and first["item"] in truth
    assert client.post("/api/stop", headers=req).json()["stopped"] == "stopped by the requester"
    assert client.get("/api/next", headers=alice).json()["finished"]


def _cli(*args, timeout=300):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "crowdinfer.cli", "serve", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_serving_without_the_extra_is_refused_before_the_project_is_made(tmp_path, monkeypatch):
    import importlib.util
    from types import SimpleNamespace

    from crowdinfer.serve import command
    from crowdinfer.serve.project import ProjectError

    _items(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    args = SimpleNamespace(project=str(tmp_path / "proj"), items=str(tmp_path / "items.csv"),
                           classes="cat,dog,bird", annotators="alice", links=False,
                           no_early_stop=False, preset=None, sampler="random", update_every=None,
                           host="127.0.0.1", port=8000)
    with pytest.raises(ProjectError, match=r"serving needs uvicorn: pip install 'crowdinfer\[serve\]'"):
        command.run(args)
    assert not (tmp_path / "proj").exists()


def test_a_second_server_on_the_project_is_refused(tmp_path):
    from crowdinfer.serve import Project

    _items(tmp_path)
    made = _cli(tmp_path / "proj", "--items", tmp_path / "items.csv", "--classes", "cat,dog,bird",
                "--annotators", "alice", "--links")
    assert made.returncode == 0, made.stderr
    assert "dashboard (requester): http://127.0.0.1:8000/r/" in made.stdout
    assert "annotator alice: http://127.0.0.1:8000/a/" in made.stdout
    with Project(tmp_path / "proj"):
        second = _cli(tmp_path / "proj", "--links")
    assert second.returncode == 2
    assert f"{tmp_path / 'proj'} is in use by another process (pid {os.getpid()})" in second.stderr


@pytest.mark.slow
def test_kill_9_of_the_server_loses_no_acknowledged_answer(tmp_path):
    """kill -9 the real server (uvicorn, its own process) while answers arrive; restarted, it
    holds every acknowledged answer exactly once and the loop goes on to the end."""
    import httpx

    truth = _items(tmp_path, n=30)
    made = _cli(tmp_path / "proj", "--items", tmp_path / "items.csv", "--classes", "cat,dog,bird",
                "--annotators", "alice,bob,carol", "--update-every", "5", "--no-early-stop",
                "--links")
    assert made.returncode == 0, made.stderr
    from crowdinfer.serve import Project

    with Project(tmp_path / "proj") as p:
        tokens, req = dict(p.tokens), p.spec["requester_token"]
    port = 8000 + os.getpid() % 1000
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def start():
        proc = subprocess.Popen([sys.executable, "-m", "crowdinfer.cli", "serve",
                                 str(tmp_path / "proj"), "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 300  # start-up is slow on a loaded machine
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/next",
                             headers={"X-Token": tokens["alice"]}).status_code == 200:
                    return proc
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("the server did not start")

    acked = []

    def annotate(limit):
        for name in ("alice", "bob", "carol"):
            h = {"X-Token": tokens[name]}
            nxt = httpx.get(f"http://127.0.0.1:{port}/api/next", headers=h).json()
            while nxt["item"] is not None and len(acked) < limit:
                r = httpx.post(f"http://127.0.0.1:{port}/api/answer", headers=h,
                               json={"item": nxt["item"], "label": truth[nxt["item"]]})
                assert r.status_code == 200, r.text
                acked.append((name, nxt["item"]))
                nxt = r.json()["next"]

    server = start()
    try:
        annotate(40)
        server.kill()  # SIGKILL: no shutdown, no last update
        server.wait()
        server = start()
        board = httpx.get(f"http://127.0.0.1:{port}/api/dashboard", headers={"X-Token": req}).json()
        assert len(acked) == 40 and board["answers"] == 40
        annotate(10_000)
        for _ in range(100):
            board = httpx.get(f"http://127.0.0.1:{port}/api/dashboard",
                              headers={"X-Token": req}).json()
            if board["stopped"]:
                break
            time.sleep(0.2)
        assert board["stopped"] == "every item is finished or has reached the per-item cap"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    with Project(tmp_path / "proj") as p:
        rows = p.session.ledger.read()
        recorded = [(p.session.worker_ids[w], p.item_ids[i]) for i, w in
                    rows[["item", "worker"]].itertuples(index=False)]
        assert sorted(recorded) == sorted(acked)  # each acknowledged answer, exactly once
        labels = p.labels_frame()
    assert (labels["label"] == labels["item"].map(truth)).all()


def test_items_from_the_platforms_task_files(tmp_path):
    from crowdinfer.serve import read_items

    tasks = [{"id": 7, "data": {"image": "https://img.example.org/a.jpg"}},
             {"id": 9, "data": {"image": "https://img.example.org/b.jpg"}, "annotations": []}]
    (tmp_path / "tasks.json").write_text(__import__("json").dumps(tasks))
    items, protos, features = read_items(tmp_path / "tasks.json", CLASSES)
    assert items["item"].tolist() == ["7", "9"] and items["image"].str.endswith(".jpg").all()
    (tmp_path / "pool.tsv").write_text("INPUT:text\tGOLDEN:result\nhello\t\nworld\tcat\n")
    items, _, _ = read_items(tmp_path / "pool.tsv", CLASSES)
    assert items["item"].tolist() == ["hello", "world"] and items["text"].tolist() == ["hello", "world"]
    (tmp_path / "bad.json").write_text('[{"data": {"audio": "x.wav"}}]')
    with pytest.raises(ValueError, match=r"task #0 has neither data.image nor data.text"):
        read_items(tmp_path / "bad.json", CLASSES)


@pytest.mark.parametrize("sampler", ["greedy", "bald"])
def test_greedy_and_bald_choose_by_the_annotators_own_scores(tmp_path, sampler):
    from crowdinfer.serve import Project, create_project

    truth = _items(tmp_path, n=24)
    create_project(tmp_path / "proj", tmp_path / "items.csv", CLASSES, sampler=sampler,
                   update_every=1000, annotators=["alice", "bob", "carol"], early_stop=None)
    with Project(tmp_path / "proj") as project:
        a, b, c = (project.codes[n] for n in ("alice", "bob", "carol"))
        for n, item in enumerate(list(truth)[:12]):  # alice and carol right, bob mostly wrong
            i = project.session.item_index[item]
            project.submit(a, i, CLASSES.index(truth[item]))
            project.submit(c, i, CLASSES.index(truth[item]))
            project.submit(b, i, (CLASSES.index(truth[item]) + (n % 4 > 0)) % 3)
        project.session.update()
        project._publish()
        scores = project.view["scores"]
        assert scores.shape[0] == 24 and scores.shape[1] >= 2
        for w in (a, b):
            item = project.next_item(w)
            open_ = ~project.view["finished"] & (project.counts + project.outstanding <= 3)
            open_[list(project.answered[w])] = False
            assert scores[item, w] >= scores[open_, w].max() - 1e-5  # the best for this annotator
        if sampler == "greedy":  # alice's expected accuracy is higher on every item
            assert (scores[:, a] > scores[:, b]).all()


def test_a_running_update_never_blocks_a_submit(served):
    """While ``update`` runs in the background (made slow here), answers are still acknowledged
    at once; they join the next update."""
    client, project, spec, truth = served
    original, started, release = project.session.update, threading.Event(), threading.Event()

    def slow_update(*args, **kwargs):
        started.set()
        release.wait(30)
        return original(*args, **kwargs)

    project.session.update = slow_update
    alice, bob = ({"X-Token": project.tokens[n]} for n in ("alice", "bob"))
    nxt = client.get("/api/next", headers=alice).json()
    for _ in range(project.update_every):  # enough answers to wake the updater
        nxt = client.post("/api/answer", headers=alice,
                          json={"item": nxt["item"], "label": truth[nxt["item"]]}).json()["next"]
    assert started.wait(30)
    item = client.get("/api/next", headers=bob).json()["item"]
    t0 = time.perf_counter()
    r = client.post("/api/answer", headers=bob, json={"item": item, "label": truth[item]})
    assert r.status_code == 200 and time.perf_counter() - t0 < 5.0  # the update still waits
    assert not release.is_set() and len(project.session.ledger.read()) == project.update_every + 1
    release.set()
