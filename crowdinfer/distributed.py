"""Sharding the annotation axis over devices and processes; chunked sums over annotations.

The annotation arrays of a :class:`~crowdinfer.CrowdData` are split along their one axis over a 1-d
mesh of devices; the items x classes and workers x classes x classes arrays stay replicated.  Every
per-annotation step is then local.  Sums over annotations run through :func:`annotation_sum`: each
device sums its own shard (chunk by chunk, so that no (annotations, K) intermediate is larger than
:data:`CHUNK_BYTES`) and one ``psum`` combines the devices -- an all-reduce, which crosses processes
when the mesh does.  Models whose M-step is not written as sufficient statistics are partitioned by
JAX's SPMD partitioner instead (the same answer, up to float summation order).

One machine.  On a GPU/TPU host the devices are the accelerators.  On a CPU host, JAX shows one
device unless ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set before JAX starts; the
``crowdinfer`` command sets it to the number of cores, so its scatter-adds run on every core.

Several processes (several hosts, or several processes on one host).  Start JAX's multi-process
runtime in every process *before importing crowdinfer* (importing it already computes with JAX);
then every process loads the same annotations and runs the same ``crowdinfer.fit`` call.
:meth:`Annotations.to_device` shards the annotation axis over the global mesh (all processes'
devices), each process keeps only its own shard on its devices, and the sums are all-reduced
across processes (CPU: gloo over TCP; GPU: NCCL; TPU: ICI).  The results (labels, confusions) are
replicated, so every process gets the whole posterior.  ``fit_big.py``::

    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts only
    jax.distributed.initialize()  # reads SLURM / Open MPI / Cloud TPU variables, or pass them
    import crowdinfer as ci
    post = ci.fit(ci.Annotations.from_csv("annotations.csv"))

Under SLURM, 2 hosts with 8 GPUs each (one process per host sees its 8 GPUs)::

    srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 python fit_big.py

By hand, torchrun-style, one process per host: pass ``coordinator_address="host0:1234",
num_processes=2, process_id=0`` (1 on the second host) to ``jax.distributed.initialize``.
``tests/test_multiprocess.py`` runs 2 such processes on 127.0.0.1, 2 CPU devices each.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["annotation_sharding", "use_all_cpu_cores", "data_mesh", "annotation_sum",
           "CHUNK_BYTES"]

AXIS = "annotations"

# The largest (rows, K) float32 intermediate of one chunk: 64 MB, e.g. 1.6 * 10^6 rows at K = 10.
CHUNK_BYTES = 64 * 2**20


def annotation_sharding(devices=None) -> NamedSharding | None:
    """The sharding of the annotation axis over ``devices`` (default: all devices of all
    processes), or ``None`` when there is only one."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) < 2:
        return None
    return NamedSharding(Mesh(np.asarray(devices), (AXIS,)), PartitionSpec(AXIS))


def data_mesh(data) -> Mesh | None:
    """The 1-d mesh the annotation arrays of ``data`` are sharded over by
    :func:`annotation_sharding`, or ``None`` (one device, traced values, another sharding)."""
    item = data.item
    if isinstance(item, jax.core.Tracer):
        return None
    sharding = getattr(item, "sharding", None)
    if not isinstance(sharding, NamedSharding) or sharding.mesh.size < 2:
        return None
    if tuple(sharding.mesh.axis_names) != (AXIS,) or tuple(sharding.spec) != (AXIS,):
        return None
    return sharding.mesh


def _n_chunks(rows: int, max_rows: int) -> int:
    """The fewest chunks of at most ``max_rows`` rows that split ``rows`` evenly (1 if none is
    close: an odd capacity is then summed in one piece)."""
    want = -(-rows // max(max_rows, 1))
    for n in range(want, 4 * want + 1):
        if rows % n == 0:
            return n
    return 1


def _chunked(add: Callable, data, extra, init, max_rows: int):
    rows = data.item.shape[0]
    n = _n_chunks(rows, max_rows)
    if n == 1:
        return add(data, extra, init)
    stacked = jax.tree.map(lambda a: a.reshape(n, rows // n), data)
    return lax.scan(lambda acc, d: (add(d, extra, acc), None), init, stacked)[0]


def annotation_sum(fn: Callable, data, extra, *, mesh: Mesh | None = None, accumulate=False,
                   chunk_bytes: int | None = None):
    """``fn(data, extra)`` -- a pytree of sums over the annotations of ``data`` -- computed chunk by
    chunk over the annotation axis and, when ``mesh`` is given, per device and combined by ``psum``.

    With ``accumulate=True``, ``fn(data, extra, acc)`` adds its sums into ``acc`` (pass the zero
    accumulator as ``extra[1]``): no per-chunk copy of a large result such as an (N, K) array.
    ``chunk_bytes`` defaults to :data:`CHUNK_BYTES` (read at trace time).
    """
    k = data.n_classes
    data = data.rows_only()  # the chunks and shards map over the row arrays (no per-item layout)

    if accumulate:
        extra, zero = extra

        def add(d, e, acc):
            return fn(d, e, acc)
    else:
        zero = jax.tree.map(jnp.zeros_like, jax.eval_shape(fn, data, extra))

        def add(d, e, acc):
            return jax.tree.map(jnp.add, acc, fn(d, e))

    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    max_rows = max(chunk_bytes // (4 * k), 1024)
    if mesh is None:
        return _chunked(add, data, extra, zero, max_rows)

    def local(d, e, z):
        return lax.psum(_chunked(add, d, e, z, max_rows), AXIS)

    spec = PartitionSpec(AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, PartitionSpec(), PartitionSpec()),
                         out_specs=PartitionSpec(), check_vma=False)(data, extra, zero)


def use_all_cpu_cores() -> None:
    """Before JAX starts: expose one CPU device per core (no effect if ``XLA_FLAGS`` already sets
    a device count, or if JAX has already started)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and cores > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()
