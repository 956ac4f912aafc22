"""Samplers as values (crowdinfer.online.samplers.Proposer), the CrowdData contract of the online
buffer, and an import of crowdinfer.online that starts no JAX backend."""
import subprocess
import sys
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer import online
from crowdinfer.online import samplers
from crowdinfer.online.state import answered_by, grow_workers

K, N, M = 3, 120, 6


@pytest.fixture(scope="module")
def run():
    """A ds_model state after one step of answers and an update."""
    cfg = online.preset("ds_model", K, hits_per_step=2, hit_size=10, early_stop=None)
    task = online.make_task(N, M)
    s = online.init(cfg, task)
    item = np.repeat(np.arange(40), 2)
    worker = np.tile([0, 1], 40)
    s, _ = online.ingest(s, item, worker, item % K)
    s, _ = online.update(cfg, s, task)
    return cfg, task, s


def same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


@pytest.mark.parametrize("sampler", ["random", "greedy", "bald"])
def test_a_factory_built_proposer_is_the_configured_sampler(run, sampler):
    """The string way (config.sampler) is a lookup of the factories: the same settings give the
    same proposals, and other settings other ones."""
    cfg, _, s = run
    cfg = cfg.replace(sampler=sampler)
    built = {"random": lambda: samplers.random(cfg.hits_per_step, cfg.hit_size, cfg.max_per_item),
             "greedy": lambda: samplers.greedy(cfg.slots, cfg.max_per_worker, cfg.max_per_item),
             "bald": lambda: samplers.bald(online.worker_prior(cfg), cfg.slots, cfg.hit_size,
                                           cfg.max_per_worker, cfg.max_per_item, cfg.bald_pool)}
    proposer = built[sampler]()
    assert isinstance(proposer, samplers.Proposer)
    sampler_state = proposer.init(s)
    assert sampler_state == samplers.EmptyState()
    p, after = samplers.next_proposal(proposer, sampler_state, s)
    assert after == sampler_state
    assert same(p, online.propose(cfg, s))
    assert samplers.from_config(cfg) is samplers.from_config(cfg.replace())  # one compilation
    # a smaller step: fewer slots
    small = {"random": lambda: samplers.random(1, 5, cfg.max_per_item),
             "greedy": lambda: samplers.greedy(5, cfg.max_per_worker, cfg.max_per_item),
             "bald": lambda: samplers.bald(online.worker_prior(cfg), 5)}[sampler]()
    q, _ = samplers.next_proposal(small, small.init(s), s)
    assert q.item.shape == (5,) and bool(np.asarray(q.valid).all())


def test_factory_settings_are_checked():
    with pytest.raises(ValueError, match="hit_size must be an integer >= 1, got 0"):
        samplers.random(hits_per_step=2, hit_size=0)
    with pytest.raises(ValueError, match="max_per_worker must be an integer >= 1, got 2.5"):
        samplers.greedy(max_per_worker=2.5)
    with pytest.raises(ValueError, match=r"prior_counts must be a \(K, K\) array, got shape \(3,\)"):
        samplers.bald(np.ones(3))
    with pytest.raises(ValueError, match="proposer must be a crowdinfer.online.samplers.Proposer"):
        online.Session(online.preset("ds_model", K), online.make_task(N, M), proposer="bald")


class Cursor(NamedTuple):
    next_item: jnp.ndarray  # () int32


def sweep(per_step: int) -> samplers.Proposer:
    """A stateful sampler: items in order, ``per_step`` a step, each to worker (step mod M)."""

    def init(state):
        return Cursor(jnp.int32(0))

    def propose(key, cursor, state):
        items = (cursor.next_item + jnp.arange(per_step)) % state.item_count.shape[0]
        worker = jnp.full(per_step, state.step % state.worker_count.shape[0], jnp.int32)
        valid = ~answered_by(state.answered, items, worker)
        return samplers.Proposal(items.astype(jnp.int32), worker, valid), \
            Cursor(cursor.next_item + per_step)

    return samplers.Proposer(init, propose)


