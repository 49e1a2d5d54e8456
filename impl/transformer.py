"""Direct prediction: a non-recursive transformer baseline, after the official TRM repository's
transformers_baseline.py, on TRM's embedding, heads, loop and evaluation. model.arch "transformer".

One network of `depth` post-norm blocks (trm.py's; default num_layers * T * (n + 1), as many
block calls as one TRM cycle-set makes) runs once per supervision step, all of it with gradient:

    y <- net(y + x)

There is no recursion inside a step. Deep supervision and ACT stay as in the official baseline:
the state y (official z_H, initialised from a fixed random vector) is carried, detached, from one
supervision step to the next, and halting is HRM's Q-learning (hrm.QLearningModel). The carry's z
is unused (it stays z_init). N_sup = 1 trains and evaluates a plain one-pass model.
This file holds model code only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm import QLearningModel
from trm import Carry, TRMConfig


@dataclass
class TransformerConfig(TRMConfig):
    depth: int = 0                   # blocks of the one network (0: num_layers * T * (n + 1); official 8)

    def rules(self) -> list[tuple[str, bool, str]]:
        return [("depth", self.depth >= 0, "must be >= 0 (0: num_layers * T * (n + 1))")]

    @property
    def f_layers(self) -> int:
        return self.depth or self.num_layers * self.T * (self.n + 1)


class DirectTransformer(QLearningModel):
    config_class = TransformerConfig

    def deep_recursion(self, inputs: torch.Tensor, carry: Carry,
                       puzzle_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass of the deep network from the carried y; z is handed on unchanged."""
        x = self.input_embedding(inputs, puzzle_ids).to(carry.y.dtype)
        return self.net(carry.y, x, self._rope()), carry.z
