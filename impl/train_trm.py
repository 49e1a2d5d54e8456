"""Train a Tiny Recursive Model (TRM) on Sudoku with deep supervision.

    python impl/train_trm.py                      # default: generated 6x6 puzzles, a few minutes on CPU
    python impl/train_trm.py --config tiny.json   # JSON overrides, deep-merged over RUN_CONFIG
    python impl/train_trm.py --resume             # continue from runs/<run_name>/last.pt

Training follows the official code's batching of deep supervision: the batch is a set of B slots,
each holding one puzzle and its carry (y, z). Every optimizer step runs one supervision step on
all slots; a puzzle leaves its slot when the halting head says "done" (with exploration) or after
N_sup steps, and the next puzzle from the stream takes its place with a fresh carry.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data_sudoku  # noqa: E402
import distributed  # noqa: E402
from adam_atan2 import AdamATan2  # noqa: E402
import rundir  # noqa: E402
from checkpoint import (load_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state,  # noqa: E402
                        write_text_atomic)
from config import check_resume_config, check_rules, load_config, merge_config  # noqa: E402
from device import DTYPES, pick_device, pick_dtype  # noqa: E402
from errors import ConfigError, Interrupted, NonFiniteLoss, run_cli  # noqa: E402
from evaluate import evaluate  # noqa: E402  (metrics shared with impl/evaluate.py)
from trm import LOSSES, TRM, Carry, TRMConfig, count_parameters, swiglu_width  # noqa: E402

RUN_CONFIG = {
    "model": {
        "hidden_size": 128,          # D (paper: 512)
        "num_layers": 2,             # blocks in the tiny network f (paper: 2)
        "num_heads": 2,              # attention heads (unused with mlp_t)
        "expansion": 4.0,            # SwiGLU width factor
        "T": 2,                      # T in paper (3): cycles per supervision step, the first T-1 without grad
        "n": 3,                      # n in paper (6): latent updates z <- f(x + y + z) per cycle
        "N_sup": 16,                 # N_sup in paper: max supervision steps per puzzle
        "halt_exploration_prob": 0.1,  # chance a puzzle is held for a random minimum number of steps
        "pos_encoding": "none",      # rope | learned | none (mlp_t needs none: it is position-aware)
        "mlp_t": True,               # MLP across cells instead of attention (TRM-MLP, the paper's best on Sudoku)
        "n_prefix": 1,               # prefix positions before the cells (official: 16); Q head reads the first
        "prefix_learned": "first",   # first (official: position 0 learned, the rest zeros) | all (every one learned)
        "mlp_t_norm": "sequence",    # mlp_t's first norm: sequence (official: over positions, per channel) | hidden
    },
    "data": {
        "source": "generated",       # builtin | generated | hf
        "use_builtin_sample": False,  # True: train on the handful of embedded 9x9 puzzles (sanity runs)
        "grid_size": 6,              # generated: 4, 6 or 9 (builtin and hf are 9x9)
        "n_train": 3000,             # generated: training puzzles
        "n_test": 500,               # generated: held-out puzzles (no solution grid shared with training)
        "givens": [14, 20],          # generated: range of givens per puzzle
        "min_rating": 0,             # solver guesses (generated) or CSV rating (hf) at least this
        "max_rating": -1,            # generated: solver guesses at most this (-1: no limit)
        "repo_id": "sapientinc/sudoku-extreme",  # hf: dataset repo in the sudoku-extreme CSV layout
        "splits": ["train", "test"],  # hf: CSV files read as the train and test split
        "train_subset": 1000,        # hf: seeded random subsample of train.csv (0: all)
        "test_subset": 1000,         # hf: seeded random subsample of test.csv (0: all)
        "force_download": False,     # hf: download again and rebuild the cache
        "skip_bad_rows": False,      # hf: skip malformed CSV rows with a warning instead of stopping
        "data_dir": "data",          # where generated sets and hf caches (.npz) are kept
        "augment": True,             # random validity-preserving relabel/permute/transpose per batch
        "seed": 0,                   # seed of the generated puzzles and of the hf subsample
    },
    "training": {
        "run_name": "tiny_trm_impl_sudoku",  # checkpoints and logs go to <runs_dir>/<run_name>/
        "runs_dir": "runs",          # parent folder of run folders
        "seed": 0,                   # seed of init, data order, augmentation and halting exploration
        "batch_size": 64,            # puzzles in flight (slots)
        "max_steps": 700,            # optimizer steps; each is one supervision step for every slot
        "time_limit_min": 0.0,       # stop (and save) after this many minutes; 0: no limit
        "lr": 2e-3,                  # peak learning rate (paper: 1e-4 at batch 768)
        "lr_min_ratio": 1.0,         # cosine decay to lr * this after warmup (1.0: constant, as official)
        "warmup_steps": 50,          # linear warmup steps (paper: 2000)
        "optimizer": "adamw",        # adamw | adam_atan2 (official: AdamATan2, pure PyTorch here, no epsilon)
        "weight_decay": 0.1,         # decoupled weight decay (paper: 1.0)
        "decay_all": False,          # weight decay on every parameter (official) instead of on matrices only
        "beta1": 0.9,                # Adam beta1 (paper: 0.9)
        "beta2": 0.95,               # Adam beta2 (paper: 0.95)
        "grad_clip": 1.0,            # clip the gradient norm to this (0: off)
        "loss": "softmax",           # softmax | stablemax (official default) cross entropy
        "halt_loss_weight": 0.5,     # weight of the halting BCE, as in the official code
        "ema": True,                 # keep an EMA of the weights for evaluation and best.pt
        "ema_decay": 0.999,          # EMA decay (paper: 0.999), warmed up as min(decay, (1+t)/(10+t))
        "eval_every": 100,           # held-out evaluation every this many steps (and at the end)
        "ckpt_every": 0,             # also save last.pt every this many steps (0: at evaluations only)
        "eval_batch_size": 256,      # puzzles per evaluation batch
        "eval_N_sup": 0,             # supervision steps at evaluation (0: model N_sup)
        "eval_limit": 0,             # evaluate on at most this many held-out puzzles (0: all)
        "log_every": 50,             # write a log line every this many steps
        "device": "auto",            # auto | cpu | cuda | cuda:N | mps
        "dtype": "auto",             # auto | float32 | bfloat16 (compute dtype of the recursion)
        "compile": False,            # torch.compile the tiny network
    },
}


# ----------------------------------------------------------------------------------------------
# Configuration: JSON overrides, deep-merged and checked against RUN_CONFIG


def check_config(config: dict, source: str = "config") -> None:
    """Values that have the right type but are impossible."""
    m, d, t = config["model"], config["data"], config["training"]
    rules = [
        ("training.batch_size", t["batch_size"] >= 1, "must be >= 1"),
        ("training.max_steps", t["max_steps"] >= 0, "must be >= 0"),
        ("training.lr", t["lr"] > 0, "must be > 0"),
        ("training.warmup_steps", t["warmup_steps"] >= 0, "must be >= 0"),
        ("training.ema_decay", 0.0 <= t["ema_decay"] < 1.0, "must be in [0, 1)"),
        ("training.eval_every", t["eval_every"] >= 1, "must be >= 1"),
        ("training.ckpt_every", t["ckpt_every"] >= 0, "must be >= 0"),
        ("training.time_limit_min", t["time_limit_min"] >= 0, "must be >= 0"),
        ("training.grad_clip", t["grad_clip"] >= 0, "must be >= 0"),
        ("training.lr_min_ratio", 0.0 <= t["lr_min_ratio"] <= 1.0, "must be in [0, 1]"),
        ("training.log_every", t["log_every"] >= 1, "must be >= 1"),
        ("training.eval_batch_size", t["eval_batch_size"] >= 1, "must be >= 1"),
        ("training.loss", t["loss"] in LOSSES, f"must be one of {', '.join(LOSSES)}"),
        ("training.optimizer", t["optimizer"] in ("adamw", "adam_atan2"), "must be adamw or adam_atan2"),
        ("training.dtype", t["dtype"] in DTYPES, f"must be one of {', '.join(DTYPES)}"),
    ]
    check_rules(config, rules, source)
    try:
        rundir.check_run_name(t["run_name"])
        model_config(config, seq_len=1, vocab_size=2)
        data_sudoku.check_data_config(d)
    except ValueError as e:  # all name the key: "model.T: 0 must be >= 1"
        raise ConfigError(f"{source}: {e}") from None


def model_config(config: dict, seq_len: int, vocab_size: int) -> TRMConfig:
    return TRMConfig(vocab_size=vocab_size, seq_len=seq_len, **config["model"])


# ----------------------------------------------------------------------------------------------
# Data stream: a seeded, resumable sequence of training puzzles


class PuzzleStream:
    """Hands out training puzzles in seeded random order, epoch after epoch, augmented on the fly.

    Its whole state (order, position, generator) goes into checkpoints, so a resumed run sees
    exactly the puzzles an uninterrupted one would.
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, size: int, augment: bool, seed: int) -> None:
        self.inputs, self.labels, self.size, self.augment = inputs, labels, size, augment
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(inputs))
        self.pos = 0
        self.epoch = 0

    def next(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx = []
        while len(idx) < k:
            if self.pos == len(self.order):
                self.order = self.rng.permutation(len(self.inputs))
                self.pos = 0
                self.epoch += 1
            take = min(k - len(idx), len(self.order) - self.pos)
            idx.extend(self.order[self.pos:self.pos + take])
            self.pos += take
        inputs, labels = self.inputs[idx], self.labels[idx]
        if self.augment:
            inputs, labels = data_sudoku.augment(inputs, labels, self.size, self.rng)
        return inputs, labels

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": torch.from_numpy(self.order.copy()),
                "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = state["order"].numpy()
        self.pos, self.epoch = state["pos"], state["epoch"]


# ----------------------------------------------------------------------------------------------
# EMA, schedule, evaluation, checkpoints


class EMA:
    """Exponential moving average of the weights, kept in a copy of the model."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)


def memory_estimate(mcfg: TRMConfig, batch: int, dtype: torch.dtype) -> tuple[int, int]:
    """A lower bound, from the shapes alone, on the bytes one training process needs: parameters
    (the SwiGLUs, the mixer, embedding and head) with their gradient, two Adam moments and the EMA
    copy; and the activations kept for the backward of one cycle (n + 1 calls of f): per call and
    block at least the block input, two norm outputs and the SwiGLU's 3 x width values per position."""
    D, L, V = mcfg.hidden_size, mcfg.total_len, mcfg.vocab_size
    W = swiglu_width(D, mcfg.expansion)
    mixer = 3 * L * swiglu_width(L, mcfg.expansion) if mcfg.mlp_t else 4 * D * D
    params = mcfg.num_layers * (3 * D * W + mixer) + 2 * V * D
    per_call = mcfg.num_layers * batch * L * (3 * D + 3 * W)
    activations = (mcfg.n + 1) * per_call * torch.tensor([], dtype=dtype).element_size()
    return 5 * 4 * params, activations


def machine_memory(device: torch.device) -> int | None:
    """Bytes of memory on the device (CPU: physical memory), or None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


def check_memory(mcfg: TRMConfig, batch: int, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse, before allocating, a model and batch that cannot fit in the machine's memory."""
    params, activations = memory_estimate(mcfg, batch, dtype)
    have = machine_memory(device)
    if have is not None and params + activations > have:
        gib = 2 ** 30
        raise ConfigError(
            f"model.hidden_size {mcfg.hidden_size}, training.batch_size {batch}: this run needs at least "
            f"{(params + activations) / gib:,.1f} GiB ({params / gib:,.1f} GiB for parameters with gradients, Adam "
            f"and EMA, {activations / gib:,.1f} GiB of activations per supervision step), more than the "
            f"{have / gib:,.1f} GiB of this {device.type}; lower them")


def lr_at(step: int, t: dict) -> float:
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    span = max(1, t["max_steps"] - t["warmup_steps"])
    progress = min(1.0, (step - t["warmup_steps"]) / span)
    floor = t["lr_min_ratio"]
    return t["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


# Keys that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("training.max_steps", "training.time_limit_min", "training.eval_every", "training.ckpt_every",
                     "training.log_every", "training.eval_batch_size", "training.eval_N_sup", "training.eval_limit",
                     "training.device", "training.compile", "training.runs_dir", "data.data_dir",
                     "data.force_download")


# ----------------------------------------------------------------------------------------------
# Training


def trm_step(model: torch.nn.Module, slots: "Slots", config: dict) -> tuple:
    """One supervision step of plain TRM: (new carry, logits, halting logit, extra loss, extra logs).
    Scripts built on this loop (train_trm_jepa.py) pass their own step and model builder to main()."""
    carry, logits, q_logit = model(slots.inputs, slots.carry)
    return carry, logits, q_logit, None, {}


def build_trm(mcfg: TRMConfig, config: dict) -> torch.nn.Module:
    return TRM(mcfg)


@dataclass
class Slots:
    """The puzzles in flight: tokens, labels, carry and supervision steps taken, per slot."""
    inputs: torch.Tensor   # (B, seq_len)
    labels: torch.Tensor   # (B, seq_len)
    carry: Carry
    steps: torch.Tensor    # (B,)
    halted: torch.Tensor   # (B,) bool: this slot takes a new puzzle before the next step


WINDOW_KEYS = ("loss", "ce", "halt", "halt_target", "n", "done", "exact", "token", "steps")  # per log interval


def print0(*args) -> None:
    """Print on the main process only (rank 0 under torchrun), without breaking the progress bar."""
    if os.environ.get("RANK", "0") == "0":
        tqdm.write(" ".join(str(a) for a in args))


def main(config: dict, resume: bool = False, progress: bool = True,
         build_model=build_trm, step_fn=trm_step) -> dict:
    """Train with a full config (RUN_CONFIG merged with overrides). Returns the final metrics.

    build_model(model_config, config) makes the model (a TRM or a subclass); step_fn(model, slots,
    config) runs one supervision step (see trm_step); both let other scripts reuse this loop.
    Under torchrun, each process trains its slice of the global batch (see impl/distributed.py)."""
    check_config(config)
    d = distributed.from_env()
    device, device_why = pick_device(config["training"]["device"], d.local_rank)
    run_dir = Path(config["training"]["runs_dir"]) / config["training"]["run_name"]
    lock = rundir.RunLock(run_dir) if d.is_main else None  # only rank 0 writes in the run folder
    distributed.init(d, device)
    try:
        if lock is not None:
            rundir.make_run_dir(run_dir)
            lock.acquire()
            if lock.note:
                print0(lock.note)
            previous = None if resume else rundir.keep_previous_run(run_dir)  # before any work
            if previous is not None:
                print0(f"{run_dir} held a run: its files were moved to {previous}/ (use --resume to continue a run)")
        with stop_signals() as stop:
            result = train(config, resume, progress and d.is_main, build_model, step_fn, d, device, device_why, stop)
        distributed.barrier(d)  # no process tears the group down while another still uses it
        return result
    finally:
        if lock is not None:
            lock.release()
        distributed.shutdown()


class StopFlag:
    """SIGINT/SIGTERM handler. Once armed (the training loop has started), a signal only sets
    signum: the loop then saves last.pt and stops. Before that, they act at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False

    def __call__(self, signum: int, frame) -> None:
        if not self.armed:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum


@contextlib.contextmanager
def stop_signals():
    """Install a StopFlag for SIGINT and SIGTERM; the previous handlers come back afterwards."""
    stop = StopFlag()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def train(config: dict, resume: bool, progress: bool, build_model, step_fn, d: distributed.Dist,
          device: torch.device, device_why: str, stop: StopFlag) -> dict:
    m_cfg, d_cfg, t_cfg = config["model"], config["data"], config["training"]
    run_dir = Path(t_cfg["runs_dir"]) / t_cfg["run_name"]
    dtype, dtype_why = pick_dtype(t_cfg["dtype"], device)
    print0(f"device: {device} ({device_why}); dtype: {str(dtype).replace('torch.', '')} ({dtype_why}); "
           f"threads: {torch.get_num_threads()}; processes: {d.world_size}")

    if not d.is_main:
        distributed.barrier(d)  # rank 0 builds the data cache first, then the others read it
    data = data_sudoku.load_sudoku(d_cfg, seed=d_cfg["seed"], progress=progress)
    if d.is_main:
        distributed.barrier(d)
    print0(f"data: {data.description}")
    if t_cfg["batch_size"] * d.world_size > len(data.train_inputs):
        print0(f"note: training.batch_size {t_cfg['batch_size']} x {d.world_size} process(es) is more than the "
               f"{len(data.train_inputs)} training puzzles: the same puzzles will be in flight more than once")
    mcfg = model_config(config, seq_len=data.size * data.size, vocab_size=data_sudoku.vocab_size(data.size))
    check_memory(mcfg, t_cfg["batch_size"], dtype, device)

    random.seed(t_cfg["seed"])
    np.random.seed(t_cfg["seed"])
    torch.manual_seed(t_cfg["seed"])
    model = build_model(mcfg, config).to(device)
    print0(f"model: {count_parameters(model):,} parameters, {'mlp_t' if mcfg.mlp_t else 'attention'}, "
           f"D={mcfg.hidden_size}, T={mcfg.T}, n={mcfg.n}, N_sup={mcfg.N_sup}")
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if t_cfg["decay_all"] or (p.ndim >= 2 and name != "prefix") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": t_cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer_class = AdamATan2 if t_cfg["optimizer"] == "adam_atan2" else torch.optim.AdamW
    optimizer = optimizer_class(groups, lr=t_cfg["lr"], betas=(t_cfg["beta1"], t_cfg["beta2"]))
    ema = EMA(model, t_cfg["ema_decay"]) if t_cfg["ema"] else None
    if t_cfg["compile"]:
        model.net.compile()
    # DDP averages gradients over processes; checkpoints and EMA use the unwrapped model.
    # A model whose step may leave parameters unused (JEPA with weight 0) says so in ddp_find_unused.
    trained = (torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=getattr(model, "ddp_find_unused", False)) if d.enabled else model)
    loss_fn = LOSSES[t_cfg["loss"]]
    # Every process runs the same stream and halting draws over the global batch, and keeps its slice.
    stream = PuzzleStream(data.train_inputs, data.train_labels, data.size, d_cfg["augment"], t_cfg["seed"])
    halt_gen = torch.Generator().manual_seed(t_cfg["seed"])

    B, S = t_cfg["batch_size"], mcfg.seq_len             # B puzzles per process
    G = B * d.world_size                                  # global batch
    mine = slice(d.rank * B, (d.rank + 1) * B)            # this process's slots
    slots = Slots(inputs=torch.zeros(G, S, dtype=torch.long, device=device),
                  labels=torch.zeros(G, S, dtype=torch.long, device=device),
                  carry=model.initial_carry(B, device, dtype),
                  steps=torch.zeros(G, dtype=torch.long, device=device),
                  halted=torch.ones(G, dtype=torch.bool, device=device))
    step, best_exact, elapsed_before = 0, -1.0, 0.0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    if resume:
        ckpt = load_checkpoint(last_path)
        for change in check_resume_config(ckpt["config"], config, last_path, RESUMABLE_CHANGES):
            print0(f"resume: {change}")
        s = ckpt["slots"]
        if s["inputs"].shape[0] != G:
            raise ConfigError(f"{last_path}: saved with a global batch of {s['inputs'].shape[0]} puzzles; "
                              f"this run has {G} (batch_size {B} x {d.world_size} processes)")
        load_weights(model, ckpt["model"], last_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None:
            load_weights(ema.model, ckpt["ema"], last_path)
            ema.updates = ckpt["ema_updates"]
        stream.load_state_dict(ckpt["stream"])
        halt_gen.set_state(ckpt["halt_gen"])
        slots = Slots(s["inputs"].to(device), s["labels"].to(device),
                      Carry(s["y"][:, mine].to(device, dtype), s["z"][:, mine].to(device, dtype)),
                      s["steps"].to(device), s["halted"].to(device))
        step, best_exact, elapsed_before = ckpt["step"], ckpt["best_exact"], ckpt["elapsed"]
        set_rng_state(ckpt["rng"])
        print0(f"resumed from {last_path} at step {step} (best exact {best_exact:.4f})")
    elif d.is_main:
        resolved = {**config, "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                           "numpy": np.__version__}, "processes": d.world_size}
        write_text_atomic(run_dir / "config.json", json.dumps(resolved, indent=2) + "\n")
        print0("config:", json.dumps(config))

    log_path = run_dir / "log.jsonl"
    if resume and d.is_main and log_path.exists():  # records after the checkpoint will be written again
        kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step]
        write_text_atomic(log_path, "".join(line + "\n" for line in kept))

    def log(record: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def checkpoint_state() -> dict:
        """Collective: every process contributes its carry; only rank 0 uses the result."""
        y = distributed.gather_cat(slots.carry.y.float(), d, dim=1).cpu()   # (L, G, D)
        z = distributed.gather_cat(slots.carry.z.float(), d, dim=1).cpu()
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.model.state_dict() if ema is not None else None,
            "ema_updates": ema.updates if ema is not None else 0,
            "step": step, "best_exact": best_exact, "elapsed": elapsed_before + (time.time() - t_start),
            "config": config, "model_config": vars(mcfg), "data_size": data.size,
            "stream": stream.state_dict(), "halt_gen": halt_gen.get_state(), "rng": rng_state(),
            "slots": {"inputs": slots.inputs.cpu(), "labels": slots.labels.cpu(), "y": y, "z": z,
                      "steps": slots.steps.cpu(), "halted": slots.halted.cpu()},
        }

    eval_model = ema.model if ema is not None else model
    eval_N_sup = t_cfg["eval_N_sup"] or mcfg.N_sup
    limit = t_cfg["eval_limit"] or len(data.test_inputs)
    test_inputs, test_labels = data.test_inputs[:limit], data.test_labels[:limit]

    def run_eval() -> dict:
        return evaluate(eval_model, test_inputs, test_labels, eval_N_sup, t_cfg["eval_batch_size"], device, dtype)

    window = dict.fromkeys(WINDOW_KEYS, 0)
    t_start = time.time()
    time_limit = t_cfg["time_limit_min"] * 60
    metrics: dict = {}
    model.train()
    stop.armed = True
    bar = tqdm(total=t_cfg["max_steps"], initial=step, desc="train", disable=not progress, dynamic_ncols=True)
    while step < t_cfg["max_steps"]:
        # 1. Puzzles that halted leave; the stream fills their slots with a fresh carry.
        if bool(slots.halted.any()):
            idx = slots.halted.nonzero().squeeze(1)
            new_inputs, new_labels = stream.next(len(idx))
            slots.inputs[idx] = torch.from_numpy(new_inputs).long().to(device)
            slots.labels[idx] = torch.from_numpy(new_labels).long().to(device)
            slots.carry = model.reset_carry(slots.carry, slots.halted[mine])
            slots.steps = torch.where(slots.halted, 0, slots.steps)

        # 2. Learning rate.
        lr = lr_at(step, t_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # 3. One supervision step on this process's slots: forward through T cycles, backward
        #    through the last one.
        local = Slots(slots.inputs[mine], slots.labels[mine], slots.carry, slots.steps[mine], slots.halted[mine])
        carry, logits, q_logit, extra_loss, extra_logs = step_fn(trained, local, config)
        ce = loss_fn(logits, local.labels).mean()
        with torch.no_grad():
            hits = logits.argmax(dim=-1) == local.labels
            solved = hits.all(dim=1)
        halt_loss = F.binary_cross_entropy_with_logits(q_logit, solved.float())
        loss = ce + t_cfg["halt_loss_weight"] * halt_loss
        if extra_loss is not None:
            loss = loss + extra_loss
        finite = bool(torch.isfinite(loss))
        if d.enabled:  # every process stops together
            finite = bool(distributed.mean(torch.tensor(float(finite)), d) == 1.0)
        if not finite:
            saved = f"last good checkpoint: {last_path}" if last_path.exists() else "no checkpoint was written yet"
            raise NonFiniteLoss(f"loss is {loss.item()} at step {step + 1} (not finite); training stopped "
                                     f"before the update, nothing was saved over the checkpoints; {saved}")
        loss.backward()
        if t_cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t_cfg["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        step += 1

        # 4. Halting, over the global batch: stop at N_sup, or when the Q head says "correct",
        #    unless exploration holds the puzzle for a random minimum of 2..N_sup steps (official ACT rule).
        with torch.no_grad():
            slots.carry = carry
            q_all = distributed.gather_cat(q_logit.detach().float(), d)
            solved_all = distributed.gather_cat(solved, d)
            token_all = distributed.gather_cat(hits.float().mean(dim=1), d)
            slots.steps = slots.steps + 1
            halted = slots.steps >= mcfg.N_sup
            if mcfg.N_sup > 1:
                explore = torch.rand(G, generator=halt_gen) < mcfg.halt_exploration_prob
                min_steps = explore * torch.randint(2, mcfg.N_sup + 1, (G,), generator=halt_gen)
                halted = (halted | (q_all > 0)) & (slots.steps >= min_steps.to(device))
            slots.halted = halted
            names = sorted(extra_logs)
            scalars = torch.tensor([loss.item(), ce.item(), halt_loss.item()] + [float(extra_logs[k]) for k in names])
            scalars = distributed.mean(scalars, d).tolist()
            for key, value in zip(["loss", "ce", "halt"] + names, scalars):
                window[key] = window.get(key, 0.0) + value
            window["halt_target"] += solved_all.float().mean().item()
            window["n"] += 1
            window["done"] += int(halted.sum())
            window["exact"] += int((solved_all & halted).sum())
            window["token"] += float(token_all[halted].sum())
            window["steps"] += int(slots.steps[halted].sum())

        bar.update(1)
        elapsed = elapsed_before + time.time() - t_start
        out_of_time = time_limit > 0 and elapsed >= time_limit
        stopping = stop.signum is not None
        if d.enabled:  # every process must stop at the same step
            flags = distributed.mean(torch.tensor([float(out_of_time), float(stopping)]), d)
            out_of_time, stopping = bool(flags[0] > 0), bool(flags[1] > 0)
        if d.is_main and (step % t_cfg["log_every"] == 0 or step == t_cfg["max_steps"] or out_of_time):
            n, done = window["n"], max(1, window["done"])
            extra = [k for k in window if k not in WINDOW_KEYS]
            record = {"step": step, "time_s": round(elapsed, 1), "lr": lr,
                      "loss": window["loss"] / n, "ce_loss": window["ce"] / n, "halt_loss": window["halt"] / n,
                      "halt_target": window["halt_target"] / n, "train_token_acc": window["token"] / done,
                      "train_exact_acc": window["exact"] / done, "avg_steps": window["steps"] / done,
                      "finished": window["done"], **{k: window[k] / n for k in extra}}
            bar.set_postfix(loss=f"{record['loss']:.3f}", exact=f"{record['train_exact_acc']:.3f}")
            print0(f"step {step:6d} | loss {record['loss']:.4f} (ce {record['ce_loss']:.4f}, halt "
                   f"{record['halt_loss']:.4f}{''.join(f', {k} {record[k]:.4f}' for k in extra)}) | train token "
                   f"{record['train_token_acc']:.3f} exact {record['train_exact_acc']:.3f} | halt target "
                   f"{record['halt_target']:.3f} | steps {record['avg_steps']:.1f} | {elapsed:.0f}s")
            log({"kind": "train", **record})
        if step % t_cfg["log_every"] == 0 or step == t_cfg["max_steps"] or out_of_time:
            window = dict.fromkeys(WINDOW_KEYS, 0)

        if step % t_cfg["eval_every"] == 0 or step == t_cfg["max_steps"] or out_of_time:
            state = checkpoint_state()  # collective: all processes take part
            if d.is_main:
                metrics = run_eval()
                improved = metrics["exact_acc"] > best_exact
                best_exact = state["best_exact"] = max(best_exact, metrics["exact_acc"])
                print0(f"eval {step:6d} | token {metrics['token_acc']:.4f} blank {metrics['blank_acc']:.4f} "
                       f"exact {metrics['exact_acc']:.4f} halt {metrics['halt_acc']:.4f} "
                       f"(best exact {best_exact:.4f}, {eval_N_sup} steps, {metrics['n']} puzzles)")
                log({"kind": "eval", "step": step, "time_s": round(elapsed_before + time.time() - t_start, 1),
                     **metrics})
                if improved:
                    save_checkpoint(best_path, state)
                save_checkpoint(last_path, state)
        elif stopping or (t_cfg["ckpt_every"] and step % t_cfg["ckpt_every"] == 0):
            state = checkpoint_state()
            if d.is_main:
                save_checkpoint(last_path, state)
        if stopping:
            bar.close()
            signum = stop.signum or signal.SIGTERM  # None: the signal reached another process
            raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; saved {last_path} "
                              f"(continue with --resume)", signum)
        if out_of_time:
            print0(f"time limit of {t_cfg['time_limit_min']} min reached at step {step}")
            break
    bar.close()
    if d.is_main and not metrics:  # nothing left to train (e.g. resuming a finished run)
        metrics = run_eval()
    total_time = elapsed_before + time.time() - t_start
    result = {**metrics, "step": step, "best_exact_acc": best_exact, "time_s": total_time, "run_dir": str(run_dir)}
    if d.is_main:
        print0(f"done: step {step}, held-out token {metrics['token_acc']:.4f} exact {metrics['exact_acc']:.4f} "
               f"(best {best_exact:.4f}), {total_time:.0f}s; checkpoints in {run_dir}")
    return result


def parse_args(argv: list[str] | None = None, doc: str | None = __doc__) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file deep-merged over RUN_CONFIG (e.g. tiny.json)")
    parser.add_argument("--resume", action="store_true",
                        help="continue <runs_dir>/<run_name>/last.pt (without --config: with the config saved in it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None, base: dict = RUN_CONFIG, check=None, main_fn=None,
        doc: str | None = __doc__) -> dict:
    """Command line of a training script: --config over base, checks (plus check(config, source)
    for a variant's own keys), then main_fn (default: this file's main). Errors a user can fix end
    in one line `error: ...` and exit status 1; SIGINT/SIGTERM save last.pt and exit 128+signal."""
    args = parse_args(argv, doc)

    def run() -> dict:
        source = args.config or "RUN_CONFIG"
        if args.resume and not args.config:  # continue the run with the config it was started with
            path = Path(base["training"]["runs_dir"]) / base["training"]["run_name"] / "last.pt"
            source = str(path)
            config = merge_config(base, load_checkpoint(path)["config"], source)
        else:
            config = load_config(args.config, base) if args.config else copy.deepcopy(base)
        check_config(config, source)
        if check is not None:
            check(config, source)
        return (main_fn or main)(config, resume=args.resume, progress=not args.no_progress)

    return run_cli(run)


if __name__ == "__main__":
    cli()
