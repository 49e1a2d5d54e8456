"""The deep-supervision training loop that the training scripts share (train_trm.py, train_trm_jepa.py).

Training follows the official code's batching of deep supervision: the batch is a set of slots,
each holding one example of a puzzle and its carry (y, z). Every optimizer step runs one
supervision step on all slots; an example leaves its slot when the halting head says "done"
(with exploration) or after N_sup steps, and the next one from the sampler takes its place with a
fresh carry. A script supplies the model (build_model) and the supervision step (step_fn); the
data, the loss, evaluation, checkpoints, logging and stopping live here. The loop knows no
puzzle: the dataset's metadata gives the shapes, and the puzzle's own module (puzzles.py) gives
the optional augmentation and validity check.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

import arch
import distributed
import puzzles
import rundir
from adam_atan2 import AdamATan2
from checkpoint import LEGACY_MODEL_CONFIG, load_checkpoint, load_weights, save_checkpoint, write_text_atomic
from config import check_resume_config, config_changes
from device import check_memory, compile_blocker, cpu_description, pick_device, pick_dtype
from ensemble import evaluate_ensemble, format_rules, transforms_for
from errors import ConfigError, Interrupted, LostProcess, NonFiniteLoss
from loggers import RunLog, read_log, records_before
from metrics import evaluate
from puzzle_dataset import PuzzleSplit, TrainSampler, training_labels
from run_state import EMA, RunState, Slots, empty_slots  # noqa: F401 (EMA, Slots: imported from here too)
from sign_sgd import SparseSignSGD
from trm import Carry, StepLoss, TRMConfig, count_parameters, trm_loss

# Keys that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = ("training.max_steps", "training.time_limit_min", "training.eval_every", "training.ckpt_every",
                     "training.log_every", "training.eval_batch_size", "training.eval_N_sup", "training.eval_limit",
                     "training.eval_stop_unchanged", "training.patience", "training.stop_exact", "training.test_time", "training.test_time.members",
                     "training.test_time.member_kind", "training.test_time.sigma", "training.test_time.select",
                     "training.test_time.seed", "training.test_time.first_round",
                     "training.device", "training.compile", "training.runs_dir", "data.data_dir",
                     "data.force_download", "data.maze.force_download")


@dataclass
class StepOutput:
    """What a script's step_fn returns for one supervision step."""
    carry: Carry
    logits: torch.Tensor                                  # (B, seq_len, V)
    q_logit: torch.Tensor                                 # (B,) halting logit: > 0 halts
    halt_logit: torch.Tensor | None = None                # (B,) the logit the halting BCE trains (None: q_logit)
    extra_losses: dict[str, torch.Tensor] = field(default_factory=dict)  # added to the loss, share logged
    logs: dict[str, float] = field(default_factory=dict)  # more numbers for the log


StepFn = Callable[[torch.nn.Module, Slots, dict], StepOutput]


def print0(*args) -> None:
    """Print on the main process only (rank 0 under torchrun), without breaking the progress bar."""
    if os.environ.get("RANK", "0") == "0":
        tqdm.write(" ".join(str(a) for a in args))


# ----------------------------------------------------------------------------------------------
# Pieces: schedule, optimizer, signals


def run_progress(step: int, t: dict, elapsed: float = 0.0) -> float:
    """How far the run is, 0..1: over the steps from warmup to max_steps (lr_decay_over "steps"),
    over the time limit ("time"), or whichever of the two ends first ("first"). The learning rate's
    cosine and the N_sup schedule both read it."""
    by_steps = min(1.0, max(0, step - t["warmup_steps"]) / max(1, t["max_steps"] - t["warmup_steps"]))
    by_time = min(1.0, elapsed / (60 * t["time_limit_min"])) if t["time_limit_min"] > 0 else 0.0
    return {"steps": by_steps, "time": by_time, "first": max(by_steps, by_time)}[t["lr_decay_over"]]


def lr_at(step: int, t: dict, elapsed: float = 0.0) -> float:
    """Linear warmup over warmup_steps, then a cosine from lr to lr * lr_min_ratio over the rest of
    the run (run_progress: to max_steps, to the time limit, or to whichever comes first)."""
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    floor = t["lr_min_ratio"]
    return t["lr"] * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * run_progress(step, t, elapsed))))


def N_sup_at(step: int, t: dict, N_sup: int, elapsed: float = 0.0) -> int:
    """The most supervision steps a training puzzle gets now: the last [progress, N_sup] pair of
    training.N_sup_schedule that the run has reached (model.N_sup without one, or before its first)."""
    progress = run_progress(step, t, elapsed)
    for start, value in t["N_sup_schedule"]:
        if progress >= start:
            N_sup = value
    return N_sup


