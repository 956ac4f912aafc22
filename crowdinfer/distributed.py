"""Sharding the annotation axis over devices.

The annotation arrays of a :class:`~crowdinfer.CrowdData` are split along their one axis over a 1-d
mesh of devices; the items x classes and workers x classes x classes arrays stay replicated.  Every
per-annotation step is then local, and each ``segment_sum`` becomes a local sum plus an all-reduce,
inserted by JAX's SPMD partitioner: no model or engine code knows about devices, and the answer is
the one a single device gives (up to float summation order).

On a GPU/TPU host the devices are the accelerators.  On a CPU host, JAX shows one device unless
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set before JAX starts; the ``crowdinfer``
command sets it to the number of cores, so its scatter-adds run on every core.  Across hosts, start
JAX's runtime with ``jax.distributed.initialize()``: the mesh spans all processes' devices.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["annotation_sharding", "use_all_cpu_cores"]

AXIS = "annotations"


def annotation_sharding(devices=None) -> NamedSharding | None:
    """The sharding of the annotation axis over ``devices`` (default: all devices), or ``None``
    when there is only one."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) < 2:
        return None
    return NamedSharding(Mesh(np.asarray(devices), (AXIS,)), PartitionSpec(AXIS))


def use_all_cpu_cores() -> None:
    """Before JAX starts: expose one CPU device per core (no effect if ``XLA_FLAGS`` already sets
    a device count, or if JAX has already started)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and cores > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()
