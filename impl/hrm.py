"""Hierarchical Reasoning Model (HRM), after "Hierarchical Reasoning Model" (Wang et al., 2025,
arXiv 2506.21734) as the official TRM repository implements it (models/recursive_reasoning/hrm.py),
on TRM's embedding, heads, carry, loop and evaluation. model.arch "hrm" selects it.

Two networks at two frequencies: a low-level f_L (self.net, num_layers blocks) and a high-level
f_H (self.net_H, H_layers blocks), both built from trm.py's post-norm blocks:

    repeat T times (official: H_cycles):
        repeat n times (official: L_cycles):  z_L <- f_L(z_L + z_H + x)
        z_H <- f_H(z_H + z_L)

One-step gradient: every call runs under torch.no_grad() except the last f_L and the last f_H
call (TRM differs: it back-propagates through the whole last cycle, and has one network). The
outputs and the Q head read z_H. The carry is trm.Carry with y = z_H and z = z_L (initialised
from the fixed random vectors y_init = H_init and z_init = L_init), detached between steps.

Halting is the original's Q-learning ACT (QLearningModel, shared with the transformer baseline):
the Q head gives two logits at position 0, q_halt and q_continue.
- A puzzle halts when q_halt > q_continue (with the loop's exploration and N_sup cap); the loop and
  predict see the halting logit q_halt - q_continue (> 0: halt).
- q_halt is trained by the loop's halting BCE against "the whole answer is right".
- q_continue is trained by BCE against a bootstrapped target: the Q values of the next supervision
  step, run from the new carry on the same puzzles without gradient, sigmoid(next q_halt) at the
  last step (N_sup), else sigmoid(max(next q_halt, next q_continue)); no replay buffer or target
  network, as official. That extra forward costs one more supervision step's forward per step.
This file holds model code only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trm import TRM, Carry, TinyNetwork, TRMConfig


@dataclass
class QTerms:
    """What Q-learning halting adds to a training step."""
    halt: torch.Tensor           # (B,) q_halt, trained towards "the whole answer is right"
    continue_loss: torch.Tensor  # scalar: BCE of q_continue against the bootstrapped target
    target: torch.Tensor         # (B,) the target, sigmoid of the next step's Q values (no gradient)


class QLearningModel(TRM):
    """TRM's embedding, carry and prediction with a two-logit Q head (halt, continue) and the
    bootstrapped continue target. Subclasses define deep_recursion(inputs, carry, puzzle_ids)."""
    q_outputs = 2

    def q_values(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output logits (B, seq_len, V), q_halt (B,) and q_continue (B,) from the state (L, B, D)."""
        p = self.config.n_prefix
        logits = self.output_head(state[p:]).transpose(0, 1)           # (B, seq_len, V)
        q = self.q_head(state[0] if p > 0 else state.mean(dim=0)).float()  # (B, 2)
        return logits, q[:, 0], q[:, 1]

    def heads(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output logits and the halting logit q_halt - q_continue (> 0: halt)."""
        logits, q_halt, q_continue = self.q_values(y)
        return logits, q_halt - q_continue

    def forward(self, inputs: torch.Tensor, carry: Carry, puzzle_ids: torch.Tensor | None = None,
                steps: torch.Tensor | None = None):
        """One supervision step. steps=None (prediction): (carry, logits, halting logit), as TRM.
        steps=(B,) supervision steps taken before this one (training): also the QTerms."""
        y, z = self.deep_recursion(inputs, carry, puzzle_ids)
        logits, q_halt, q_continue = self.q_values(y)
        new_carry = Carry(y.detach(), z.detach())
        if steps is None:
            return new_carry, logits, q_halt - q_continue
        with torch.no_grad():                                           # the next step's Q values
            next_y, _ = self.deep_recursion(inputs, new_carry, puzzle_ids)
            _, next_halt, next_continue = self.q_values(next_y)
            last = steps + 1 >= self.config.N_sup
            target = torch.sigmoid(torch.where(last, next_halt, torch.maximum(next_halt, next_continue)))
        continue_loss = F.binary_cross_entropy_with_logits(q_continue, target)
        return new_carry, logits, q_halt - q_continue, QTerms(q_halt, continue_loss, target)


@dataclass
class HRMConfig(TRMConfig):
    H_layers: int = 0                # blocks in f_H (0: num_layers, the blocks of f_L; official HRM: 4)

    def rules(self) -> list[tuple[str, bool, str]]:
        return [("H_layers", self.H_layers >= 0, "must be >= 0 (0: num_layers)")]


class HRM(QLearningModel):
    config_class = HRMConfig

    def __init__(self, config: HRMConfig) -> None:
        super().__init__(config)                                        # self.net is f_L
        self.net_H = TinyNetwork(config, config.H_layers or config.num_layers)  # f_H
        self.reset_parameters()                                         # again, now that f_H exists

    def deep_recursion(self, inputs: torch.Tensor, carry: Carry,
                       puzzle_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """T high-level cycles of n low-level updates; returns (z_H, z_L), with gradient through the
        last f_L and f_H calls only."""
        T, n, rope = self.config.T, self.config.n, self._rope()
        z_H, z_L = carry.y, carry.z
        x = self.input_embedding(inputs, puzzle_ids).to(z_H.dtype)
        with torch.no_grad():
            for cycle in range(T):
                last_cycle = cycle == T - 1
                for _ in range(n - 1 if last_cycle else n):             # the very last f_L call comes below
                    z_L = self.net(z_L, z_H + x, rope)
                if not last_cycle:
                    z_H = self.net_H(z_H, z_L, rope)
        z_L = self.net(z_L, z_H + x, rope)                              # 1-step gradient: these two calls only
        z_H = self.net_H(z_H, z_L, rope)
        return z_H, z_L
