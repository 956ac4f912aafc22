"""The same ``fit`` call across 2 processes (JAX's multi-process runtime, CPU collectives through
gloo, 2 CPU devices per process: a global mesh of 4) gives the single-process answer.

Both processes are started on 127.0.0.1 and bounded in time; process 0 writes its posterior."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import crowdinfer as ci

WORKER = r"""
import json, sys
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
import crowdinfer as ci  # after initialize: importing crowdinfer already computes with JAX
from crowdinfer.distributed import data_mesh
ann = ci.datasets.synthetic(n_items=2000, n_workers=40, n_classes=4, annotations_per_item=5,
                            seed=1).annotations
data = ann.to_device()
res = {"processes": jax.process_count(), "devices": len(jax.devices()),
       "local_devices": len(jax.local_devices()), "shards": len(data.item.sharding.device_set),
       "local_shards": len(data.item.addressable_shards),
       "mesh": None if data_mesh(data) is None else data_mesh(data).size}
for model in ("dawid_skene", "bcc"):
    post = ci.fit(ann, model)
    res[model] = {"probs": post.label_probs.tolist(), "n_iter": post.n_iter,
                  "confusion": post.confusion.tolist()}
if pid == 0:
    with open(out, "w") as f:
        json.dump(res, f)
"""

TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two JAX processes: ~30 s idle, ~100 s on the shared 2-core machine
def test_two_processes_give_the_single_process_answer(tmp_path):
    out = tmp_path / "posterior.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(pid), port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for pid in (0, 1)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    res = json.loads(out.read_text())
    # 2 processes x 2 devices: the annotations are split over a global mesh of 4
    assert res["processes"] == 2 and res["devices"] == 4 and res["local_devices"] == 2
    assert res["shards"] == 4 and res["local_shards"] == 2 and res["mesh"] == 4
    ann = ci.datasets.synthetic(n_items=2000, n_workers=40, n_classes=4, annotations_per_item=5,
                                seed=1).annotations
    for model in ("dawid_skene", "bcc"):
        single = ci.fit(ann, model)
        multi = res[model]
        assert multi["n_iter"] == single.n_iter, model
        np.testing.assert_allclose(np.asarray(multi["probs"]), single.label_probs, atol=1e-4,
                                   err_msg=model)
        np.testing.assert_allclose(np.asarray(multi["confusion"]), single.confusion, atol=1e-4,
                                   err_msg=model)