def make_optimizer(model: torch.nn.Module, t: dict) -> torch.optim.Optimizer:
    """AdamW or AdamATan2; weight decay on matrices (not the prefix), or on everything (decay_all)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if t["decay_all"] or (p.ndim >= 2 and name != "prefix") else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer_class = AdamATan2 if t["optimizer"] == "adam_atan2" else torch.optim.AdamW
    return optimizer_class(groups, lr=t["lr"], betas=(t["beta1"], t["beta2"]))


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
    """Install a StopFlag for SIGINT and SIGTERM; the previous handlers come back afterwards, except
    after a LostProcess: torchrun then stops the other processes with SIGTERM, which must not cut
    their line short, so the flag stays (armed) until the process ends."""
    stop = StopFlag()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    except LostProcess:
        stop.armed, previous = True, {}
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def lost_process_named(d: distributed.Dist, last_path: Path, resume: bool, state: RunState | None = None):
    """A collective that fails because another process ended (killed, crashed) ends this one with
    LostProcess: one line naming the lost process when it can (rank N of 2), what this one was doing
    (starting, or after which step: state) and how to go on from the last checkpoint."""
    try:
        yield
    except RuntimeError as e:
        sign = distributed.peer_loss(e) if d.enabled else None
        if sign is None:
            raise
        if state is not None and state.saved_step is not None:
            then = (f"the last checkpoint is {last_path} (step {state.saved_step}): resume with "
                    f"{distributed.relaunch_command(d, resume=True)}")
        elif resume:  # lost while starting to resume: last.pt is as it was
            then = f"{last_path} is as it was: resume with {distributed.relaunch_command(d, resume=True)}"
        else:
            then = f"no checkpoint was written: start again with {distributed.relaunch_command(d, resume=False)}"
        doing = f"after step {state.step}" if state is not None else "while starting"
        raise LostProcess(f"lost contact with {distributed.other_process(d)} {doing} ({sign}); {then}") from None


# ----------------------------------------------------------------------------------------------
# One step of the loop, in named parts


def halting_update(steps: torch.Tensor, q_all: torch.Tensor, N_sup: int, exploration_prob: float,
                   halt_gen: torch.Generator) -> torch.Tensor:
    """Which slots halt after this step (over the global batch): at N_sup, or when the Q head says
    "correct" (logit > 0), unless exploration holds the example for a random minimum of 2..N_sup
    steps (official ACT rule). Draws come from halt_gen on CPU, the same on every process."""
    halted = steps >= N_sup
    if N_sup > 1:
        G = len(steps)
        explore = torch.rand(G, generator=halt_gen) < exploration_prob
        min_steps = explore * torch.randint(2, N_sup + 1, (G,), generator=halt_gen)
        halted = (halted | (q_all > 0)) & (steps >= min_steps.to(steps.device))
    return halted


WINDOW_KEYS = ("loss", "ce", "halt", "halt_target", "n", "done", "exact", "token", "steps")  # per log interval


def log_record(window: dict, step: int, elapsed: float, lr: float) -> dict:
    """The log line of an interval: averages over its steps, accuracies over the examples that finished."""
    n, done = window["n"], max(1, window["done"])
    extra = [k for k in window if k not in WINDOW_KEYS]
    return {"step": step, "time_s": round(elapsed, 1), "lr": lr,
            "loss": window["loss"] / n, "ce_loss": window["ce"] / n, "halt_loss": window["halt"] / n,
            "halt_target": window["halt_target"] / n, "train_token_acc": window["token"] / done,
            "train_exact_acc": window["exact"] / done, "avg_steps": window["steps"] / done,
            "finished": window["done"], **{k: window[k] / n for k in extra}}


def format_record(r: dict) -> str:
    extra = [k for k in r if k not in ("step", "time_s", "lr", "loss", "ce_loss", "halt_loss", "halt_target",
                                       "train_token_acc", "train_exact_acc", "avg_steps", "finished")]
    return (f"step {r['step']:6d} | loss {r['loss']:.4f} (ce {r['ce_loss']:.4f}, halt {r['halt_loss']:.4f}"
            f"{''.join(f', {k} {r[k]:.4f}' for k in extra)}) | train token {r['train_token_acc']:.3f} exact "
            f"{r['train_exact_acc']:.3f} | halt target {r['halt_target']:.3f} | steps {r['avg_steps']:.1f} | "
            f"{r['time_s']:.0f}s")


# ----------------------------------------------------------------------------------------------
# The run


def run(config: dict, resume: bool, progress: bool, build_model: Callable[[TRMConfig, dict], torch.nn.Module],
        step_fn: StepFn, defaults: dict | None = None) -> dict:
    """Train with a full, checked config. Under torchrun each process trains its slice of the
    global batch (impl/distributed.py); rank 0 alone writes in the run folder, which it locks; when
    a process dies, the others end with one line naming it and the last checkpoint (LostProcess).
    defaults: the script's RUN_CONFIG, to print only the keys that differ from it."""
    config = upgraded(config, "config")                 # saved, and compared on resume, as model.arch says it
    d = distributed.from_env()
    try:
        device, device_why = pick_device(config["training"]["device"], d.local_rank, local_processes=d.local_world_size)
    except ConfigError:
        if not d.is_main:  # every process finds the same problem; rank 0 alone says it, in one line
            raise SystemExit(1) from None
        raise
    run_dir = Path(config["training"]["runs_dir"]) / config["training"]["run_name"]
    lock = rundir.RunLock(run_dir) if d.is_main else None
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
        with stop_signals() as stop, lost_process_named(d, run_dir / "last.pt", resume):
            return train(config, resume, progress and d.is_main, build_model, step_fn, d, device, device_why, stop,
                         defaults)
    finally:
        if lock is not None:
            lock.release()
        distributed.shutdown()


