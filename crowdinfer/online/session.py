"""Running the loop for real: an append-only SQLite ledger, named atomic checkpoints, an exclusive
lock on the run directory, resumption, and a driver for simulated workers.

Durability contract of :class:`Session` (directory layout: ``ledger.sqlite``, ``checkpoint.npz``,
``lock``):

* One writer per directory: a session takes an exclusive ``flock`` on ``lock``; a second process
  (another server, another ``online`` run) gets :class:`SessionError`.  Within one process the
  newest session on a directory takes over and the older one refuses further writes.
* :meth:`Session.submit` validates a batch of answers, writes the accepted ones to the ledger in one
  committed transaction (``synchronous=FULL``), and only then applies them to the state and returns
  the :class:`~crowdinfer.online.state.Receipt` -- the acknowledgement.  :meth:`Session.record` is
  the same for a server: ledger only, thread-safe, the state takes the answers at the next
  :meth:`Session.update`.  The ledger table refuses ``UPDATE`` and ``DELETE`` (triggers) and
  repeated (item, worker) pairs (``UNIQUE``).
* :meth:`Session.update` runs the jitted update and then checkpoints the state atomically (write to
  a temporary file, ``fsync``, ``os.replace``), recording how many ledger rows it includes.  The
  checkpoint stores every array under its field name (``data.item``, ``learner['params']...``),
  so a changed state layout is a clear error, never a silent misassignment.
* Opening a session on an existing directory loads the checkpoint and replays the ledger rows
  written after it, so a process killed at any point -- between ``submit`` and ``update``, inside
  ``update``, or while checkpointing -- resumes with every acknowledged annotation, and (every random
  choice being a function of the seed and the step) goes on exactly as an uninterrupted run would.
  A ledger that is missing or shorter than the checkpoint, and a ``ledger.sqlite`` that is not a
  crowdinfer ledger (any other database), stop the session with :class:`SessionError`; a foreign
  database is left untouched (opened read-only to look, never written).
* Items and workers may carry the user's own string ids (``item_ids``, ``worker_ids``);
  :meth:`Session.add_worker` registers a new annotator at any time, and the state grows its worker
  axes (in powers of two, so ``update`` compiles again only a few times).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Callable, Optional, Sequence
from urllib.parse import quote

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from crowdinfer.annotations import CrowdData

from .config import OnlineConfig
from .loop import init, label_accuracy, stop_reason, update
from .samplers import Proposer, from_config, next_proposal
from .state import Receipt, State, Task, check_answers, grow_workers, ingest

__all__ = ["Ledger", "Session", "SessionError", "run_simulation", "simulate", "save_checkpoint",
           "load_checkpoint"]

LEDGER_FORMAT = "crowdinfer-ledger"
CHECKPOINT_FORMAT = 2

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
CREATE TABLE IF NOT EXISTS ids (
    kind TEXT NOT NULL, code INTEGER NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (kind, code), UNIQUE (kind, id)
);
"""
_COLUMNS = ["seq", "item", "worker", "label", "step", "received"]
_OUR_OBJECTS = {"annotations", "meta", "ids", "sqlite_sequence", "annotations_no_update",
                "annotations_no_delete"}


class SessionError(ValueError):
    """A run directory that cannot be used as asked: held by another process, a foreign database,
    a missing or truncated ledger, a checkpoint from another layout."""


