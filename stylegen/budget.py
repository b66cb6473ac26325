"""The training budget of one style model (docs/method.md section 3): "the more images, the fewer epochs".

The 2018 code trained ``epochs_budget // n_tiles`` epochs at constant learning rate, then ``decay_epochs``
epochs with the learning rate falling linearly towards zero. The GPU profile keeps that rule
(``max_steps: null``); the CPU profile caps the total at ``max_steps`` optimisation steps, and the two
phases shrink in proportion so a capped run still ends with its decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetPlan:
    """Steps (generator updates, one per batch) at constant learning rate, then with linear decay."""

    constant_steps: int
    decay_steps: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.constant_steps + self.decay_steps

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate at 0-based ``step``: 1, then linearly down to 1 / (decay + 1)."""
        if step < self.constant_steps:
            return 1.0
        return max(1.0 - (step - self.constant_steps + 1) / (self.decay_steps + 1), 0.0)


def plan_budget(
    n_tiles: int, batch_size: int, epochs_budget: int, decay_epochs: int, max_steps: int | None = None
) -> BudgetPlan:
    """Turn the epoch rule into step counts for ``n_tiles`` training tiles.

    constant epochs = epochs_budget // n_tiles; decay epochs = decay_epochs; an epoch is
    ceil(n_tiles / batch_size) steps. With ``max_steps`` set and exceeded, both phases are scaled down.
    """
    for key, value in (("n_tiles", n_tiles), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")
    if epochs_budget < 0 or decay_epochs < 0:
        raise ValueError(
            f"budget.epochs_budget and budget.decay_epochs must be >= 0, got {epochs_budget}, {decay_epochs}"
        )
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"budget.max_steps must be at least 1 or null, got {max_steps}")
    steps_per_epoch = math.ceil(n_tiles / batch_size)
    constant = (epochs_budget // n_tiles) * steps_per_epoch
    decay = decay_epochs * steps_per_epoch
    total = constant + decay
    if total == 0:
        constant, total = 1, 1
    if max_steps is not None and total > max_steps:
        constant = round(constant * max_steps / total)
        decay = max_steps - constant
    return BudgetPlan(constant_steps=constant, decay_steps=decay, steps_per_epoch=steps_per_epoch)
