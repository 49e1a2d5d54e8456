"""What a training checkpoint holds, in one object: the model, its optimizer and EMA, the data
position, the halting draws, the examples in flight, the global RNG states and the loop's counters.

    state_dict()       collective under torchrun: every process hands in its slots' carry
    load_state_dict()  every process restores the same file, and keeps its own slice of the slots

A resumed run replays exactly: everything the loop reads between two steps is here.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import distributed
from checkpoint import load_weights, rng_state, set_rng_state
from errors import ConfigError
from puzzle_dataset import TrainSampler
from trm import Carry, TRMConfig


class EMA:
    """Exponential moving average of the weights, kept in a copy of the model."""

    def __init__(self, model: torch.nn.Module, decay: float, shared: list[torch.Tensor] = ()) -> None:
        """shared: tensors the copy uses as they are instead of copying them (the puzzle embeddings:
        trained outside the EMA, as official, so evaluation reads their current values)."""
        self.decay = decay
        self.model = copy.deepcopy(model, memo={id(t): t for t in shared}).eval()
        self.model.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


@dataclass
class Slots:
    """The examples in flight: tokens, labels, carry and supervision steps taken, per slot."""
    inputs: torch.Tensor   # (B, seq_len)
    labels: torch.Tensor   # (B, seq_len), IGNORE_LABEL where there is no target
    carry: Carry
    steps: torch.Tensor    # (B,)
    halted: torch.Tensor   # (B,) bool: this slot takes a new example before the next step
    puzzle_ids: torch.Tensor | None = None  # (B,) each example's puzzle identifier (its puzzle embedding)


def empty_slots(model: torch.nn.Module, B: int, G: int, seq_len: int, device: torch.device,
                dtype: torch.dtype) -> Slots:
    """G global slots, all halted (the first step fills them); this process's carry for its B."""
    return Slots(inputs=torch.zeros(G, seq_len, dtype=torch.long, device=device),
                 labels=torch.zeros(G, seq_len, dtype=torch.long, device=device),
                 carry=model.initial_carry(B, device, dtype),
                 steps=torch.zeros(G, dtype=torch.long, device=device),
                 halted=torch.ones(G, dtype=torch.bool, device=device),
                 puzzle_ids=torch.zeros(G, dtype=torch.long, device=device))


@dataclass
class RunState:
    """A training run between two steps. Every process holds the same global slots (inputs,
    labels, steps, halted) and the carry of its own slice, `mine`."""
    model: torch.nn.Module             # the unwrapped module: no DDP, no compile prefix in the keys
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    sampler: TrainSampler              # the data position
    halt_gen: torch.Generator          # the halting exploration draws (CPU, the same on every process)
    slots: Slots
    config: dict
    model_config: TRMConfig
    dataset: dict                      # the dataset's metadata (meta.to_json())
    d: distributed.Dist
    mine: slice                        # this process's slots
    step: int = 0
    best_exact: float = -1.0           # the best exact accuracy of an evaluation during training
    best_step: int = 0
    stale_evals: int = 0               # evaluations since the last improvement (patience)
    eval_time: float = 0.0             # seconds spent in evaluations during training
    elapsed: float = 0.0               # seconds of training so far, as every process agrees
    elapsed_before: float = 0.0        # seconds of training before this process started (resume)
    t_start: float = 0.0               # time.time() when this process's loop started
    saved_step: int | None = None      # step of the last last.pt this process wrote or resumed from (None: none)

    def start_clock(self) -> None:
        self.t_start = time.time()
        self.elapsed = self.elapsed_before

    def clock(self) -> float:
        """Seconds of training so far, on this process's clock."""
        return self.elapsed_before + time.time() - self.t_start

    def counters(self) -> dict:
        return {"step": self.step, "best_exact": self.best_exact, "best_step": self.best_step,
                "stale_evals": self.stale_evals, "eval_time": self.eval_time}

    def state_dict(self) -> dict:
        """The checkpoint. Collective: every process contributes its carry; only rank 0 uses the result."""
        y = distributed.gather_cat(self.slots.carry.y.float(), self.d, dim=1).cpu()   # (L, G, D)
        z = distributed.gather_cat(self.slots.carry.z.float(), self.d, dim=1).cpu()
        s = self.slots
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.model.state_dict() if self.ema is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            **self.counters(), "elapsed": self.clock(),
            "config": self.config, "model_config": vars(self.model_config), "dataset": self.dataset,
            "sampler": self.sampler.state_dict(), "halt_gen": self.halt_gen.get_state(), "rng": rng_state(),
            "slots": {"inputs": s.inputs.cpu(), "labels": s.labels.cpu(), "y": y, "z": z,
                      "steps": s.steps.cpu(), "halted": s.halted.cpu(), "puzzle_ids": s.puzzle_ids.cpu()},
        }

    def load_state_dict(self, ckpt: dict, path: Path, device: torch.device, dtype: torch.dtype) -> None:
        """Continue from a checkpoint of state_dict (path: where it came from, for the errors); the
        carry comes back in the compute dtype."""
        s = ckpt["slots"]
        G, B = len(self.slots.inputs), self.mine.stop - self.mine.start
        if s["inputs"].shape[0] != G:
            raise ConfigError(f"{path}: saved with a global batch of {s['inputs'].shape[0]} examples; "
                              f"this run has {G} (batch_size {B} x {self.d.world_size} processes)")
        load_weights(self.model, ckpt["model"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None:
            load_weights(self.ema.model, ckpt["ema"], path)
            self.ema.updates = ckpt["ema_updates"]
        self.sampler.load_state_dict(ckpt["sampler"])
        self.halt_gen.set_state(ckpt["halt_gen"])
        self.slots = Slots(s["inputs"].to(device), s["labels"].to(device),
                           Carry(s["y"][:, self.mine].to(device, dtype), s["z"][:, self.mine].to(device, dtype)),
                           s["steps"].to(device), s["halted"].to(device),
                           s.get("puzzle_ids", torch.zeros(G, dtype=torch.long)).to(device))
        self.step, self.best_exact, self.elapsed_before = ckpt["step"], ckpt["best_exact"], ckpt["elapsed"]
        self.saved_step = self.step
        self.best_step = ckpt.get("best_step", 0)          # absent from older checkpoints
        self.eval_time = ckpt.get("eval_time", 0.0)
        self.stale_evals = ckpt.get("stale_evals", 0)
        set_rng_state(ckpt["rng"])