def train(config: dict, resume: bool, progress: bool, build_model, step_fn: StepFn, d: distributed.Dist,
          device: torch.device, device_why: str, stop: StopFlag, defaults: dict | None = None) -> dict:
    """Set up (or resume), then per step: refill the slots, one training step, log, evaluate and
    checkpoint, decide whether to stop; then the final test of the last and the best weights."""
    t_cfg = config["training"]
    run_dir = Path(t_cfg["runs_dir"]) / t_cfg["run_name"]
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    dtype = choose_dtype(t_cfg["dtype"], device, device_why, d)
    data = load_data(config, d, progress)
    mcfg = model_config(config, data.train.meta)
    check_memory(mcfg, t_cfg["batch_size"], dtype, device)
    state, training = build(config, mcfg, data, build_model, step_fn, d, device, dtype)
    if resume:
        resume_from(state, last_path, device, dtype)
    elif d.is_main:
        write_config(run_dir / "config.json", config, defaults, d)
    run_log = open_log(run_dir, config, resume, state.step) if d.is_main else None
    evaluator = Evaluator(data, t_cfg, mcfg, device, dtype, state.ema.model if state.ema is not None else state.model)

    window = dict.fromkeys(WINDOW_KEYS, 0)
    state.start_clock()
    time_limit = t_cfg["time_limit_min"] * 60
    state.model.train()
    stop.armed = True
    bar = tqdm(total=t_cfg["max_steps"], initial=state.step, desc="train", disable=not progress, dynamic_ncols=True)
    early = resumed_early_stop(state, t_cfg) if resume else None
    if early is not None:  # it had stopped early, then ended before its final test: it stops there again
        report_early_stop(state, early, t_cfg, evaluator.select_name, run_log)
    with lost_process_named(d, last_path, resume, state):
        while early is None and state.step < t_cfg["max_steps"]:
            refill_slots(state, training)
            out, parts, loss, lr = train_step(state, training, last_path)
            advance_slots(state, out, parts, loss, window)
            bar.update(1)
            out_of_time, stopping = agree_on_time(state, stop, time_limit)

            step = state.step
            boundary = step == t_cfg["max_steps"] or out_of_time
            if step % t_cfg["log_every"] == 0 or boundary:
                if run_log is not None:
                    log_train(run_log, window, state, lr, bar)
                window = dict.fromkeys(WINDOW_KEYS, 0)

            early = None
            if step % t_cfg["eval_every"] == 0 or boundary:
                metrics = evaluate_and_checkpoint(state, evaluator, run_log, last_path, best_path)
                early = early_stop(state, metrics, t_cfg)
            elif stopping or (t_cfg["ckpt_every"] and step % t_cfg["ckpt_every"] == 0):
                save_last(state, last_path)

            if stopping:
                bar.close()
                signum = stop.signum or signal.SIGTERM  # None: the signal reached another process
                raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; saved {last_path} "
                                  f"(continue with --resume)", signum)
            if out_of_time:
                print0(f"time limit of {t_cfg['time_limit_min']} min reached at step {step}")
                break
            if early is not None:
                report_early_stop(state, early, t_cfg, evaluator.select_name, run_log)
                break
        bar.close()
        result = final_test(state, evaluator, run_log, run_dir, best_path)
        distributed.barrier(d)  # no process tears the group down while another still uses it
    return result


# ----------------------------------------------------------------------------------------------
# Set-up


def upgraded(config: dict, source: object) -> dict:
    """config with its model section's old variant keys (separate_nets: true, ...) as model.arch."""
    try:
        return dict(config, model=arch.upgrade(config["model"]))
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def model_config(config: dict, meta) -> TRMConfig:
    """The model section checked, with the dataset's shapes (impl/arch.py)."""
    return arch.model_config(config["model"], vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                             num_puzzle_identifiers=meta.num_puzzle_identifiers)


def choose_dtype(choice: str, device: torch.device, device_why: str, d: distributed.Dist) -> torch.dtype:
    """The compute dtype, the same on every process; prints the first screen's device lines."""
    dtype, dtype_why = pick_dtype(choice, device)
    if d.enabled and choice == "auto" and device.type == "cpu":
        # Each process timed its own CPU: all use bf16, or none does. (A collective: every process.)
        all_bf16 = float(distributed.mean(torch.tensor(float(dtype == torch.bfloat16)), d)) == 1.0
        if dtype == torch.bfloat16 and not all_bf16:
            dtype, dtype_why = torch.float32, "auto: not every process found bf16 faster"
    print0(f"device: {device} ({device_why}); dtype: {str(dtype).replace('torch.', '')} ({dtype_why}); "
           f"threads: {torch.get_num_threads()}; processes: {d.world_size}")
    if device.type == "cpu":
        print0(f"cpu: {cpu_description()}")
    return dtype


