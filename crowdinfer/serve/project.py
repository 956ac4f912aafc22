"""A labelling project on disk, and the running loop behind the server.

Folder layout: ``project.json`` (classes, preset, tokens of the requester), ``items.csv`` or
``items.parquet`` (a copy of the items file), ``annotators.json`` (one token per annotator),
and the session's ``ledger.sqlite``, ``checkpoint.npz`` and ``lock``.

:class:`Project` opens the :class:`~crowdinfer.online.session.Session` (which takes the folder's
exclusive lock) and runs it for many annotators at once:

* **answers** go through one writer thread that commits every answer waiting at that moment in
  one SQLite transaction (group commit: one ``fsync`` for many annotators), then acknowledges them;
* **update** runs in a background thread every ``update_every`` answers (or every few seconds
  when answers are waiting) on a snapshot; answers keep being recorded meanwhile and join the next
  update -- a submit never waits for an update;
* **next item**: the sampler's scores are computed once per update (:mod:`.assign`); a request
  masks the items that are finished, at their cap (answers plus items currently shown to someone)
  or already answered by this annotator, and takes the best.
"""
from __future__ import annotations

import gc
import json
import os
import queue
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from crowdinfer import online
from crowdinfer.online.session import Session

from .assign import worker_scores

__all__ = ["create_project", "Project", "ProjectError", "read_items"]

BASE_WORKERS = 64  # room for annotators in the state before the first doubling (a recompile)
LEASE_SECONDS = 600.0  # an item shown to an annotator is held for them this long


class ProjectError(ValueError):
    """A project folder or request that cannot be served as asked."""


