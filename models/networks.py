"""Flax modules: the classifier behind the learned label prior ``p(y_i | x_i, theta)``.

Seed 000 (sec. 3.3) uses a 2-layer MLP on fixed features; :class:`MLP` is that network.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
    """Fully connected ReLU network; returns class logits."""

    n_classes: int
    hidden: Sequence[int] = (128,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.n_classes)(x)