def load_data(config: dict, d: distributed.Dist, progress: bool) -> puzzles.Data:
    """The run's puzzles: rank 0 builds the dataset first, then the others read it."""
    if not d.is_main:
        distributed.barrier(d)
    data = puzzles.load(config["data"], progress=progress)
    if d.is_main:
        distributed.barrier(d)
    print0(f"data: {data.description}")
    batch_size, n = config["training"]["batch_size"], data.train.n_examples
    if batch_size * d.world_size > n:
        print0(f"note: training.batch_size {batch_size} x {d.world_size} process(es) is more than the "
               f"{n} training examples: the same ones will be in flight more than once")
    return data


@dataclass
class Training:
    """What a step uses besides the RunState: rebuilt from the config at every start, never saved."""
    trained: torch.nn.Module            # the model as the step runs it: DDP-wrapped under torchrun
    sparse: SparseSignSGD | None        # sign-SGD of the puzzle embeddings (their rows are in the model)
    split: PuzzleSplit                  # the training split
    example_ids: np.ndarray             # the puzzle identifier of every training example
    augment: Callable | None            # the puzzle's augmentation (None: off)
    step_fn: StepFn
    device: torch.device


def build(config: dict, mcfg: TRMConfig, data: puzzles.Data, build_model, step_fn: StepFn, d: distributed.Dist,
          device: torch.device, dtype: torch.dtype) -> tuple[RunState, Training]:
    """A fresh run seeded from training.seed: the model, its optimizers and EMA, the compiled and
    DDP-wrapped step model, the sampler and empty slots (a resumed run then loads over them)."""
    t_cfg = config["training"]
    random.seed(t_cfg["seed"])
    np.random.seed(t_cfg["seed"])
    torch.manual_seed(t_cfg["seed"])
    model = build_model(mcfg, config).to(device)
    print0(f"model: {mcfg.arch}, {count_parameters(model):,} parameters, {'mlp_t' if mcfg.mlp_t else 'attention'}, "
           f"D={mcfg.hidden_size}, T={mcfg.T}, n={mcfg.n}, N_sup={mcfg.N_sup}")
    optimizer = make_optimizer(model, t_cfg)
    # Several puzzle identifiers (ARC): their embeddings are trained sparsely by sign-SGD, outside
    # the main optimiser and the EMA (official); the EMA copy shares the table.
    puzzle_emb = getattr(model, "puzzle_emb", None)
    sparse = SparseSignSGD(puzzle_emb, t_cfg["puzzle_emb_weight_decay"], d) if puzzle_emb is not None else None
    if puzzle_emb is not None:
        print0(f"puzzle embeddings: {mcfg.num_puzzle_identifiers:,} x {mcfg.hidden_size}, sign-SGD with lr "
               f"{t_cfg['puzzle_emb_lr']:g} (on the lr schedule) and weight decay {t_cfg['puzzle_emb_weight_decay']:g}, "
               f"rows of the batch only, outside the EMA")
    ema = EMA(model, t_cfg["ema_decay"], shared=[puzzle_emb.weight] if puzzle_emb is not None else []) \
        if t_cfg["ema"] else None
    if t_cfg["compile"]:
        blocker = compile_blocker(device)
        if blocker:
            print0(f"training.compile: {blocker}; training uncompiled (slower, same results)")
        else:
            model.net.compile()
    # DDP averages gradients over processes; checkpoints and EMA use the unwrapped model.
    # A model whose step may leave parameters unused (JEPA with weight 0) says so in ddp_find_unused.
    # Buffers are not broadcast: they are equal on every process (same seed or checkpoint), and the
    # puzzle-embedding table, the one buffer that changes, gets the same sparse update everywhere.
    trained = (torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=getattr(model, "ddp_find_unused", False), broadcast_buffers=False)
        if d.enabled else model)
    # Every process runs the same sampler and halting draws over the global batch, and keeps its slice.
    train_split = data.train
    sampler = TrainSampler(train_split, t_cfg["seed"])
    example_ids = train_split.example_identifiers().astype(np.int64)
    augment = data.hooks.augment if config["data"]["augment"] and data.hooks is not None else None
    halt_gen = torch.Generator().manual_seed(t_cfg["seed"])
    B = t_cfg["batch_size"]                               # examples per process
    slots = empty_slots(model, B, B * d.world_size, mcfg.seq_len, device, dtype)
    state = RunState(model, optimizer, ema, sampler, halt_gen, slots, config, mcfg, train_split.meta.to_json(), d,
                     mine=slice(d.rank * B, (d.rank + 1) * B))
    return state, Training(trained, sparse, train_split, example_ids, augment, step_fn, device)


