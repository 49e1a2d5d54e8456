"""Train a TRM with a JEPA-style latent alignment term added to every supervision step.

    python impl/train_trm_jepa.py                      # default 6x6 data, runs/tiny_trm_sudoku_jepa/
    python impl/train_trm_jepa.py --config tiny.json   # JSON overrides (the JEPA keys are in "training")
    python impl/train_trm_jepa.py --resume             # continue from runs/<run_name>/last.pt

The idea (after I-JEPA / LLM-JEPA): the state the model reaches from the PUZZLE should predict, in
latent space, the state the same model reaches from the SOLUTION. Per supervision step:

    online branch:  (y, z) = deep_recursion(puzzle, carry)         # the ordinary TRM step
    target branch:  (y', z') = deep_recursion(solution, fresh carry)  # same embedding, same f, T cycles
    latent = mean over the batch of distance(predictor(pool(online state)), pool(target state))
    loss   = ce + halt_loss_weight * halt_bce + latent_loss_weight * latent

- The target branch sees the solution tokens (every cell filled) as its input x, starting from
  y_init / z_init, for ONE supervision step (T cycles, the first T-1 without gradient). With
  stopgrad_target (default) all of it runs under torch.no_grad(): a stop-gradient target, the
  role of JEPA's target encoder, here the online network itself (no EMA copy).
- The term is applied at EVERY supervision step of every puzzle in flight: the online state after
  k steps is pulled towards the target state after one step from scratch.
- pool: "mean" over the puzzle cells (prefix tokens excluded) or "cls" (the prefix token, position
  0, the one the halting head reads); the state is y (default) or z (latent_state).
- predictor: nn.Linear(D, D) created after all TRM parameters (so the TRM's initialisation is the
  plain script's for the same seed), initialised to the identity with zero bias; AdamW treats its
  weight like every other matrix (weight decay), its bias without decay.
- distance: "mse" is the squared L2 distance summed over D (with normalize_latent, the default,
  that is 2 - 2 cos, in [0, 4]); "cosine" is 1 - cos (LLM-JEPA).
- latent_loss_weight 0 skips the target branch entirely: the run then matches train_trm.py step
  for step (tested).

The loop, evaluation (the EMA model, which ignores the predictor), checkpoints and resume are
train_trm.py's; this file holds the JEPA config, model subclass, step function and glue only.
Checkpoints hold the predictor as "predictor.*" keys: load them into a plain TRM with
trm_state_dict(ckpt["ema"]).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_trm  # noqa: E402
from errors import ConfigError  # noqa: E402
from train_trm import Slots  # noqa: E402
from trm import LOSSES, TRM, Carry, TRMConfig  # noqa: E402

JEPA_TRAINING = {
    "variant": "jepa",               # marks runs of this script in config.json and checkpoints (fixed)
    "latent_loss_weight": 0.1,       # weight of the latent term in the loss (0: off, identical to train_trm.py)
    "latent_pool": "mean",           # mean (over puzzle cells, no prefix) | cls (the prefix token, position 0)
    "normalize_latent": True,        # L2-normalise both pooled vectors before the distance
    "stopgrad_target": True,         # the solution branch runs under torch.no_grad() (stop-gradient target)
    "latent_loss": "mse",            # mse (squared L2, summed over D) | cosine (1 - cos, as LLM-JEPA)
    "latent_state": "y",             # which carried state is aligned: y (answer) | z (latent)
}

RUN_CONFIG = copy.deepcopy(train_trm.RUN_CONFIG)  # model / data / training as in train_trm.py, plus:
RUN_CONFIG["training"]["run_name"] = "tiny_trm_sudoku_jepa"  # checkpoints and logs: <runs_dir>/<run_name>/
RUN_CONFIG["training"].update(JEPA_TRAINING)

POOLS = ("mean", "cls")
LATENT_LOSSES = ("mse", "cosine")
STATES = ("y", "z")


# ----------------------------------------------------------------------------------------------
# Configuration: the JEPA keys' values (types and unknown keys are train_trm.merge_config's job)


def check_jepa_config(config: dict, source: str = "config") -> None:
    """Values of the JEPA keys that have the right type but are impossible; names the dotted key."""
    t = config["training"]
    missing = [key for key in JEPA_TRAINING if key not in t]
    if missing:
        raise ConfigError(f"{source}: training.{missing[0]}: missing (merge overrides over "
                          f"train_trm_jepa.RUN_CONFIG, not train_trm.RUN_CONFIG)")
    weight = t["latent_loss_weight"]
    rules = [
        ("variant", t["variant"] == "jepa", "must be 'jepa' (it marks this script's runs)"),
        ("latent_loss_weight", math.isfinite(weight) and weight >= 0, "must be >= 0"),
        ("latent_pool", t["latent_pool"] in POOLS, f"must be one of {', '.join(POOLS)}"),
        ("latent_loss", t["latent_loss"] in LATENT_LOSSES, f"must be one of {', '.join(LATENT_LOSSES)}"),
        ("latent_state", t["latent_state"] in STATES, f"must be one of {', '.join(STATES)}"),
        ("latent_pool", t["latent_pool"] != "cls" or config["model"]["n_prefix"] >= 1,
         "needs model.n_prefix >= 1 (it reads the prefix token)"),
    ]
    for key, ok, why in rules:
        if not ok:
            raise ConfigError(f"{source}: training.{key}: {t[key]!r} {why}")


# ----------------------------------------------------------------------------------------------
# The model: TRM plus a predictor and a solution (target) branch


class TRMJEPA(TRM):
    """TRM whose forward can also return the JEPA latent term (pass targets=solution tokens)."""

    def __init__(self, config: TRMConfig, pool: str = "mean", normalize: bool = True,
                 stopgrad_target: bool = True, loss: str = "mse", state: str = "y") -> None:
        super().__init__(config)        # the TRM's parameters first: same init as train_trm.py
        for name, value, allowed in (("pool", pool, POOLS), ("loss", loss, LATENT_LOSSES), ("state", state, STATES)):
            if value not in allowed:
                raise ValueError(f"TRMJEPA {name}: {value!r} must be one of {', '.join(allowed)}")
        if pool == "cls" and config.n_prefix < 1:
            raise ValueError("TRMJEPA pool: 'cls' needs n_prefix >= 1")
        self.latent_pool, self.normalize, self.stopgrad_target = pool, normalize, stopgrad_target
        self.latent_loss, self.latent_state = loss, state
        D = config.hidden_size
        # skip_init: no draw from the global RNG (the identity init below needs none)
        self.predictor = nn.utils.skip_init(nn.Linear, D, D)
        self.init_predictor()

    @torch.no_grad()
    def init_predictor(self) -> None:
        """Special case: the predictor starts as the identity map (weight I, bias 0)."""
        self.predictor.weight.copy_(torch.eye(self.config.hidden_size))
        self.predictor.bias.zero_()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if "predictor" in self._modules:  # TRM.__init__ calls this before the predictor exists
            self.init_predictor()

    def pool(self, state: torch.Tensor) -> torch.Tensor:
        """(L, B, D) state -> (B, D) fp32: mean over the puzzle cells, or the prefix token (cls)."""
        if self.latent_pool == "cls":
            return state[0].float()
        return state[self.config.n_prefix:].float().mean(dim=0)

    def solution_state(self, targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Target branch: one supervision step (T cycles) on the solution tokens (B, seq_len) from
        a fresh carry; returns the chosen state (L, B, D), without gradient under stopgrad_target."""
        carry = self.initial_carry(targets.shape[0], targets.device, dtype)
        with torch.no_grad() if self.stopgrad_target else contextlib.nullcontext():
            y, z = self.deep_recursion(targets, carry)
        return y if self.latent_state == "y" else z

    def latent_vectors(self, online: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled (B, D) online and target vectors -> the pair the distance compares."""
        prediction = self.predictor(online)
        if self.normalize:
            prediction, target = F.normalize(prediction, dim=-1), F.normalize(target, dim=-1)
        return prediction, target

    def distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) per puzzle: squared L2 summed over D (mse) or 1 - cos (cosine)."""
        if self.latent_loss == "cosine":
            return 1.0 - F.cosine_similarity(prediction, target, dim=-1)
        return (prediction - target).pow(2).sum(dim=-1)

    def forward(self, inputs: torch.Tensor, carry: Carry, targets: torch.Tensor | None = None):
        """targets=None: exactly TRM.forward, (carry, logits, q_logit) (predict and evaluation use
        this). targets=(B, seq_len) solution tokens: (carry, logits, q_logit, latent), latent a scalar."""
        if targets is None:
            return super().forward(inputs, carry)
        y, z = self.deep_recursion(inputs, carry)                       # online branch
        logits, q_logit = self.heads(y)
        online = y if self.latent_state == "y" else z
        target = self.solution_state(targets, carry.y.dtype)            # target branch
        prediction, goal = self.latent_vectors(self.pool(online), self.pool(target))
        latent = self.distance(prediction, goal).mean()
        return Carry(y.detach(), z.detach()), logits, q_logit, latent


def trm_state_dict(state_dict: dict) -> dict:
    """A TRMJEPA state dict (ckpt["model"] or ckpt["ema"]) without the predictor: loads into a TRM."""
    return {k: v for k, v in state_dict.items() if not k.startswith("predictor.")}


# ----------------------------------------------------------------------------------------------
# Glue for train_trm.main: model builder and step function


def build_jepa(mcfg: TRMConfig, config: dict) -> TRMJEPA:
    t = config["training"]
    model = TRMJEPA(mcfg, pool=t["latent_pool"], normalize=t["normalize_latent"],
                    stopgrad_target=t["stopgrad_target"], loss=t["latent_loss"], state=t["latent_state"])
    model.ddp_find_unused = t["latent_loss_weight"] == 0  # the predictor gets no gradient then (torchrun)
    return model


def jepa_step(model: nn.Module, slots: Slots, config: dict) -> tuple:
    """One supervision step with the latent term: (carry, logits, q_logit, weight * latent, logs).
    model is the TRMJEPA, or DDP around it under torchrun: only its forward is called."""
    t = config["training"]
    weight = t["latent_loss_weight"]
    if weight == 0:  # no target branch at all: the same computation as plain TRM
        return train_trm.trm_step(model, slots, config)
    carry, logits, q_logit, latent = model(slots.inputs, slots.carry, targets=slots.labels)
    weighted = weight * latent
    with torch.no_grad():  # the loop's total loss, recomputed for the share (cheap: heads only)
        ce = LOSSES[t["loss"]](logits, slots.labels).mean()
        solved = (logits.argmax(dim=-1) == slots.labels).all(dim=1)
        halt = F.binary_cross_entropy_with_logits(q_logit, solved.float())
        total = ce + t["halt_loss_weight"] * halt + weighted
    return carry, logits, q_logit, weighted, {"latent_loss": latent.item(),
                                               "latent_share": (weighted / total).item()}


def main(config: dict, resume: bool = False, progress: bool = True) -> dict:
    """Train with a full config (this RUN_CONFIG merged with overrides); returns the final metrics."""
    check_jepa_config(config)
    return train_trm.main(config, resume=resume, progress=progress, build_model=build_jepa, step_fn=jepa_step)


def cli(argv: list[str] | None = None) -> dict:
    return train_trm.cli(argv, base=RUN_CONFIG, check=check_jepa_config, main_fn=main, doc=__doc__)


if __name__ == "__main__":
    cli()
