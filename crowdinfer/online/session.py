"""Running the loop for real: an append-only SQLite ledger, atomic checkpoints, resumption, and a
driver for simulated workers.

Durability contract of :class:`Session` (directory layout: ``ledger.sqlite``, ``checkpoint.npz``):

* :meth:`Session.submit` validates a batch of answers, writes the accepted ones to the ledger in one
  committed transaction (``synchronous=FULL``), and only then applies them to the state and returns
  the :class:`~crowdinfer.online.state.Receipt` -- the acknowledgement.  The ledger table refuses
  ``UPDATE`` and ``DELETE`` (triggers) and repeated (item, worker) pairs (``UNIQUE``).
* :meth:`Session.update` runs the jitted update and then checkpoints the state atomically (write to
  a temporary file, ``fsync``, ``os.replace``), recording how many ledger rows it includes.
* Opening a session on an existing directory loads the checkpoint and replays the ledger rows
  written after it, so a process killed at any point -- between ``submit`` and ``update``, inside
  ``update``, or while checkpointing -- resumes with every acknowledged annotation, and (every random
  choice being a function of the seed and the step) goes on exactly as an uninterrupted run would.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .config import OnlineConfig
from .loop import init, label_accuracy, stop_reason, update
from .samplers import propose
from .state import Receipt, State, Task, check_answers, ingest

__all__ = ["Ledger", "Session", "run_simulation", "simulate", "save_checkpoint", "load_checkpoint"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item INTEGER NOT NULL, worker INTEGER NOT NULL, label INTEGER NOT NULL,
    step INTEGER NOT NULL, received REAL NOT NULL,
    UNIQUE (item, worker)
);
CREATE TRIGGER IF NOT EXISTS annotations_no_update BEFORE UPDATE ON annotations
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS annotations_no_delete BEFORE DELETE ON annotations
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Ledger:
    """Append-only record of every accepted annotation (SQLite, the embedded default)."""

    def __init__(self, path):
        self.path = Path(path)
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def append(self, item, worker, label, step: int) -> None:
        now = time.time()
        rows = [(int(i), int(w), int(z), int(step), now) for i, w, z in zip(item, worker, label)]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO annotations (item, worker, label, step, received) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def read(self, after: int = 0) -> pd.DataFrame:
        """Rows with ``seq > after`` in ledger order."""
        return pd.read_sql_query(
            "SELECT seq, item, worker, label, step FROM annotations WHERE seq > ? ORDER BY seq",
            self.db, params=(int(after),),
        )

    def last_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM annotations").fetchone()[0])

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0])

    def get_meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.db.close()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path, state: State, meta: dict) -> None:
    """Write the state's arrays and ``meta`` (JSON) atomically: temp file, fsync, rename."""
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load_checkpoint(path, template: State):
    """The state saved at ``path`` (structure from ``template``: a fresh ``init`` of the same run)."""
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        treedef = jax.tree_util.tree_structure(template)
        n = treedef.num_leaves
        leaves = [jnp.asarray(z[f"leaf_{i}"]) for i in range(n)]
    return jax.tree_util.tree_unflatten(treedef, leaves), meta


def _fingerprint(config: OnlineConfig, task: Task) -> str:
    return json.dumps({"config": repr(config), "items": task.n_items, "workers": task.n_workers,
                       "dims": int(task.features.shape[1])})