def test_session_and_run_simulation_take_a_proposer_value():
    cfg = online.preset("ds_model", K, early_stop=None)
    task = online.make_task(N, M)
    truth = np.arange(N) % K
    confusion = np.broadcast_to(np.eye(K) * 0.6 + 0.4 / K, (M, K, K))  # 73% right
    sess = online.run_simulation(cfg, task, confusion, truth, max_steps=4, proposer=sweep(30))
    s = sess.state
    assert int(s.n_annotations) == 4 * 30 and sess.sampler_state == Cursor(120)
    # every item answered once, step t's items by worker t
    n = int(s.n_annotations)
    item, worker = np.asarray(s.data.item[:n]), np.asarray(s.data.worker[:n])
    assert sorted(item.tolist()) == list(range(N))
    assert worker.tolist() == np.repeat(np.arange(4), 30).tolist()
    # the default is config.sampler's proposer
    assert online.Session(cfg, task).proposer is samplers.from_config(cfg)


def test_run_simulation_takes_a_host_sampler_and_a_loop_seed():
    cfg = online.preset("ds_model", K, early_stop=None)
    task = online.make_task(N, M)
    truth = np.arange(N) % K
    confusion = np.broadcast_to(np.eye(K), (M, K, K))  # perfect workers: answers are the truth
    asked = []

    def host(session):  # a NumPy sampler: the next 20 items, to worker (step mod M)
        t = int(session.state.step)
        asked.append(t)
        return np.arange(20 * t, 20 * t + 20) % N, np.full(20, t % M)

    sess = online.run_simulation(cfg, task, confusion, truth, max_steps=3, host_proposer=host,
                                 loop_seed=7)
    s = sess.state
    n = int(s.n_annotations)
    assert asked == [0, 1, 2] and n == 60
    assert np.asarray(s.data.item[:n]).tolist() == list(range(60))
    assert np.asarray(s.data.label[:n]).tolist() == (np.arange(60) % K).tolist()
    # loop_seed sets the loop's key at the start: two runs that differ only in it start apart
    key = lambda seed: np.asarray(online.run_simulation(cfg, task, confusion, truth, max_steps=0,
                                                        loop_seed=seed).state.key)
    assert np.array_equal(key(7), key(7)) and not np.array_equal(key(7), key(8))


def check_contract(data, n_annotations):
    """CrowdData's contract (annotations.CrowdData): codes in range everywhere, padding rows
    (weight 0) are (last item, worker 0, label 0)."""
    item, worker, label, weight = (np.asarray(a) for a in (data.item, data.worker, data.label,
                                                            data.weight))
    assert ((0 <= item) & (item < data.n_items)).all()
    assert ((0 <= worker) & (worker < data.n_workers)).all()
    assert ((0 <= label) & (label < data.n_classes)).all()
    pad = weight == 0
    assert int((~pad).sum()) == n_annotations
    assert (item[pad] == data.n_items - 1).all() and (worker[pad] == 0).all() and (label[pad] == 0).all()
    return item, pad


def test_the_online_buffer_keeps_the_crowddata_contract():
    cfg = online.preset("ds_model", K)
    s = online.init(cfg, online.make_task(N, M), capacity=1024)
    check_contract(s.data, 0)
    rng = np.random.default_rng(0)
    # distinct (item, worker) pairs, unsorted: 500 from workers 0..5, then 600 from new workers
    pairs = np.concatenate([rng.permutation(N * M)[:500], N * M + rng.permutation(N * M)[:600]])
    s, _ = online.ingest(s, pairs[:500] % N, pairs[:500] // N, pairs[:500] % K)
    item, _ = check_contract(s.data, 500)
    assert item[:500].tolist() == (pairs[:500] % N).tolist()  # arrival order
    s = grow_workers(s, 2 * M)
    check_contract(s.data, 500)
    s, _ = online.ingest(s, pairs[500:] % N, pairs[500:] // N, pairs[500:] % K)
    assert s.data.item.shape[0] > 1024  # the buffer grew
    check_contract(s.data, 1100)
    # Annotations.to_device meets the same contract, sorted by item
    ann = ci.Annotations.from_arrays(pairs % N, pairs // N, pairs % K)
    item, pad = check_contract(ann.to_device(), 1100)
    assert (np.diff(item) >= 0).all()


def test_importing_online_starts_no_jax_backend():
    """jax.distributed.initialize must run before any backend starts: importing the online loop
    computes nothing with JAX."""
    code = ("import crowdinfer.online, crowdinfer.online.learner, crowdinfer.online.risk\n"
            "from jax._src import xla_bridge\n"
            "assert not xla_bridge.backends_are_initialized(), 'a backend started at import'\n"
            "from crowdinfer.online.risk import TEMPERATURES\n"
            "assert TEMPERATURES[0] == 1.0 and xla_bridge.backends_are_initialized()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