def resume_from(state: RunState, last_path: Path, device: torch.device, dtype: torch.dtype) -> None:
    """Load last.pt over a fresh state, after checking that the config changed only where a resumed
    run can honour it (and saying what changed)."""
    ckpt = load_checkpoint(last_path, needs="resume")
    for change in check_resume_config(upgraded(ckpt["config"], last_path), state.config, last_path, RESUMABLE_CHANGES,
                                      {**{f"model.{k}": v for k, v in LEGACY_MODEL_CONFIG.items()},
                                       "training.N_sup_schedule": []}):
        print0(f"resume: {change}")
    state.load_state_dict(ckpt, last_path, device, dtype)
    print0(f"resumed from {last_path} at step {state.step} (best exact {state.best_exact:.4f})")


def config_line(config: dict, defaults: dict | None, saved: Path) -> str:
    """The first screen's config line: the keys that differ from the script's RUN_CONFIG (as nanoGPT
    prints its overrides); the whole config is in the run folder."""
    if defaults is None:
        return f"config: full config in {saved}"
    changes = config_changes(defaults, config)
    if not changes:
        return f"config: RUN_CONFIG unchanged; full config in {saved}"

    def shown(value) -> str:  # as a JSON override file spells it
        return "absent" if value == "<absent>" else json.dumps(value)

    listed = ", ".join(f"{key} {shown(new)} (default {shown(old)})" for key, old, new in changes)
    verb = "key differs" if len(changes) == 1 else "keys differ"
    return f"config: {len(changes)} {verb} from RUN_CONFIG: {listed}; full config in {saved}"


