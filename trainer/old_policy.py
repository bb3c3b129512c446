"""A second copy of the adapter, swapped in for no-grad passes: DiffusionNFT's old policy (a slowly
updated EMA), AWM's EMA-KL target, online DPO's periodically synced reference."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class OldPolicy:
    def __init__(
        self,
        named: dict[str, nn.Parameter],
        rate: float,
        ceiling: float,
        schedule: Callable[[int], float] | None = None,
    ):
        self.named, self.rate, self.ceiling, self.schedule = named, rate, ceiling, schedule
        self.shadow = {k: p.detach().clone() for k, p in named.items()}

    def decay(self, step: int) -> float:
        """Ramps from 0 (old = current) by `rate` per optimizer step up to `ceiling`, unless a
        schedule (optimizer step -> decay; 1 keeps the copy, 0 syncs it) was given."""
        if self.schedule is not None:
            return self.schedule(step)
        return min(self.rate * step, self.ceiling)

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = self.decay(step)
        for k, p in self.named.items():
            self.shadow[k].mul_(d).add_(p.detach(), alpha=1 - d)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Evaluate with the old weights. Only for no-grad passes run before the policy's forward:
        the policy's autograd graph must never see the swapped values."""
        backup = {k: p.detach().clone() for k, p in self.named.items()}
        with torch.no_grad():
            for k, p in self.named.items():
                p.copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.named.items():
                    p.copy_(backup[k])