def _atomic_json(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(value, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_items(path, classes: Sequence[str]):
    """The items table: ``item`` (id), ``image`` (path or URL) or ``text``, optional numeric
    feature columns, optional ``label`` (a prototype: a clean example of that class, not
    annotated).  Also Label Studio tasks (``.json``: task id, ``data.image``/``data.text``) and
    Toloka task files (``INPUT:image``/``INPUT:text``, which is also the item id).  Returns
    ``(items, prototypes, feature columns)``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such items file: {path}")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    elif path.suffix == ".json":
        table = _label_studio_items(path)
    else:
        table = pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".tab") else ",",
                            dtype={"item": str, "label": str, "image": str, "text": str})
    inputs = [c for c in table.columns if str(c).startswith("INPUT:")]
    if inputs and "item" not in table.columns:  # Toloka's task file: INPUT:image or INPUT:text
        table = table.rename(columns={c: c[len("INPUT:"):] for c in inputs})
        kind = next((c for c in ("image", "text") if c in table.columns), None)
        if kind is None:
            raise ProjectError(f"{path}: a Toloka task file needs INPUT:image or INPUT:text")
        table = table.drop_duplicates(kind).assign(item=lambda t: t[kind])
    if "item" not in table.columns:
        raise ProjectError(f"{path} needs an 'item' column (columns: {list(table.columns)})")
    kinds = [c for c in ("image", "text") if c in table.columns]
    if len(kinds) != 1:
        raise ProjectError(f"{path} needs exactly one of the columns 'image' (a path or URL) or "
                           f"'text'; it has {list(table.columns)}")
    empty = table["item"].isna() | (table["item"].astype(str).str.strip() == "")
    if empty.any():
        raise ProjectError(f"{path}: empty item id on line(s) {(np.flatnonzero(empty) + 2).tolist()[:5]}")
    table["item"] = table["item"].astype(str)
    dup = table["item"][table["item"].duplicated()]
    if len(dup):
        raise ProjectError(f"{path}: repeated item ids {dup.tolist()[:5]}")
    features = [c for c in table.columns if c not in ("item", "image", "text", "label")
                and pd.api.types.is_numeric_dtype(table[c])]
    if "label" in table.columns:
        labels = table["label"].fillna("").astype(str).str.strip()
        bad = ~labels.isin(list(classes)) & (labels != "")
        if bad.any():
            raise ProjectError(f"{path}: prototype label(s) {labels[bad].unique().tolist()[:5]} "
                               f"are not among the classes {list(classes)}")
        proto = labels != ""
    else:
        proto = pd.Series(False, index=table.index)
    items, protos = table[~proto].reset_index(drop=True), table[proto].reset_index(drop=True)
    if len(items) == 0:
        raise ProjectError(f"{path} has no item to annotate")
    return items, protos, features


def _label_studio_items(path: Path) -> pd.DataFrame:
    """Items from Label Studio tasks (an export or an import file): the task ``id`` (else its
    position) and ``data.image`` or ``data.text``."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ProjectError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise ProjectError(f"{path}: Label Studio tasks are a JSON list of {{\"data\": ...}}")
    rows = []
    for n, task in enumerate(tasks):
        data = task["data"]
        kind = next((k for k in ("image", "text") if k in data), None)
        if kind is None:
            raise ProjectError(f"{path}: task #{n} has neither data.image nor data.text")
        rows.append({"item": str(task.get("id", n)), kind: data[kind]})
    return pd.DataFrame(rows)


def create_project(folder, items_file, classes: Sequence[str], *, preset: Optional[str] = None,
                   sampler: str = "random", update_every: Optional[int] = None,
                   annotators: Sequence[str] = (), **overrides) -> dict:
    """Set up a project in ``folder`` (created; must not hold a project yet).  Without feature
    columns the loop runs as online Dawid-Skene (``ds_model``); with them as
    ``efficient_annotation`` (``calibration="cv"`` when there are no prototypes).  Returns the
    project description (``project.json``)."""
    folder = Path(folder)
    classes = [str(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ProjectError(f"give at least two distinct classes, got {classes}")
    if (folder / "project.json").exists():
        raise ProjectError(f"{folder} already holds a project; serve it without --items")
    items, protos, features = read_items(items_file, classes)
    if preset is None:
        preset = "efficient_annotation" if features else "ds_model"
    if preset != "ds_model" and not features:
        raise ProjectError(f"preset {preset!r} needs numeric feature columns in the items file")
    if preset != "ds_model" and len(protos) == 0:
        overrides.setdefault("calibration", "cv")
    online.preset(preset, len(classes), sampler=sampler, **overrides)  # validate now
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(items_file).resolve()
    copy = "items.parquet" if source.suffix == ".parquet" else "items" + (source.suffix or ".csv")
    shutil.copyfile(source, folder / copy)
    n = len(items)
    description = {
        "classes": classes,
        "preset": preset,
        "sampler": sampler,
        "overrides": overrides,
        "items_file": copy,
        "media_root": str(source.parent),
        "n_items": n,
        "update_every": int(update_every or max(5, min(200, n // 20))),
        "requester_token": secrets.token_urlsafe(18),
        "created": time.time(),
    }
    _atomic_json(folder / "annotators.json", {})
    _atomic_json(folder / "project.json", description)
    if annotators:
        with Project(folder) as project:
            for name in annotators:
                project.add_annotator(name)
    return description


class _Answer:
    """One answer waiting for the writer; ``future``/``loop`` for an asyncio caller, else an
    event."""

    __slots__ = ("item", "worker", "label", "done", "result", "future", "loop")

    def __init__(self, item, worker, label, future=None, loop=None):
        self.item, self.worker, self.label = item, worker, label
        self.done = threading.Event()
        self.result = None
        self.future, self.loop = future, loop

    def resolve(self, result) -> None:
        self.result = result
        self.done.set()
        if self.future is not None:
            self.loop.call_soon_threadsafe(_set_result, self.future, result)


def _set_result(future, result) -> None:
    if not future.done():
        future.set_result(result)


class Project:
    """A project folder opened for serving (takes the folder's lock; ``close`` releases it)."""

    def __init__(self, folder, *, update_interval: float = 2.0):
        self.folder = Path(folder)
        path = self.folder / "project.json"
        if not path.exists():
            raise ProjectError(f"{self.folder} is not a crowdinfer project (no project.json); "
                               "create it with --items and --classes")
        self.spec = json.loads(path.read_text())
        self.classes = self.spec["classes"]
        self.update_every = int(self.spec["update_every"])
        self.update_interval = float(update_interval)
        items, protos, features = read_items(self.folder / self.spec["items_file"], self.classes)
        self.items = items
        self.item_ids = items["item"].tolist()
        self.kind = "image" if "image" in items.columns else "text"
        k = len(self.classes)
        x = items[features].to_numpy(np.float32) if features else len(items)
        proto_x = protos[features].to_numpy(np.float32) if features and len(protos) else None
        proto_y = (np.array([self.classes.index(c) for c in protos["label"]])
                   if proto_x is not None else None)
        self.config = online.preset(self.spec["preset"], k, sampler=self.spec["sampler"],
                                    **self.spec.get("overrides", {}))
        task = online.make_task(x, BASE_WORKERS, proto_x, proto_y, k)
        self.session = Session(self.config, task, self.folder, item_ids=self.item_ids,
                               worker_ids=[])
        try:
            self._init_runtime()
        except BaseException:
            self.session.close()
            raise

    def _init_runtime(self) -> None:
        self.tokens = json.loads((self.folder / "annotators.json").read_text())
        self.by_token = {t: w for w, t in self.tokens.items()}
        self.codes = {w: self.session.add_worker(w) for w in self.tokens}
        n = len(self.item_ids)
        rows = self.session.ledger.read()
        self.counts = np.bincount(rows["item"].to_numpy(), minlength=n).astype(np.int64)
        self.answered: dict = {}
        for i, w in zip(rows["item"].tolist(), rows["worker"].tolist()):
            self.answered.setdefault(w, set()).add(i)
        self.answers_total = len(rows)
        self.outstanding = np.zeros(n, np.int64)
        self.leases: dict = {}  # worker code -> (item, expiry)
        self.lock = threading.Lock()
        self.rng = np.random.default_rng()
        self.stopped = self.session.ledger.get_meta("stopped")
        self.since_update = self.session.pending
        self._warm_up()
        self._publish()
        column = self.items["text" if self.kind == "text" else "image"].astype(str).tolist()
        self._payloads = [self._payload(i, v) for i, v in zip(self.item_ids, column)]
        self._answers: queue.Queue = queue.Queue()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._threads = []
        self.update_error = None

    def _warm_up(self) -> None:
        """Compile ``update`` and the ingest of typical batches now, not under load (pure
        functions: the results are dropped)."""
        state, task = self.session.state, self.session.task
        online.update(self.config, state, task)
        for size in (self.update_every, 2 * self.update_every):
            n = min(size, len(self.item_ids))
            online.ingest(state, np.arange(n), np.zeros(n, np.int64), np.zeros(n, np.int64))

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Project":
        """Start the writer and the updater threads."""
        if self._threads:
            return self
        for target, name in ((self._writer, "crowdinfer-writer"), (self._updater, "crowdinfer-update")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.session.pending:
            self._wake.set()
        gc.freeze()  # what start-up built is long-lived: keep it out of the collector's passes
        return self

    def close(self, final_update: bool = True) -> None:
        """Stop the threads (after a last update of the answers still waiting) and release the
        folder."""
        if self.session.ledger is None:
            return
        self._closing.set()
        self._wake.set()
        self._answers.put(None)
        for t in self._threads:
            t.join(timeout=120)
        self._threads = []
        if final_update and self.session.pending:
            self.session.update()
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- annotators --------------------------------------------------------------------------
    def add_annotator(self, name: str) -> str:
        """Register an annotator (a new one may join at any time); returns their token."""
        name = str(name).strip()
        if not name:
            raise ProjectError("an annotator needs a non-empty id")
        with self.lock:
            if name in self.tokens:
                return self.tokens[name]
            self.codes[name] = self.session.add_worker(name)
            token = secrets.token_urlsafe(18)
            self.tokens[name] = token
            self.by_token[token] = name
            _atomic_json(self.folder / "annotators.json", self.tokens)
            return token

    def worker_of(self, token: Optional[str]):
        """``(worker id, code)`` of an annotator token; ``None`` if unknown (no lock taken)."""
        name = self.by_token.get(token or "")
        return None if name is None else (name, self.codes[name])

    def is_requester(self, token: Optional[str]) -> bool:
        return bool(token) and secrets.compare_digest(token, self.spec["requester_token"])

    # -- the loop ----------------------------------------------------------------------------
    def _publish(self) -> None:
        """Host copies of what requests read (taken after each update)."""
        state = self.session.state
        scores = worker_scores(self.config, state)
        self.view = {
            "finished": np.asarray(state.finished),
            "decision": np.asarray(state.decision),
            "risk": np.asarray(state.risk),
            "confusion": np.asarray(state.confusion),
            "class_prior": np.asarray(state.class_prior),
            "scores": None if scores is None else np.asarray(scores),
            "step": int(state.step),
        }

    def _updater(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(timeout=self.update_interval)
            self._wake.clear()
            if self._closing.is_set() or self.session.pending == 0:
                continue
            try:
                self.session.update()
                self._publish()
                reason = self.session.stop_reason()
                if reason is not None and self.stopped is None:
                    self._stop(reason)
            except Exception as err:  # keep serving; the answers are in the ledger
                self.update_error = f"{type(err).__name__}: {err}"

    def _stop(self, reason: str) -> None:
        self.stopped = reason
        self.session.ledger.set_meta("stopped", reason)

    def stop(self, reason: str = "stopped by the requester") -> None:
        if self.stopped is None:
            self._stop(reason)

    def _writer(self) -> None:
        while True:
            first = self._answers.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    more = self._answers.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._answers.put(None)
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list) -> None:
        """Record a batch of answers in one ledger transaction, then acknowledge each."""
        try:
            receipt = self.session.record([a.item for a in batch], [a.worker for a in batch],
                                          [a.label for a in batch])
            results = [(ok, why) for ok, why in zip(receipt.accepted.tolist(), receipt.reasons)]
        except Exception as err:  # the transaction rolled back: nothing was acknowledged
            results = [(False, f"error: {err}")] * len(batch)
        with self.lock:
            for a, (ok, _) in zip(batch, results):
                if not ok:
                    continue
                self.counts[a.item] += 1
                self.answered.setdefault(a.worker, set()).add(a.item)
                self.answers_total += 1
                lease = self.leases.get(a.worker)
                if lease is not None and lease[0] == a.item:
                    del self.leases[a.worker]
                    self.outstanding[a.item] -= 1
            self.since_update += sum(ok for ok, _ in results)
            if self.since_update >= self.update_every:
                self.since_update = 0
                self._wake.set()
        for a, result in zip(batch, results):
            a.resolve(result)

    def submit(self, worker: int, item: int, label: int, timeout: float = 30.0):
        """Record one answer (ledger first); returns ``(accepted, reason)`` once it is committed."""
        answer = _Answer(int(item), int(worker), int(label))
        if self._threads:
            self._answers.put(answer)
        else:  # not serving: commit here
            self._commit([answer])
        if not answer.done.wait(timeout):
            raise TimeoutError("the ledger did not acknowledge the answer in time")
        return answer.result

    def submit_async(self, worker: int, item: int, label: int):
        """:meth:`submit` for an event loop: an awaitable resolved once the answer is committed."""
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._answers.put(_Answer(int(item), int(worker), int(label), future, loop))
        return future

    def next_item(self, worker: int) -> Optional[int]:
        """The item to show ``worker`` now (held for them for a while), ``None`` if none."""
        if self.stopped is not None:
            return None
        now = time.time()
        with self.lock:
            mine = self.answered.get(worker, set())
            held = self.leases.get(worker)
            if held is not None and held[0] not in mine and held[1] > now:
                return held[0]
            if held is not None:
                del self.leases[worker]
                self.outstanding[held[0]] -= 1
            for w, (i, expiry) in list(self.leases.items()):
                if expiry <= now:
                    del self.leases[w]
                    self.outstanding[i] -= 1
            view = self.view
            open_ = ~view["finished"] & (self.counts + self.outstanding < self.config.max_per_item)
            if mine:
                open_[np.fromiter(mine, np.int64, len(mine))] = False
            if not open_.any():
                return None
            scores = view["scores"]
            if scores is None or worker >= scores.shape[1]:
                score = self.rng.random(len(open_))
            else:
                score = scores[:, worker] + 1e-6 * self.rng.random(len(open_))
            item = int(np.argmax(np.where(open_, score, -np.inf)))
            self.leases[worker] = (item, now + LEASE_SECONDS)
            self.outstanding[item] += 1
            return item

    def answered_by(self, worker: int) -> int:
        return len(self.answered.get(worker, ()))

    # -- what the requester sees ---------------------------------------------------------------
    def labels_frame(self) -> pd.DataFrame:
        v = self.view
        return pd.DataFrame({
            "item": self.item_ids,
            "label": np.asarray(self.classes, dtype=object)[v["decision"]],
            "confidence": 1.0 - v["risk"],
            "annotations": self.counts,
            "finished": v["finished"],
        })

    def skills_frame(self) -> pd.DataFrame:
        v = self.view
        names = self.session.worker_ids
        m = min(len(names), v["confusion"].shape[0])
        diag = np.diagonal(v["confusion"][:m], axis1=1, axis2=2)
        prior = v["class_prior"] / v["class_prior"].sum()
        table = pd.DataFrame({
            "worker": names[:m],
            "answers": [self.answered_by(j) for j in range(m)],
            "accuracy": diag @ prior,
        })
        for c, name in enumerate(self.classes):
            table[f"accuracy_{name}"] = diag[:, c]
        return table

    def summary(self) -> dict:
        v = self.view
        history = [{k: h.get(k) for k in ("time", "step", "annotations", "per_item", "finished",
                                          "expected_accuracy")} for h in self.session.history]
        skills = self.skills_frame()
        m = len(skills)
        return {
            "classes": self.classes,
            "items": len(self.item_ids),
            "answers": int(self.answers_total),
            "finished": int(v["finished"].sum()),
            "per_item": float(self.answers_total / len(self.item_ids)),
            "expected_accuracy": float(1.0 - v["risk"].mean()),
            "step": v["step"],
            "stopped": self.stopped,
            "update_error": self.update_error,
            "history": history,
            "workers": skills.to_dict(orient="records"),
            "confusions": v["confusion"][:m].round(4).tolist(),
            "annotators": sorted(self.tokens),
        }

    def _payload(self, item: str, value: str) -> dict:
        if self.kind == "text":
            return {"item": item, "kind": "text", "text": value}
        url = value.startswith(("http://", "https://", "data:"))
        return {"item": item, "kind": "image", "src": value if url else None}

    def item_payload(self, code: int) -> dict:
        """What an annotator's page needs to show item ``code`` (nothing about its answers)."""
        return dict(self._payloads[code])

    def media_path(self, code: int) -> Path:
        """The local image file of item ``code`` (relative paths: to the items file's folder,
        then to the project folder)."""
        src = Path(str(self.items.iloc[code]["image"]))
        for base in (Path(self.spec["media_root"]), self.folder):
            path = src if src.is_absolute() else base / src
            if path.is_file():
                return path
        raise FileNotFoundError(f"image of item {self.item_ids[code]!r} not found: {src}")
