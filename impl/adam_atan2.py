"""AdamATan2 in plain PyTorch: the optimiser of the official TRM code, without its compiled extension.

Adam-atan2 (Everett et al., "Scaling Exponents Across Parameterizations and Optimizers",
arXiv 2407.05872) replaces Adam's m / (sqrt(v) + eps) by atan2(m, sqrt(v)), which is bounded and
needs no epsilon. The update follows imoneoi/adam-atan2 (the package the official code imports),
per parameter, at step t (counting from 1):

    p <- p * (1 - lr * weight_decay)                        decoupled weight decay, as AdamW
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    p <- p - (lr / (1 - beta1^t)) * atan2(m, sqrt(v) / sqrt(1 - beta2^t))

with no scale constants inside or outside atan2 (the paper's a and b are 1 there). Each step
moves a parameter by at most (lr / (1 - beta1^t)) * pi / 2 besides the decay. The arithmetic runs
in the parameter's dtype (this project keeps fp32 master weights).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


class AdamATan2(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-2) -> None:
        if not lr >= 0.0:
            raise ValueError(f"AdamATan2: lr must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamATan2: betas must be in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"AdamATan2: weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, weight_decay = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)     # m
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)  # v
                state["step"] += 1
                t = state["step"]
                m, v, g = state["exp_avg"], state["exp_avg_sq"], p.grad
                if weight_decay != 0:
                    p.mul_(1 - lr * weight_decay)
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** t
                bias_correction2 = 1 - beta2 ** t
                denom = v.sqrt().div_(math.sqrt(bias_correction2))
                p.add_(torch.atan2(m, denom), alpha=-lr / bias_correction1)
        return loss
