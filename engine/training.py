"""The optimiser step the engine's small trainers share (boundary head, click model, modulation refiner)."""

import torch


def step(opt: torch.optim.Optimizer, sched, loss: torch.Tensor, running: float | None) -> float:
    """Back-propagate `loss`, step the optimiser and its learning-rate schedule; returns the running loss
    (decay 0.98) that every trainer logs, starting from the first loss when `running` is None."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