def write_config(path: Path, config: dict, defaults: dict | None, d: distributed.Dist) -> None:
    """A fresh run's resolved config, with the versions it ran on, before step 0 (rank 0)."""
    resolved = {**config, "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                       "numpy": np.__version__}, "processes": d.world_size}
    write_text_atomic(path, json.dumps(resolved, indent=2) + "\n")
    print0(config_line(config, defaults, path))


def open_log(run_dir: Path, config: dict, resume: bool, step: int) -> RunLog:
    """The run's log (rank 0). A resumed run first drops the records written after its checkpoint
    (loggers.records_before): the steps after it are trained again. A torn last line (a crash
    during an append) is dropped with a note; a damaged line elsewhere stops the run, unchanged."""
    log_path = run_dir / "log.jsonl"
    if resume and log_path.exists():
        records, torn = read_log(log_path)
        if torn:
            print0(f"resume: dropped a torn last line of {log_path} (an interrupted write)")
        kept = records_before(records, step)
        write_text_atomic(log_path, "".join(line + "\n" for line, _ in kept))
    return RunLog(run_dir, config, resume)


def eval_arrays(split, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, training labels (IGNORE_LABEL where no target) and puzzle identifiers of a split's
    first `limit` examples (0: all)."""
    n = min(limit or split.n_examples, split.n_examples)
    return np.array(split.inputs[:n]), split.labels_for_training(np.arange(n)), split.example_identifiers()[:n]


def by_source(metrics: dict) -> str:
    """' | sudoku exact 0.9, maze exact 0.5' for a mixed dataset's metrics ('' otherwise)."""
    groups = metrics.get("by_source", {})
    return "".join(f" | {name} exact {m['exact_acc']:.4f}" for name, m in groups.items())


class Evaluator:
    """Evaluations during training and the final test, on the weights evaluation reads (the EMA's
    when there is one). best.pt is chosen on the validation split; the test split is read only at
    the end, for the last and the best checkpoint. Without a validation split, the test split
    chooses (and says so)."""

    def __init__(self, data: puzzles.Data, t_cfg: dict, mcfg: TRMConfig, device: torch.device, dtype: torch.dtype,
                 net: torch.nn.Module) -> None:
        self.data, self.t_cfg, self.device, self.dtype, self.net = data, t_cfg, device, dtype, net
        self.N_sup = t_cfg["eval_N_sup"] or mcfg.N_sup
        self.valid_fn = data.hooks.valid_fn(data.train.meta) if data.hooks is not None else None
        tt = t_cfg["test_time"]
        if tt["members"] > 1:  # what the final test's ensemble needs, checked before any training
            if tt["select"] == "valid" and self.valid_fn is None:
                raise ConfigError("training.test_time.select: 'valid' needs a rule check, and this dataset's puzzle "
                                  "type has none (use vote, halt or first)")
            try:
                transforms_for(data.hooks, data.test.meta, tt["member_kind"], 1, tt["seed"])
            except ValueError as e:
                raise ConfigError(f"training.test_time.member_kind: {e}") from None
        self.select_name = "val" if data.val is not None else "test"
        if data.val is None:
            print0("note: no validation split (data.n_val, data.val_subset): best.pt is chosen on the test split, "
                   "so its test figure is optimistic")
        # Evaluations during training read at most eval_limit examples and may stop a puzzle once its
        # answer is settled (eval_stop_unchanged); the final test reads the whole split, all N_sup steps.
        self.during_arrays = eval_arrays(data.val if data.val is not None else data.test, t_cfg["eval_limit"])
        self.test_arrays = eval_arrays(data.test, 0)

    def groups(self, inputs: np.ndarray) -> dict:
        """A mixed dataset's examples by source, for the figures per source ({} otherwise)."""
        return self.data.hooks.groups(inputs) if self.data.hooks is not None else {}

    def during(self) -> dict:
        """The evaluation that chooses best.pt and drives the early stops."""
        t = self.t_cfg
        inputs, labels, ids = self.during_arrays
        return {**evaluate(self.net, inputs, labels, self.N_sup, t["eval_batch_size"], self.device, self.dtype,
                           valid_fn=self.valid_fn, stop_unchanged=t["eval_stop_unchanged"], puzzle_ids=ids,
                           breakdowns=self.groups(inputs)),
                "stop_unchanged": t["eval_stop_unchanged"]}

    def test(self, net: torch.nn.Module | None = None) -> dict:
        """The final test of net (default: the weights evaluation reads): an ensemble
        (impl/ensemble.py) when training.test_time.members > 1."""
        t, tt, net = self.t_cfg, self.t_cfg["test_time"], net if net is not None else self.net
        inputs, labels, ids = self.test_arrays
        groups = self.groups(inputs)
        if tt["members"] > 1:
            return evaluate_ensemble(net, inputs, labels, tt["members"], tt["member_kind"], tt["sigma"], tt["select"],
                                     self.N_sup, t["eval_batch_size"], self.device, self.dtype, self.data.hooks,
                                     self.data.test.meta, self.valid_fn, puzzle_ids=ids, seed=tt["seed"],
                                     first_round=tt["first_round"])
        return evaluate(net, inputs, labels, self.N_sup, t["eval_batch_size"], self.device, self.dtype,
                        valid_fn=self.valid_fn, puzzle_ids=ids, breakdowns=groups)


# ----------------------------------------------------------------------------------------------
# A step: refill the slots, train, halt


def refill_slots(state: RunState, training: Training) -> None:
    """Examples that halted leave; the sampler fills their slots, with a fresh carry."""
    slots = state.slots
    if not bool(slots.halted.any()):
        return
    split, meta, device = training.split, training.split.meta, training.device
    idx = slots.halted.nonzero().squeeze(1)
    chosen = state.sampler.next(len(idx))
    new_inputs, new_labels = np.asarray(split.inputs[chosen]), np.asarray(split.labels[chosen])
    if training.augment is not None:
        new_inputs, new_labels = training.augment(new_inputs, new_labels, meta, state.sampler.rng)
    slots.inputs[idx] = torch.from_numpy(new_inputs.astype(np.int64)).to(device)
    slots.labels[idx] = torch.from_numpy(training_labels(new_labels, meta)).to(device)
    slots.puzzle_ids[idx] = torch.from_numpy(training.example_ids[chosen]).to(device)
    slots.carry = state.model.reset_carry(slots.carry, slots.halted[state.mine])
    slots.steps = torch.where(slots.halted, 0, slots.steps)


def train_step(state: RunState, training: Training,
               last_path: Path) -> tuple[StepOutput, StepLoss, torch.Tensor, float]:
    """Set the learning rate, run one supervision step on this process's slots (the script's step_fn:
    forward, then backward through what it keeps gradient for) and update the weights. Returns the
    step's output, its loss parts, its total loss and the learning rate."""
    t_cfg, d, s, mine = state.config["training"], state.d, state.slots, state.mine
    lr = lr_at(state.step, t_cfg, state.elapsed)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    local = Slots(s.inputs[mine], s.labels[mine], s.carry, s.steps[mine], s.halted[mine], s.puzzle_ids[mine])
    out = training.step_fn(training.trained, local, state.config)
    parts = trm_loss(out.logits, out.q_logit if out.halt_logit is None else out.halt_logit, local.labels,
                     t_cfg["loss"], t_cfg["halt_loss_weight"])
    loss = parts.loss + sum(out.extra_losses.values())
    finite = bool(torch.isfinite(loss))
    if d.enabled:  # every process stops together
        finite = bool(distributed.mean(torch.tensor(float(finite)), d) == 1.0)
    if not finite:
        saved = f"last good checkpoint: {last_path}" if last_path.exists() else "no checkpoint was written yet"
        raise NonFiniteLoss(f"loss is {loss.item()} at step {state.step + 1} (not finite); training stopped "
                            f"before the update, nothing was saved over the checkpoints; {saved}")
    loss.backward()
    if t_cfg["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), t_cfg["grad_clip"])
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if training.sparse is not None:  # the rows of this step's puzzle embeddings, on the same schedule as lr
        training.sparse.step(lr * t_cfg["puzzle_emb_lr"] / t_cfg["lr"])
    if state.ema is not None:
        state.ema.update(state.model)
    state.step += 1
    return out, parts, loss, lr


@torch.no_grad()
def advance_slots(state: RunState, out: StepOutput, parts: StepLoss, loss: torch.Tensor, window: dict) -> None:
    """The new carry and the halting decisions, over the global batch; the step's numbers go into
    the log window (averaged over processes)."""
    d, slots = state.d, state.slots
    slots.carry = out.carry
    q_all = distributed.gather_cat(out.q_logit.detach().float(), d)
    solved_all = distributed.gather_cat(parts.solved, d)
    token_all = distributed.gather_cat(parts.token_acc.float(), d)
    slots.steps = slots.steps + 1
    mcfg, t_cfg = state.model_config, state.config["training"]
    N_sup = N_sup_at(state.step - 1, t_cfg, mcfg.N_sup, state.elapsed)  # the step just taken
    halted = slots.halted = halting_update(slots.steps, q_all, N_sup, mcfg.halt_exploration_prob, state.halt_gen)
    total = loss.detach()
    logs = {**out.logs, **{f"{k}_share": float(v.detach() / total) for k, v in out.extra_losses.items()}}
    names = sorted(logs)
    scalars = torch.tensor([total.item(), parts.ce.item(), parts.halt.item()] + [float(logs[k]) for k in names])
    scalars = distributed.mean(scalars, d).tolist()
    for key, value in zip(["loss", "ce", "halt"] + names, scalars):
        window[key] = window.get(key, 0.0) + value
    window["halt_target"] += solved_all.float().mean().item()
    window["n"] += 1
    window["done"] += int(halted.sum())
    window["exact"] += int((solved_all & halted).sum())
    window["token"] += float(token_all[halted].sum())
    window["steps"] += int(slots.steps[halted].sum())


def agree_on_time(state: RunState, stop: StopFlag, time_limit: float) -> tuple[bool, bool]:
    """Update the run's clock; whether the time limit is reached, and whether a signal asked to
    stop. Every process must stop at the same step and set the same learning rate: they agree."""
    d = state.d
    state.elapsed = state.clock()
    out_of_time = time_limit > 0 and state.elapsed >= time_limit
    stopping = stop.signum is not None
    if d.enabled:
        flags = distributed.mean(torch.tensor([float(out_of_time), float(stopping), state.elapsed],
                                              dtype=torch.float64), d)
        out_of_time, stopping, state.elapsed = bool(flags[0] > 0), bool(flags[1] > 0), float(flags[2])
    return out_of_time, stopping


# ----------------------------------------------------------------------------------------------
# Log, evaluate and checkpoint, stop


def log_train(run_log: RunLog, window: dict, state: RunState, lr: float, bar: tqdm) -> None:
    """The log line of the interval that ends here (rank 0)."""
    record = log_record(window, state.step, state.elapsed, lr)
    bar.set_postfix(loss=f"{record['loss']:.3f}", exact=f"{record['train_exact_acc']:.3f}")
    print0(format_record(record))
    run_log.write({"kind": "train", **record})


def save_last(state: RunState, last_path: Path) -> None:
    """Write last.pt. Collective: every process calls it; rank 0 writes."""
    snapshot = state.state_dict()
    if state.d.is_main:
        save_checkpoint(last_path, snapshot)
    state.saved_step = state.step


def evaluate_and_checkpoint(state: RunState, evaluator: Evaluator, run_log: RunLog | None, last_path: Path,
                            best_path: Path) -> dict:
    """Evaluate (rank 0), keep the best, write last.pt and, on a new best, best.pt. Collective:
    every process calls it. Returns the metrics ({} on the other processes)."""
    snapshot = state.state_dict()  # before the evaluation: its elapsed time is the training's
    if not state.d.is_main:
        state.saved_step = state.step  # rank 0 writes it
        return {}
    eval_start = time.time()
    metrics = evaluator.during()
    eval_s = time.time() - eval_start
    state.eval_time += eval_s
    # A tie goes to the later checkpoint (trained longer: on a small validation split several
    # evaluations often tie at the top); patience counts strict improvements.
    improved = metrics["exact_acc"] >= state.best_exact
    state.stale_evals = 0 if metrics["exact_acc"] > state.best_exact else state.stale_evals + 1
    if improved:
        state.best_exact, state.best_step = metrics["exact_acc"], state.step
    snapshot.update(state.counters())
    valid = f"valid {metrics['validity']:.4f} " if "validity" in metrics else ""
    print0(f"eval {state.step:6d} | {evaluator.select_name} token {metrics['token_acc']:.4f} blank "
           f"{metrics['blank_acc']:.4f} exact {metrics['exact_acc']:.4f} {valid}halt {metrics['halt_acc']:.4f} "
           f"(best exact {state.best_exact:.4f}, {evaluator.N_sup} steps, {metrics['n']} puzzles){by_source(metrics)}")
    run_log.write({"kind": "eval", "split": evaluator.select_name, "step": state.step,
                   "time_s": round(state.clock(), 1), "eval_s": round(eval_s, 3), **metrics})
    if improved:
        save_checkpoint(best_path, snapshot)
    save_checkpoint(last_path, snapshot)
    state.saved_step = state.step
    return metrics


def stops_early(state: RunState, exact: float, t_cfg: dict) -> tuple[bool, bool]:
    """Whether patience ran out, and whether an evaluation's exact accuracy reached stop_exact
    before max_steps (on this process's counters)."""
    patience_out = t_cfg["patience"] > 0 and state.stale_evals >= t_cfg["patience"]
    return patience_out, 0 < t_cfg["stop_exact"] <= exact and state.step < t_cfg["max_steps"]


def early_stop(state: RunState, metrics: dict, t_cfg: dict) -> str | None:
    """After an evaluation: "patience" (that many evaluations without a better exact accuracy),
    "stop_exact" (it was reached before max_steps) or None. Rank 0 alone evaluated: every process
    stops with it."""
    patience_out, solved_out = stops_early(state, metrics.get("exact_acc", -1.0), t_cfg)
    if state.d.enabled:
        flags = distributed.mean(torch.tensor([float(patience_out), float(solved_out)]), state.d)
        patience_out, solved_out = bool(flags[0] > 0), bool(flags[1] > 0)
    return "patience" if patience_out else "stop_exact" if solved_out else None


def resumed_early_stop(state: RunState, t_cfg: dict) -> str | None:
    """early_stop for a run resumed from the checkpoint of the evaluation that stopped it early
    (killed before its end): the same decision, from the counters every process loaded. (An
    evaluation whose exact accuracy reached stop_exact was a new best: best_step is its step.)"""
    exact = state.best_exact if state.best_step == state.step else -1.0
    patience_out, solved_out = stops_early(state, exact, t_cfg)
    return "patience" if patience_out else "stop_exact" if solved_out else None


def report_early_stop(state: RunState, key: str, t_cfg: dict, select_name: str, run_log: RunLog | None) -> None:
    why = (f"{state.stale_evals} evaluations without a better {select_name} exact accuracy (training.patience "
           f"{t_cfg['patience']}); best.pt is from step {state.best_step}" if key == "patience" else
           f"{select_name} exact accuracy {state.best_exact:.4f} >= training.stop_exact {t_cfg['stop_exact']:g} (0: off)")
    print0(f"early stop at step {state.step}: {why}")
    if run_log is not None:
        run_log.write({"kind": "early_stop", "step": state.step, "best_step": state.best_step, key: t_cfg[key]})


# ----------------------------------------------------------------------------------------------
# The final test


def final_test(state: RunState, evaluator: Evaluator, run_log: RunLog | None, run_dir: Path, best_path: Path) -> dict:
    """Test the last weights and best.pt's on the whole test split (rank 0): log, report, and return
    the figures with the run's timing."""
    result = {"step": state.step, "best_exact_acc": state.best_exact, "best_step": state.best_step,
              "run_dir": str(run_dir)}
    if state.d.is_main:
        train_time = state.clock()
        test_start = time.time()
        test_last = evaluator.test()
        test_best = test_last
        if state.best_step != state.step and best_path.exists():  # the best checkpoint's weights, on the test split
            best_net = copy.deepcopy(evaluator.net)
            load_weights(best_net, load_checkpoint(best_path)["ema" if state.ema is not None else "model"], best_path)
            test_best = evaluator.test(best_net)
        for which, m, at in (("last", test_last, state.step), ("best", test_best, state.best_step)):
            run_log.write({"kind": "test", "checkpoint": which, "step": at, **m})
        result.update(test_last, best_test=test_best)
        test_time = time.time() - test_start
        total_time = state.clock()
        timing = {"time_s": round(total_time, 3), "train_loop_s": round(train_time, 3),
                  "eval_during_s": round(state.eval_time, 3), "test_s": round(test_time, 3),
                  "eval_share": round((state.eval_time + test_time) / max(total_time, 1e-9), 4)}
        run_log.write({"kind": "timing", "step": state.step, **timing})
        run_log.close()
        result.update(timing)
        valid = f" valid {test_last['validity']:.4f}" if "validity" in test_last else ""
        if "test_time" in test_last:  # the final test was an ensemble: every rule's figures
            print0(format_rules(test_last["test_time"]))
        print0(f"done: step {state.step}, test token {test_last['token_acc']:.4f} exact {test_last['exact_acc']:.4f}"
               f"{valid}; best.pt (step {state.best_step}, {evaluator.select_name} exact {state.best_exact:.4f}): "
               f"test exact {test_best['exact_acc']:.4f}{by_source(test_best)}; {total_time:.0f}s, of which "
               f"evaluation {state.eval_time:.0f}s during training and {test_time:.0f}s final test "
               f"({100 * timing['eval_share']:.0f}%); checkpoints in {run_dir}")
    result["time_s"] = state.clock()
    return result

