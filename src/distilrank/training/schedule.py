"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations


def warmup_linear(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier for the base LR: linear 0->1 over ``warmup_steps``, then linear 1->0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
