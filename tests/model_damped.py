"""A damped answer update: a model variant in one file, the example of impl/arch.py's contract.

    {"model": {"arch": "damped", "damping": 0.5}}    # an override file; RUN_CONFIG is not edited

Each cycle moves y only part of the way to the paper's update: y <- (1 - a) y + a f(y + z), with
a = model.damping (1: TRM exactly). The class overrides one method; its key lives in its config.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trm import TRM, TRMConfig


@dataclass
class DampedConfig(TRMConfig):
    damping: float = 0.5             # a: how far y moves towards f(y + z) per cycle (1: TRM)

    def rules(self) -> list[tuple[str, bool, str]]:
        return [("damping", 0.0 < self.damping <= 1.0, "must be in (0, 1]")]


class DampedTRM(TRM):
    config_class = DampedConfig

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rope = self._rope()
        for _ in range(self.config.n):
            z = self.net(z, x + y, rope)                                # z <- f(x + y + z), as TRM
        a = self.config.damping
        return (1 - a) * y + a * self.net(y, z, rope), z                # y moves part of the way


MODEL = DampedTRM  # model.arch "damped" is this class: impl/arch.py imports model_damped and reads MODEL