def _inspect(path: Path) -> str:
    """Look at ``path`` without writing to it: ``"new"`` (absent or empty), ``"ours"``, or raise
    :class:`SessionError` for anything that is not a readable crowdinfer ledger."""
    if not path.exists() or path.stat().st_size == 0:
        return "new"
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(100)
    if not head.startswith(b"SQLite format 3\x00"):
        raise SessionError(f"{path} is not an SQLite database; crowdinfer keeps its ledger under "
                           "that name and leaves this file untouched: use another directory")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    if len(head) < 100 or (pages and size < page * pages):
        raise SessionError(f"{path} is truncated ({size} bytes, its header promises {page * pages}); "
                           "restore it from a backup -- crowdinfer will not open a damaged ledger")
    names, columns = _schema(path, immutable=True)  # creates no -wal/-shm next to the file
    if not _looks_ours(names, columns) and Path(str(path) + "-wal").exists():
        names, columns = _schema(path, immutable=False)  # our schema may still be in the WAL
    if not _looks_ours(names, columns):
        raise SessionError(
            f"{path} is a database that crowdinfer did not create (it holds {sorted(names)}); "
            "crowdinfer leaves it untouched: use another directory for the run")
    return "ours"


def _schema(path: Path, immutable: bool):
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    try:
        con = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{flags}", uri=True)
        try:
            names = {n for (n,) in con.execute("SELECT name FROM sqlite_master")
                     if not n.startswith("sqlite_autoindex_")}
            columns = [r[1] for r in con.execute("PRAGMA table_info(annotations)")]
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise SessionError(f"{path} cannot be read as a crowdinfer ledger ({err}); it is left "
                           "untouched") from None
    return names, columns


def _looks_ours(names: set, columns: list) -> bool:
    return (not names - _OUR_OBJECTS and columns == _COLUMNS and "meta" in names
            and "annotations_no_delete" in names)


class Ledger:
    """Append-only record of every accepted annotation (SQLite, the embedded default).

    Opening a file that is not a crowdinfer ledger raises :class:`SessionError` and leaves it
    untouched."""

    def __init__(self, path):
        self.path = Path(path)
        self.found = _inspect(self.path)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        if self.get_meta("format") is None:
            self.set_meta("format", LEDGER_FORMAT)
        if self.get_meta("ledger_id") is None:
            self.set_meta("ledger_id", uuid.uuid4().hex)

    def append(self, item, worker, label, step: int) -> int:
        """Write the rows in one committed transaction; returns the ``seq`` of the last one."""
        now = time.time()
        rows = [(int(i), int(w), int(z), int(step), now) for i, w, z in zip(item, worker, label)]
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT INTO annotations (item, worker, label, step, received) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                last = int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM annotations").fetchone()[0])
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        return last

    def read(self, after: int = 0) -> pd.DataFrame:
        """Rows with ``seq > after`` in ledger order."""
        with self.lock:
            rows = pd.read_sql_query(
                "SELECT seq, item, worker, label, step, received FROM annotations WHERE seq > ? "
                "ORDER BY seq", self.db, params=(int(after),),
            )
        return rows.astype({c: np.int64 for c in ("seq", "item", "worker", "label", "step")} |
                           {"received": np.float64})

    def last_seq(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM annotations").fetchone()[0])

    def __len__(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0])

    def get_meta(self, key: str):
        with self.lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def ids(self, kind: str) -> list:
        with self.lock:
            rows = self.db.execute("SELECT code, id FROM ids WHERE kind = ? ORDER BY code",
                                   (kind,)).fetchall()
        if [c for c, _ in rows] != list(range(len(rows))):
            raise SessionError(f"{self.path}: the {kind} ids are not numbered 0..{len(rows) - 1}")
        return [i for _, i in rows]

    def add_ids(self, kind: str, start: int, names: Sequence[str]) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT INTO ids (kind, code, id) VALUES (?, ?, ?)",
                                    [(kind, start + n, str(v)) for n, v in enumerate(names)])
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


# -- one writer per directory ---------------------------------------------------------------------
_HELD: dict = {}  # realpath -> [fd, weakref to the session holding it]
_HELD_LOCK = threading.Lock()


