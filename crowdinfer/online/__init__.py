"""The online annotation loop (seed 000, Algorithm 1) as pure JAX functions.

See :mod:`crowdinfer.online.loop` for the shape of a run; :mod:`crowdinfer.online.session` adds
the append-only SQLite ledger, atomic checkpoints and resumption, and the simulated-worker driver.
"""
from .config import PRESETS, OnlineConfig, preset
from .loop import finished, init, label_accuracy, stop_reason, update, worker_prior
from . import samplers
from .samplers import Proposal, Proposer, bald_scores, propose
from .session import Ledger, Session, run_simulation
from .state import Receipt, State, Task, ingest, make_task
from .unfiltered import add_none_class, target_precision

__all__ = [
    "OnlineConfig", "PRESETS", "preset", "Task", "State", "Receipt", "Proposal", "Proposer", "samplers", "make_task",
    "init", "propose", "ingest", "update", "finished", "stop_reason", "label_accuracy",
    "Session", "Ledger", "run_simulation", "bald_scores", "worker_prior", "add_none_class", "target_precision",
]