class Session:
    """A loop with a ledger and checkpoints in ``directory`` (``None``: in memory only)."""

    def __init__(self, config: OnlineConfig, task: Task, directory=None):
        self.config, self.task = config, task
        self.state = init(config, task)
        self.history: list = []
        self.pending = 0  # annotations ingested since the last update
        self.ledger = None
        self.checkpoint_path = None
        self.resumed = False
        if directory is None:
            return
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(folder / "ledger.sqlite")
        self.checkpoint_path = folder / "checkpoint.npz"
        fingerprint = _fingerprint(config, task)
        recorded = self.ledger.get_meta("fingerprint")
        if recorded is None:
            self.ledger.set_meta("fingerprint", fingerprint)
        elif recorded != fingerprint:
            raise ValueError(
                f"{folder} holds a run with different settings; use a new directory or the same "
                f"configuration.\n  recorded: {recorded}\n  now:      {fingerprint}"
            )
        seq = 0
        if self.checkpoint_path.exists():
            self.state, meta = load_checkpoint(self.checkpoint_path, self.state)
            seq, self.history = meta["ledger_seq"], meta["history"]
            self.resumed = True
        rows = self.ledger.read(after=seq)
        if len(rows):
            self.resumed = True
            item, worker, label = (rows[c].to_numpy() for c in ("item", "worker", "label"))
            self.state, receipt = ingest(self.state, item, worker, label)
            if receipt.n_accepted != len(rows):
                raise RuntimeError("the ledger and the checkpoint disagree (a replayed annotation "
                                   "was already in the state)")
            self.pending = len(rows)

    # -- the loop ---------------------------------------------------------------------------
    def propose(self):
        return propose(self.config, self.state)

    def submit(self, item, worker, label) -> Receipt:
        """Accept answers: ledger first (committed), then the state; returns the receipt."""
        item, worker, label, receipt = check_answers(self.state, item, worker, label)
        keep = receipt.accepted
        if keep.any() and self.ledger is not None:
            self.ledger.append(item[keep], worker[keep], label[keep], int(self.state.step))
        self.state, receipt = ingest(self.state, item, worker, label, receipt)
        self.pending += receipt.n_accepted
        return receipt

    def update(self, gold=None) -> dict:
        self.state, report = update(self.config, self.state, self.task)
        record = {k: float(v) for k, v in report.items()}
        record["step"] = int(self.state.step)
        record["annotations"] = int(self.state.n_annotations)
        record["per_item"] = record["annotations"] / self.task.n_items
        if gold is not None:
            record["accuracy"] = label_accuracy(self.state, gold)
            record["finished_precision"] = _finished_precision(self.state, gold)
        self.history.append(record)
        self.pending = 0
        if self.checkpoint_path is not None:
            meta = {"ledger_seq": self.ledger.last_seq(), "history": self.history}
            save_checkpoint(self.checkpoint_path, self.state, meta)
        return record

    def stop_reason(self):
        return stop_reason(self.config, self.state)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.state.decision)

    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.history)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def _finished_precision(state: State, gold) -> float:
    gold = np.asarray(gold)
    done = np.asarray(state.finished) & (gold >= 0)
    if not done.any():
        return float("nan")
    return float(np.mean(np.asarray(state.decision)[done] == gold[done]))


def run_simulation(config: OnlineConfig, task: Task, confusion, true_labels, *, seed: int = 0,
             directory=None, max_steps: int = 10_000, progress: bool = False,
             callback: Optional[Callable] = None, kill_after_ingest: Optional[int] = None):
    """Run the loop with simulated workers (``confusion`` (M, K, K), the true classes (N,)) until
    it stops; returns the :class:`Session` (``.history_frame()``, ``.labels``, ``.state``).

    Every answer is a function of ``(seed, step)``, so a run resumed from ``directory`` gives the
    same answers.  ``kill_after_ingest=t`` sends this process SIGKILL right after the answers of
    step ``t`` are acknowledged (for the crash-recovery test).
    """
    from crowdinfer.simulate import annotate

    confusion = jnp.asarray(confusion, jnp.float32)
    truth = np.asarray(true_labels)
    if confusion.shape != (task.n_workers, config.n_classes, config.n_classes):
        raise ValueError(f"confusion must have shape ({task.n_workers}, {config.n_classes}, "
                         f"{config.n_classes}), got {confusion.shape}")
    if truth.shape != (task.n_items,):
        raise ValueError(f"true_labels must have one class per item ({task.n_items})")
    session = Session(config, task, directory)
    key = jax.random.key(seed)
    truth_j = jnp.asarray(truth)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=task.n_items * config.max_per_item, unit="ann", desc="annotating")
        bar.update(int(session.state.n_annotations))
    while int(session.state.step) < max_steps:
        if session.state.step > 0 and session.pending == 0 and session.stop_reason() is not None:
            break
        if session.pending == 0:
            proposal = session.propose()
            step_key = jax.random.fold_in(key, int(session.state.step))
            answers = annotate(step_key, confusion, truth_j, proposal.item, proposal.worker)
            valid = np.asarray(proposal.valid)
            if not valid.any():
                break
            session.submit(np.asarray(proposal.item)[valid], np.asarray(proposal.worker)[valid],
                           np.asarray(answers)[valid])
            if kill_after_ingest is not None and int(session.state.step) == kill_after_ingest:
                os.kill(os.getpid(), signal.SIGKILL)
        record = session.update(gold=truth)
        if bar is not None:
            bar.update(record["annotations"] - bar.n)
            bar.set_postfix(acc=f"{record['accuracy']:.3f}", per_item=f"{record['per_item']:.2f}",
                            finished=int(record["finished"]))
        if callback is not None:
            callback(record)
    if bar is not None:
        bar.close()
    return session


simulate = run_simulation  # short name used in the experiments