def _acquire(folder: Path, session) -> str:
    key = os.path.realpath(folder)
    with _HELD_LOCK:
        if key in _HELD:  # same process: the newest session takes over
            old = _HELD[key][1]()
            if old is not None and old is not session:
                old._superseded = True
            _HELD[key][1] = weakref.ref(session)
            return key
        fd = os.open(os.path.join(key, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SessionError(
                f"{folder} is in use by another process (pid {holder}): one server or run per "
                "directory; stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD[key] = [fd, weakref.ref(session)]
        return key


def _release(key: str, session) -> None:
    with _HELD_LOCK:
        entry = _HELD.get(key)
        if entry is None or entry[1]() not in (session, None):
            return
        del _HELD[key]
        fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])


# -- checkpoints by name --------------------------------------------------------------------------
_DATA_FIELDS = ("item", "worker", "label", "weight")


def _named(state: State) -> dict:
    """``{field path: array}`` for every array of the state."""
    out = {}
    for field in State._fields:
        value = getattr(state, field)
        if isinstance(value, CrowdData):
            out.update({f"data.{f}": getattr(value, f) for f in _DATA_FIELDS})
            continue
        for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
            out[field + jax.tree_util.keystr(path)] = leaf
    return out


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
    """Write the state's arrays by field name and ``meta`` (JSON) atomically: temp file, fsync,
    rename."""
    path = Path(path)
    arrays = {name: np.asarray(a) for name, a in _named(state).items()}
    d = state.data
    meta = {**meta, "format": CHECKPOINT_FORMAT,
            "sizes": {"n_items": d.n_items, "n_workers": d.n_workers, "n_classes": d.n_classes}}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def checkpoint_meta(path) -> dict:
    with np.load(path) as z:
        if "__meta__" not in z.files:
            raise SessionError(
                f"{path} was written by an older crowdinfer (arrays stored by position, which a "
                "changed state would misassign silently); move it away and the session replays "
                "the ledger from the start")
        return json.loads(bytes(z["__meta__"]).decode())


def load_checkpoint(path, template: State):
    """The state saved at ``path``: every field of ``template`` (a fresh ``init`` of the same run,
    with the saved number of workers) is read by name; a missing or unexpected field, or a field
    of another dtype or shape, raises :class:`SessionError`."""
    meta = checkpoint_meta(path)
    wanted = _named(template)
    with np.load(path) as z:
        saved = {k: z[k] for k in z.files if k != "__meta__"}
    missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    if missing or extra:
        raise SessionError(f"{path} does not match this version's state: missing fields {missing}, "
                           f"unexpected fields {extra}")
    for name, want in wanted.items():
        got = saved[name]
        same_shape = got.shape == want.shape or (name.startswith("data.") and got.ndim == 1)
        if got.dtype != want.dtype or not same_shape:
            raise SessionError(f"{path}: field {name} is {got.dtype}{list(got.shape)} in the "
                               f"checkpoint, this version expects {want.dtype}{list(want.shape)}")
    fields = {}
    for field in State._fields:
        value = getattr(template, field)
        if isinstance(value, CrowdData):
            fields[field] = CrowdData(*(jnp.asarray(saved[f"data.{f}"]) for f in _DATA_FIELDS),
                                      value.n_items, value.n_workers, value.n_classes)
            continue
        paths, treedef = jax.tree_util.tree_flatten_with_path(value)
        leaves = [jnp.asarray(saved[field + jax.tree_util.keystr(p)]) for p, _ in paths]
        fields[field] = jax.tree_util.tree_unflatten(treedef, leaves)
    return State(**fields), meta


def _fingerprint(config: OnlineConfig, task: Task) -> str:
    record = {"config": repr(config), "items": task.n_items, "workers": task.n_workers,
              "dims": int(task.features.shape[1])}
    if task.gold is not None:  # (absent without gold: earlier runs' fingerprints still match)
        gold = np.asarray(task.gold, np.int32)
        record["gold"] = [int((gold >= 0).sum()), hashlib.sha256(gold.tobytes()).hexdigest()[:16]]
    return json.dumps(record)


def _worker_capacity(n: int, base: int) -> int:
    """Workers the state has room for: ``base``, then powers of two."""
    return base if n <= base else 1 << (int(n) - 1).bit_length()


class Session:
    """A loop with a ledger and checkpoints in ``directory`` (``None``: in memory only).

    ``item_ids``: the user's id of each item (N strings; stored, and checked on reopening).
    ``worker_ids``: the workers' ids; ``None`` means the integer codes ``0..M-1`` of ``task``;
    a list (possibly empty) starts a registry that :meth:`add_worker` extends, the state growing
    past ``task.n_workers`` as needed.
    ``proposer``: the :class:`~crowdinfer.online.samplers.Proposer` that :meth:`propose` asks
    (default: the one ``config.sampler`` names, :func:`~crowdinfer.online.samplers.from_config`).
    Its state lives in memory (``sampler_state``) and is rebuilt with ``proposer.init`` when a
    directory is reopened; the ledger's fingerprint records ``config``, not the proposer.
    """

    def __init__(self, config: OnlineConfig, task: Task, directory=None, *,
                 item_ids: Optional[Sequence] = None, worker_ids: Optional[Sequence] = None,
                 proposer: Optional[Proposer] = None):
        if proposer is not None and not isinstance(proposer, Proposer):
            raise ValueError(f"proposer must be a crowdinfer.online.samplers.Proposer (init, propose), "
                             f"got {type(proposer).__name__}")
        self.config, self.base_task = config, task
        self.proposer = from_config(config) if proposer is None else proposer
        self.sampler_state = None  # proposer.init(state), on the first propose
        self.task = task
        self.item_ids = None if item_ids is None else [str(i) for i in item_ids]
        if self.item_ids is not None and len(self.item_ids) != task.n_items:
            raise ValueError(f"item_ids must give one id per item ({task.n_items}), got "
                             f"{len(self.item_ids)}")
        if self.item_ids is not None and len(set(self.item_ids)) != len(self.item_ids):
            raise ValueError("item_ids must be distinct")
        self.registry = worker_ids is not None
        self.worker_ids = ([str(w) for w in worker_ids] if self.registry
                           else [str(j) for j in range(task.n_workers)])
        self.state = init(config, task)
        self.history: list = []
        self.pending = 0  # annotations received since the last update
        self.seq = 0  # last ledger row included in ``state``
        self.ledger = None
        self.checkpoint_path = None
        self.resumed = False
        self._superseded = False
        self._lock_key = None
        self._queue: list = []  # (seq, item, worker, label) recorded, not yet in the state
        self._guard = threading.Lock()
        self._record_lock = threading.Lock()
        self._pairs = None  # set of item << 32 | worker, built on the first ``record``
        self._host_step = 0
        if directory is None:
            self._grow(len(self.worker_ids))
            return
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_key = _acquire(folder, self)
        try:
            self._open(folder)
        except BaseException:
            self.close()
            raise

    def _open(self, folder: Path) -> None:
        config, task = self.config, self.task
        self.checkpoint_path = folder / "checkpoint.npz"
        has_checkpoint = self.checkpoint_path.exists()
        ledger_path = folder / "ledger.sqlite"
        if has_checkpoint and _inspect(ledger_path) == "new":
            raise SessionError(
                f"{self.checkpoint_path} exists but {ledger_path} is missing or empty: the answers "
                "it records are gone.  Restore the ledger (with its -wal file), or start a new "
                "directory; crowdinfer will not open an empty ledger over a checkpoint")
        self.ledger = Ledger(ledger_path)
        fingerprint = _fingerprint(config, task)
        recorded = self.ledger.get_meta("fingerprint")
        if recorded is None:
            self.ledger.set_meta("fingerprint", fingerprint)
        elif recorded != fingerprint:
            raise ValueError(
                f"{folder} holds a run with different settings; use a new directory or the same "
                f"configuration.\n  recorded: {recorded}\n  now:      {fingerprint}"
            )
        if self.item_ids is not None:
            stored = self.ledger.ids("item")
            if not stored:
                self.ledger.add_ids("item", 0, self.item_ids)
            elif stored != self.item_ids:
                raise ValueError(f"{folder} holds a run over other items")
        if self.registry:
            stored = self.ledger.ids("worker")
            given = self.worker_ids
            if stored[: len(given)] != given[: len(stored)]:
                raise ValueError(f"{folder} numbers its workers differently: recorded "
                                 f"{stored[:5]}..., given {given[:5]}...")
            if len(given) > len(stored):
                self.ledger.add_ids("worker", len(stored), given[len(stored):])
            self.worker_ids = stored + given[len(stored):]
        ledger_id = self.ledger.get_meta("ledger_id")
        if has_checkpoint:
            meta = checkpoint_meta(self.checkpoint_path)
            if meta.get("ledger_id") not in (None, ledger_id):
                raise SessionError(f"{self.checkpoint_path} belongs to another ledger than "
                                   f"{self.ledger.path}; the directory was mixed up")
            held = self.ledger.last_seq()
            if held < meta["ledger_seq"]:
                raise SessionError(
                    f"{self.ledger.path} is truncated: the checkpoint includes {meta['ledger_seq']} "
                    f"ledger rows, the ledger holds {held}.  Acknowledged answers are missing; "
                    "restore the ledger (with its -wal file) instead of going on without them")
            self._resize(meta["sizes"]["n_workers"])
            self.state, meta = load_checkpoint(self.checkpoint_path, self.state)
            self.seq, self.history = meta["ledger_seq"], meta["history"]
            self.resumed = True
        rows = self.ledger.read(after=self.seq)
        self._grow(max(len(self.worker_ids), int(rows["worker"].max()) + 1 if len(rows) else 0))
        if len(rows):
            self.resumed = True
            item, worker, label = (rows[c].to_numpy() for c in ("item", "worker", "label"))
            self.state, receipt = ingest(self.state, item, worker, label)
            if receipt.n_accepted != len(rows):
                raise RuntimeError("the ledger and the checkpoint disagree (a replayed annotation "
                                   "was already in the state)")
            self.pending = len(rows)
            self.seq = int(rows["seq"].iloc[-1])
        self._host_step = int(self.state.step)

    # -- growth -----------------------------------------------------------------------------
    def _resize(self, m: int) -> None:
        """A fresh state and task with room for ``m`` workers (before loading a checkpoint)."""
        if m != self.task.n_workers:
            self.task = self.base_task._replace(n_workers=int(m))
            self.state = grow_workers(init(self.config, self.base_task), m)

    def _grow(self, n_workers: int) -> None:
        m = _worker_capacity(n_workers, self.base_task.n_workers)
        if m > self.task.n_workers:
            self.task = self.base_task._replace(n_workers=m)
            self.state = grow_workers(self.state, m)

    def add_worker(self, worker_id) -> int:
        """The code of ``worker_id``, registering a new worker (durably, in the ledger) if needed.
        The state makes room for it at the next ``update`` (or at once, outside a server)."""
        self._check_writable()
        worker_id = str(worker_id)
        with self._guard:
            if worker_id in self._worker_index:
                return self._worker_index[worker_id]
            if not self.registry:
                raise ValueError("this session numbers its workers 0..M-1; open it with "
                                 "worker_ids=[...] to register workers by id")
            code = len(self.worker_ids)
            if self.ledger is not None:
                self.ledger.add_ids("worker", code, [worker_id])
            self.worker_ids.append(worker_id)
            self._worker_index[worker_id] = code
            return code

    @property
    def _worker_index(self) -> dict:
        if getattr(self, "_widx", None) is None or len(self._widx) != len(self.worker_ids):
            self._widx = {w: j for j, w in enumerate(self.worker_ids)}
        return self._widx

    @property
    def item_index(self) -> dict:
        if getattr(self, "_iidx", None) is None:
            ids = self.item_ids or [str(i) for i in range(self.task.n_items)]
            self._iidx = {v: i for i, v in enumerate(ids)}
        return self._iidx

    def _check_writable(self) -> None:
        if self._superseded:
            raise SessionError("this session was superseded by a newer Session on the same "
                               "directory in this process; use that one")

    # -- the loop ---------------------------------------------------------------------------
    def propose(self):
        """The next step's questions (a :class:`~crowdinfer.online.samplers.Proposal`) from the
        session's proposer; advances its sampler state."""
        if self.sampler_state is None:
            self.sampler_state = self.proposer.init(self.state)
        proposal, self.sampler_state = next_proposal(self.proposer, self.sampler_state, self.state)
        return proposal

    def submit(self, item, worker, label) -> Receipt:
        """Accept answers: ledger first (committed), then the state; returns the receipt."""
        self._check_writable()
        self._grow(len(self.worker_ids))
        item, worker, label, receipt = check_answers(self.state, item, worker, label)
        if self.registry and len(worker) and worker.max() >= len(self.worker_ids):
            raise ValueError(f"worker out of range 0..{len(self.worker_ids) - 1} (register new "
                             "workers with add_worker)")
        keep = receipt.accepted
        if keep.any() and self.ledger is not None:
            self.seq = self.ledger.append(item[keep], worker[keep], label[keep], int(self.state.step))
        if self._pairs is not None:
            self._pairs.update((item[keep].astype(np.int64) << 32 | worker[keep]).tolist())
        self.state, receipt = ingest(self.state, item, worker, label, receipt)
        self.pending += receipt.n_accepted
        return receipt

    def record(self, item, worker, label) -> Receipt:
        """A server's ``submit``: validate against every answer recorded so far, write the accepted
        ones to the ledger (committed), and queue them for the next :meth:`update`.  Thread-safe;
        touches no device array, so it never waits for an update in progress."""
        self._check_writable()
        item, worker, label = (np.asarray(a, np.int64).reshape(-1) for a in (item, worker, label))
        if not (len(item) == len(worker) == len(label)):
            raise ValueError("item, worker and label must have the same length")
        with self._record_lock:  # one record at a time: ledger order == queue order
            with self._guard:
                limits = (("item", item, self.task.n_items), ("worker", worker, len(self.worker_ids)),
                          ("label", label, self.config.n_classes))
                if self._pairs is None:
                    rows = self.ledger.read() if self.ledger is not None else None
                    self._pairs = set() if rows is None else set(
                        (rows["item"].to_numpy(np.int64) << 32 | rows["worker"].to_numpy()).tolist())
            for name, values, size in limits:
                bad = np.flatnonzero((values < 0) | (values >= size))
                if bad.size:
                    raise ValueError(f"{name} out of range 0..{size - 1} at answer(s) "
                                     f"{bad[:5].tolist()}: values {values[bad[:5]].tolist()}")
            reasons = []
            fresh = set()
            for i, w in zip(item.tolist(), worker.tolist()):
                pair = i << 32 | w
                dup = pair in self._pairs or pair in fresh
                fresh.add(pair)
                reasons.append(f"duplicate: worker {w} already answered item {i}" if dup else "")
            keep = np.array([r == "" for r in reasons], bool)
            n = int(keep.sum())
            if n:
                # the commit (an fsync) holds no lock that ``update`` or ``add_worker`` needs
                seq = (self.ledger.append(item[keep], worker[keep], label[keep], self._host_step)
                       if self.ledger is not None else self.seq + self.pending + n)
                with self._guard:
                    self._queue.extend(zip(range(seq - n + 1, seq + 1), item[keep].tolist(),
                                           worker[keep].tolist(), label[keep].tolist()))
                    self._pairs.update((item[keep] << 32 | worker[keep]).tolist())
                    self.pending += n
        return Receipt(keep, reasons)

    def update(self, gold=None) -> dict:
        self._check_writable()
        with self._guard:
            queued, self._queue = self._queue, []
            n_workers = len(self.worker_ids)
        started = time.perf_counter()
        state = self.state
        if queued:
            self._grow(n_workers)
            state = self.state
            seqs, item, worker, label = (np.asarray(c) for c in zip(*queued))
            state, receipt = ingest(state, item, worker, label)
            if receipt.n_accepted != len(queued):
                raise RuntimeError(f"recorded answers rejected by the state: {receipt.rejected[:3]}")
        state, report = update(self.config, state, self.task)
        record = {k: float(v) for k, v in report.items()}
        record["step"] = int(state.step)
        record["annotations"] = int(state.n_annotations)
        record["per_item"] = record["annotations"] / self.task.n_items
        record["expected_accuracy"] = float(1.0 - np.mean(np.asarray(state.risk)))
        record["time"] = time.time()
        record["seconds"] = time.perf_counter() - started
        if gold is not None:
            record["accuracy"] = label_accuracy(state, gold)
            record["finished_precision"] = _finished_precision(state, gold)
            if self.task.gold is not None:  # scored on the items whose gold the task does not hold
                unseen = np.where(np.asarray(self.task.gold) >= 0, -1, np.asarray(gold))
                record["accuracy_nongold"] = label_accuracy(state, unseen)
                record["finished_precision_nongold"] = _finished_precision(state, unseen)
        with self._guard:
            self.state = state
            self._host_step = record["step"]
            if queued:
                self.seq = int(seqs[-1])
            self.history.append(record)
            self.pending = len(self._queue)
        if self.checkpoint_path is not None:
            meta = {"ledger_seq": self.seq, "history": self.history,
                    "ledger_id": self.ledger.get_meta("ledger_id")}
            save_checkpoint(self.checkpoint_path, state, meta)
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
            self.ledger = None
        if self._lock_key is not None:
            _release(self._lock_key, self)
            self._lock_key = None


def _finished_precision(state: State, gold) -> float:
    gold = np.asarray(gold)
    done = np.asarray(state.finished) & (gold >= 0)
    if not done.any():
        return float("nan")
    return float(np.mean(np.asarray(state.decision)[done] == gold[done]))


def run_simulation(config: OnlineConfig, task: Task, confusion, true_labels, *, seed: int = 0,
             directory=None, max_steps: int = 10_000, progress: bool = False,
             callback: Optional[Callable] = None, kill_after_ingest: Optional[int] = None,
             proposer: Optional[Proposer] = None, loop_seed: Optional[int] = None,
             host_proposer: Optional[Callable] = None):
    """Run the loop with simulated workers (``confusion`` (M, K, K), the true classes (N,)) until
    it stops; returns the :class:`Session` (``.history_frame()``, ``.labels``, ``.state``).
    ``proposer``: the sampler as a value (default: ``config.sampler``'s, see :class:`Session`).
    ``host_proposer(session) -> (items, workers)``: a sampler that runs on the host instead (e.g.
    one written in NumPy for a study); every pair it returns is asked.  ``loop_seed``: the seed of
    the loop's own random key (proposals, learner), set at the start of a new run (default: the
    config's); ``seed`` is the seed of the simulated answers.

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
    session = Session(config, task, directory, proposer=proposer)
    if loop_seed is not None and int(session.state.step) == 0:
        session.state = session.state._replace(
            key=jax.random.key_data(jax.random.key(int(loop_seed))))
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
            if host_proposer is None:
                proposal = session.propose()
                item, worker = proposal.item, proposal.worker
                valid = np.asarray(proposal.valid)
            else:
                item, worker = (np.asarray(a) for a in host_proposer(session))
                valid = np.ones(item.shape, bool)
            step_key = jax.random.fold_in(key, int(session.state.step))
            answers = annotate(step_key, confusion, truth_j, jnp.asarray(item), jnp.asarray(worker))
            valid = np.asarray(valid)
            if not valid.any():
                break
            session.submit(np.asarray(item)[valid], np.asarray(worker)[valid],
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
