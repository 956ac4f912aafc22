"""The state of an online annotation run (a pytree), the task it works on, and ``ingest``.

Shapes are static: the annotations live in a :class:`~crowdinfer.annotations.CrowdData` buffer
padded to a capacity bucket (free rows are CrowdData's padding: ``weight`` 0, the last item; the
answers are held in arrival order), so the jitted ``update`` compiles once per bucket -- a handful
of times over a run -- and never once per step.  ``ingest`` appends in place
through a jitted scatter whose batch is itself padded to a power of two.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from crowdinfer.annotations import CrowdData, capacity_bucket
from crowdinfer.ops import standardise

from .config import OnlineConfig

__all__ = ["Task", "State", "Receipt", "make_task", "check_gold", "init", "ingest", "answered_by",
           "mark_answered", "grow_workers"]

WORD = 32  # workers per word of the answered-bitmask
INITIAL_ROWS = 1 << 18  # largest initial annotation buffer (then it doubles when full)


class Task(NamedTuple):
    """What the run annotates: item features (N, d) -- standardised -- and the requester's clean
    prototypes (P, d) with their classes (P,).  Features may be (N, 0) for ``ds_model``.
    ``gold``: ``None``, or the known class of some items of the pool (N,) int32, -1 where unknown
    (honeypots: annotated like any item, never shown to the EM; they fit the risk's calibrator)."""

    features: jax.Array
    proto_features: jax.Array
    proto_labels: jax.Array
    n_workers: int
    gold: Optional[jax.Array] = None

    @property
    def n_items(self) -> int:
        return self.features.shape[0]


jax.tree_util.register_pytree_node(
    Task,
    lambda t: ((t.features, t.proto_features, t.proto_labels, t.gold), t.n_workers),
    lambda aux, ch: Task(*ch[:3], aux, ch[3]),
)


def check_gold(gold, n_items: int, n_classes=None) -> np.ndarray:
    """``gold`` as an (N,) int32 array, checked: integer class codes, -1 where unknown, below
    ``n_classes`` when given, and at least :data:`crowdinfer.calibration.MIN_GOLD` known."""
    from crowdinfer.calibration import MIN_GOLD

    g = np.asarray(gold)
    if g.shape != (n_items,):
        raise ValueError(f"gold must give one class per item of the pool ({n_items},), -1 where "
                         f"unknown; got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"gold must hold integer class codes (-1: unknown), got dtype {g.dtype}")
    bad = np.flatnonzero((g < -1) | ((g >= n_classes) if n_classes is not None else False))
    if bad.size:
        top = "-1 (unknown) or 0.." + (str(n_classes - 1) if n_classes is not None else "K-1")
        raise ValueError(f"gold must be {top}; items {bad[:5].tolist()} hold "
                         f"{g[bad[:5]].tolist()}")
    if int((g >= 0).sum()) < MIN_GOLD:
        raise ValueError(f"gold must give the class of at least {MIN_GOLD} items (the calibrator "
                         f"fits two parameters), got {int((g >= 0).sum())}")
    return g.astype(np.int32)


def make_task(features, n_workers: int, prototypes=None, proto_labels=None, n_classes=None,
              gold=None) -> Task:
    """Standardise the features (with the items' mean and scale, applied to prototypes too) and
    check the shapes; ``features`` may be an int (number of items) when no learner is used.
    ``gold``: optional known classes of pool items (N,), -1 where unknown (:class:`Task`;
    :func:`check_gold`)."""
    if isinstance(features, (int, np.integer)):
        features = np.zeros((int(features), 0), np.float32)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"features must be a non-empty (items, dims) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x).all(1))[:5]
        raise ValueError(f"features contain NaN or infinite values (items {bad.tolist()} ...)")
    if int(n_workers) < 1:
        raise ValueError("n_workers must be at least 1")
    z, mean, scale = standardise(x)
    if prototypes is None:
        p = np.zeros((0, x.shape[1]), np.float32)
        pl = np.zeros((0,), np.int32)
    else:
        p = np.asarray(prototypes, dtype=np.float32)
        pl = np.asarray(proto_labels)
        if p.ndim != 2 or p.shape[1] != x.shape[1]:
            raise ValueError(f"prototypes must be (P, {x.shape[1]}), got {p.shape}")
        if pl.shape != (p.shape[0],):
            raise ValueError("proto_labels must give one class per prototype")
        if n_classes is not None and (pl.min() < 0 or pl.max() >= n_classes):
            raise ValueError(f"proto_labels must lie in 0..{n_classes - 1}")
    return Task(
        jnp.asarray(z),
        jnp.asarray((p - mean) / scale),
        jnp.asarray(pl, jnp.int32),
        int(n_workers),
        None if gold is None else jnp.asarray(check_gold(gold, x.shape[0], n_classes)),
    )


class State(NamedTuple):
    """Everything a run carries from step to step (all arrays; checkpointed as is)."""

    data: CrowdData  # the annotations so far, padded to a capacity bucket
    n_annotations: jax.Array  # () int32: rows of ``data`` in use
    answered: jax.Array  # (N, ceil(M/32)) uint32 bitmask: worker j answered item i
    item_count: jax.Array  # (N,) int32 annotations per item
    worker_count: jax.Array  # (M,) int32 annotations per worker
    log_q: jax.Array  # (N, K) label posterior log p(y_i | Z, x_i)
    confusion: jax.Array  # (M, K, K) MAP worker confusions
    counts: jax.Array  # (M, K, K) expected confusion counts under q (for BALD's posterior)
    class_prior: jax.Array  # (K,) class proportions (the prior when there is no learner)
    prior_logits: jax.Array  # (N, K) calibrated learner log prior (zeros: uniform)
    learner: dict  # {"params": stacked fold params, "temperature": (), "best_loss": ()}
    risk: jax.Array  # (N,) Bayes risk of the decision (eq. 4)
    decision: jax.Array  # (N,) int32 the risk-minimising label
    finished: jax.Array  # (N,) bool risk < C
    step: jax.Array  # () int32 updates done
    best_finished: jax.Array  # () int32 largest finished-set size so far
    stall: jax.Array  # () int32 steps since the finished set last grew past its maximum
    key: jax.Array  # PRNG key (raw uint32) for proposals and learner initialisation


class Receipt(NamedTuple):
    """What :func:`ingest` did with each submitted answer."""

    accepted: np.ndarray  # (B,) bool
    reasons: list  # (B,) "" or why the answer was rejected

    @property
    def n_accepted(self) -> int:
        return int(self.accepted.sum())

    @property
    def rejected(self) -> list:
        return [(i, r) for i, r in enumerate(self.reasons) if r]


def _learner_init(config: OnlineConfig, task: Task):
    from .learner import init_params

    if config.learner == "none":
        return {}
    return {
        "params": init_params(config, task.features.shape[1], jax.random.key(config.seed)),
        "temperature": jnp.float32(1.0),
        "best_loss": jnp.float32(jnp.inf),
    }


def _initial_confusion(k: int) -> jax.Array:
    """A new worker's confusion before any update: accuracy 0.7, errors spread evenly."""
    return jnp.eye(k) * 0.7 + (1 - jnp.eye(k)) * 0.3 / (k - 1)


def init(config: OnlineConfig, task: Task, capacity: Optional[int] = None) -> State:
    """The state before any annotation: uniform posteriors, every item unfinished."""
    n, m, k = task.n_items, task.n_workers, config.n_classes
    if capacity is None:  # room for every proposal a run can make, up to 2^18 rows: one compilation
        capacity = min(n * config.max_per_item, max(4 * config.slots, INITIAL_ROWS))
    cap = capacity_bucket(capacity)
    # CrowdData's padding: weight 0, item n - 1 (the last item), worker 0, label 0
    data = CrowdData(
        jnp.full(cap, n - 1, jnp.int32), jnp.zeros(cap, jnp.int32), jnp.zeros(cap, jnp.int32),
        jnp.zeros(cap, jnp.float32), n, m, k,
    )
    uniform = jnp.full((n, k), -jnp.log(k), jnp.float32)
    return State(
        data=data,
        n_annotations=jnp.int32(0),
        answered=jnp.zeros((n, -(-m // WORD)), jnp.uint32),
        item_count=jnp.zeros(n, jnp.int32),
        worker_count=jnp.zeros(m, jnp.int32),
        log_q=uniform,
        confusion=jnp.broadcast_to(_initial_confusion(k), (m, k, k)),
        counts=jnp.zeros((m, k, k), jnp.float32),
        class_prior=jnp.full((k,), 1.0 / k, jnp.float32),
        prior_logits=jnp.zeros((n, k), jnp.float32),
        learner=_learner_init(config, task),
        risk=jnp.full((n,), 1.0 - 1.0 / k, jnp.float32),
        decision=jnp.zeros(n, jnp.int32),
        finished=jnp.zeros(n, bool),
        step=jnp.int32(0),
        best_finished=jnp.int32(0),
        stall=jnp.int32(0),
        key=jax.random.key_data(jax.random.key(config.seed + 1)),
    )


def answered_by(answered: jax.Array, item, worker) -> jax.Array:
    """Whether ``worker`` already answered ``item`` (elementwise, broadcasting), from the
    answered-bitmask ``answered`` (N, ceil(M/32)) uint32: bit ``j % 32`` of word ``j // 32`` of row
    ``i`` is set once worker ``j`` answered item ``i``.  The one reader of the bitmask (the samplers
    and the experiments use it); :func:`mark_answered` is the one writer."""
    word = answered[item, worker // WORD]
    return ((word >> (worker % WORD).astype(jnp.uint32)) & 1).astype(bool)


def mark_answered(answered: jax.Array, item, worker, valid) -> jax.Array:
    """The bitmask with the bits of the ``valid`` (item, worker) pairs set; the pairs must be new
    (not yet answered, distinct), so adding the bit is setting it."""
    bit = (jnp.uint32(1) << (worker % WORD).astype(jnp.uint32)) * valid.astype(jnp.uint32)
    return answered.at[item, worker // WORD].add(bit)


_answered_jit = jax.jit(answered_by)


class _Counts(NamedTuple):
    """The fields ``ingest`` changes (passing only these keeps the copy small)."""

    data: CrowdData
    n_annotations: jax.Array
    answered: jax.Array
    item_count: jax.Array
    worker_count: jax.Array


@jax.jit
def _append(c: _Counts, item, worker, label, valid) -> _Counts:
    """Write the ``valid`` rows of a padded batch after the last used row."""
    offset = jnp.cumsum(valid) - 1
    cap = c.data.item.shape[0]
    pos = jnp.where(valid, c.n_annotations + offset, cap)  # out of range: dropped
    d = c.data
    data = CrowdData(
        d.item.at[pos].set(item, mode="drop"),
        d.worker.at[pos].set(worker, mode="drop"),
        d.label.at[pos].set(label, mode="drop"),
        d.weight.at[pos].set(1.0, mode="drop"),
        d.n_items, d.n_workers, d.n_classes,
    )
    answered = mark_answered(c.answered, item, worker, valid)
    ones = valid.astype(jnp.int32)
    return _Counts(data, c.n_annotations + ones.sum(), answered,
                   c.item_count.at[item].add(ones), c.worker_count.at[worker].add(ones))


def _grow(state: State, needed: int) -> State:
    """Re-pad the annotation buffer: at least double it (so a run of n annotations compiles
    ``update`` about log2(n / initial capacity) times), to a capacity bucket; the new rows are
    CrowdData's padding (weight 0, the last item)."""
    d = state.data
    cap = capacity_bucket(max(needed, 2 * d.item.shape[0]))
    extra = cap - d.item.shape[0]
    pad = lambda a, fill=0: jnp.concatenate([a, jnp.full(extra, fill, a.dtype)])  # noqa: E731
    data = CrowdData(pad(d.item, d.n_items - 1), pad(d.worker), pad(d.label), pad(d.weight),
                     d.n_items, d.n_workers, d.n_classes)
    return state._replace(data=data)


def grow_workers(state: State, n_workers: int) -> State:
    """Room for ``n_workers`` workers (new annotators joining a run): the worker axes are padded,
    new workers start at the prior, with no answers; nothing else changes."""
    m = state.worker_count.shape[0]
    extra = int(n_workers) - m
    if extra <= 0:
        return state
    k = state.confusion.shape[-1]
    words = -(-int(n_workers) // WORD) - state.answered.shape[1]
    d = state.data
    return state._replace(
        data=CrowdData(d.item, d.worker, d.label, d.weight, d.n_items, int(n_workers), d.n_classes),
        answered=jnp.pad(state.answered, ((0, 0), (0, words))),
        worker_count=jnp.pad(state.worker_count, (0, extra)),
        confusion=jnp.concatenate([state.confusion,
                                   jnp.broadcast_to(_initial_confusion(k), (extra, k, k)).astype(state.confusion.dtype)]),
        counts=jnp.pad(state.counts, ((0, extra), (0, 0), (0, 0))),
    )


def _padded_size(n: int) -> int:
    """Batches are padded to a power of two (at least 256, a step's worth): few distinct shapes,
    few compilations."""
    return 1 << max(int(n - 1).bit_length(), 8)


def check_answers(state: State, item, worker, label):
    """Validate a batch of answers; returns int32 arrays and the :class:`Receipt` (answers already
    given by the same worker, in the state or earlier in the batch, are rejected)."""
    d = state.data
    item, worker, label = (np.asarray(a).reshape(-1) for a in (item, worker, label))
    if not (len(item) == len(worker) == len(label)):
        raise ValueError("item, worker and label must have the same length")
    for name, values, size in (("item", item, d.n_items), ("worker", worker, d.n_workers),
                               ("label", label, d.n_classes)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must be integer codes, got dtype {values.dtype}")
        bad = np.flatnonzero((values < 0) | (values >= size))
        if bad.size:
            raise ValueError(
                f"{name} out of range 0..{size - 1} at answer(s) {bad[:5].tolist()}: "
                f"values {values[bad[:5]].tolist()}"
            )
    item, worker, label = (a.astype(np.int32) for a in (item, worker, label))
    reasons = [""] * len(item)
    if len(item):
        size = _padded_size(len(item))
        padded = lambda a: jnp.asarray(np.concatenate([a, np.zeros(size - len(a), a.dtype)]))  # noqa: E731
        seen = np.asarray(_answered_jit(state.answered, padded(item), padded(worker)))[: len(item)]
        pair = item.astype(np.int64) * d.n_workers + worker
        _, first = np.unique(pair, return_index=True)
        repeat = np.ones(len(item), bool)
        repeat[first] = False
        for n in np.flatnonzero(seen | repeat):
            what = "already answered" if seen[n] else "repeated within this batch"
            reasons[n] = f"duplicate: worker {worker[n]} {what} item {item[n]}"
    accepted = np.array([r == "" for r in reasons], bool)
    return item, worker, label, Receipt(accepted, reasons)


def ingest(state: State, item, worker, label, receipt: Receipt | None = None):
    """Add answers (integer codes; any order, any worker).  Returns ``(state, receipt)``: duplicate
    (item, worker) pairs are rejected, the rest appended; out-of-range codes raise ``ValueError``."""
    if receipt is None:
        item, worker, label, receipt = check_answers(state, item, worker, label)
    keep = receipt.accepted
    n_new = int(keep.sum())
    if n_new == 0:
        return state, receipt
    need = int(state.n_annotations) + n_new
    if need > state.data.item.shape[0]:
        state = _grow(state, need)
    size = _padded_size(n_new)
    pad = lambda a: np.concatenate([a[keep], np.zeros(size - n_new, a.dtype)])  # noqa: E731
    valid = np.arange(size) < n_new
    counts = _Counts(state.data, state.n_annotations, state.answered, state.item_count,
                     state.worker_count)
    counts = _append(counts, jnp.asarray(pad(item)), jnp.asarray(pad(worker)),
                     jnp.asarray(pad(label)), jnp.asarray(valid))
    return state._replace(**counts._asdict()), receipt
