"""The paper's TRM variants: small subclasses of trm.TRM, chosen by model.arch (impl/arch.py).

    separate_nets    a second network f_H does the answer update, y <- f_H(y + z); f stays f_L for z
                     (the paper's "separate f_H, f_L" ablation)
    single_z         one latent state s in y's place: n updates s <- f(s + x), then s <- f(s)
                     (official trm_singlez); the heads read s, the carry's z is handed on unchanged
    z_slots          z as K states z_0..z_(K-1) (model.z_slots; official trm_hier6: K = 6): the j-th
                     update of a cycle (j from 0) replaces z_(j mod K) with f(z_0 + ... + x + y), and
                     y <- f(y + z_0 + ... + z_(K-1)); the carry holds the states side by side, (L, B, K*D)
    model.gradient   "one_step": back-propagate through the last z update and the y update only
                     (HRM's 1-step approximation, the paper's ablation); for trm, separate_nets, z_slots

Model code only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trm import TRM, Carry, TinyNetwork, TRMConfig


class PerUpdate(TRM):
    """TRM's cycle written with one method per update, so that a variant overrides only the update it
    changes. Computes exactly what TRM computes."""

    def z_update(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, j: int) -> torch.Tensor:
        """The j-th latent update of a cycle: z <- f(x + y + z)."""
        return self.net(z, x + y, self._rope())

    def y_update(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The answer update: y <- f(y + z)."""
        return self.net(y, z, self._rope())

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for j in range(self.config.n):
            z = self.z_update(x, y, z, j)
        return self.y_update(y, z), z


class OneStepGradient:
    """model.gradient "one_step", mixed into a PerUpdate class: the same values, with gradient
    through the last cycle's last z update and its y update only."""

    def deep_recursion(self, inputs: torch.Tensor, carry: Carry,
                       puzzle_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, z = carry.y, carry.z
        x = self.input_embedding(inputs, puzzle_ids).to(y.dtype)
        with torch.no_grad():
            for _ in range(self.config.T - 1):
                y, z = self.latent_recursion(x, y, z)
            for j in range(self.config.n - 1):                          # the last cycle's first n-1 z updates
                z = self.z_update(x, y, z, j)
        z = self.z_update(x, y, z, self.config.n - 1)                   # the two updates with gradient
        return self.y_update(y, z), z


class SeparateNets(PerUpdate):
    """f_L (self.net) for the z updates, f_H (self.net_y, num_layers blocks) for the y update."""

    def __init__(self, config: TRMConfig) -> None:
        super().__init__(config)
        self.net_y = TinyNetwork(config)
        # f_H right after f, as it was registered when it was a flag of TRM: the parameters keep their
        # order, so the optimizer state of checkpoints written then still fits
        names = list(self._modules)
        for name in names[names.index("net") + 1:-1]:                   # the heads, after net_y
            self._modules[name] = self._modules.pop(name)
        self.reset_parameters()                                         # again, now that f_H exists

    def y_update(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net_y(y, z, self._rope())


class SingleZ(TRM):
    """One latent s, carried where y is (official trm_singlez)."""

    def latent_recursion(self, x: torch.Tensor, s: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rope = self._rope()
        for _ in range(self.config.n):
            s = self.net(s, x, rope)                                    # s <- f(s + x)
        return self.net(s, None, rope), z                               # s <- f(s)


@dataclass
class ZSlotsConfig(TRMConfig):
    z_slots: int = 6                 # K: states of z (official trm_hier6: 6)

    def rules(self) -> list[tuple[str, bool, str]]:
        return [("z_slots", self.z_slots >= 1, "must be >= 1")]


class ZSlots(PerUpdate):
    """z as K states side by side along the last dimension; f reads their sum."""
    config_class = ZSlotsConfig

    def reset_parameters(self) -> None:
        width = self.config.z_slots * self.config.hidden_size          # z_init: one random vector per state
        if self.z_init.numel() != width:                                # (official L1_init..L6_init)
            self.z_init = torch.empty(width)
        super().reset_parameters()

    def z_total(self, z: torch.Tensor) -> torch.Tensor:
        """What f reads of z: the sum of the states, left to right (official)."""
        states = z.chunk(self.config.z_slots, dim=-1)
        total = states[0]
        for state in states[1:]:
            total = total + state
        return total

    def z_update(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, j: int) -> torch.Tensor:
        states = list(z.chunk(self.config.z_slots, dim=-1))
        states[j % self.config.z_slots] = self.net(self.z_total(z), x + y, self._rope())
        return torch.cat(states, dim=-1)

    def y_update(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(y, self.z_total(z), self._rope())


class OneStepTRM(OneStepGradient, PerUpdate):
    pass


class OneStepSeparateNets(OneStepGradient, SeparateNets):
    pass


class OneStepZSlots(OneStepGradient, ZSlots):
    pass


ONE_STEP = {TRM: OneStepTRM, SeparateNets: OneStepSeparateNets, ZSlots: OneStepZSlots}  # model.gradient one_step
