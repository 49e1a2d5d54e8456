"""The command line and the config checks that the training scripts share.

    python impl/train_trm.py [--config FILE.json] [--resume] [--no-progress] [--check]

--config deep-merges a JSON file over the script's RUN_CONFIG, to which expand_base first adds the
sections the file's choices bring (a puzzle type's data.<name> defaults); every value is checked
before any work (check_config), naming the file and the dotted key; --resume without --config
continues with the config saved in last.pt. Errors a user can fix end in one line `error: ...`
and exit status 1; SIGINT/SIGTERM save last.pt and exit 128 + the signal number.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Callable

import puzzles
import rundir
from arch import model_config, model_defaults, upgrade
from checkpoint import load_checkpoint
from config import SEED_MAX, check_rules, load_config, merge_config
from device import DTYPES
from ensemble import check_members
from errors import ConfigError, run_cli
from loggers import WANDB_MODES, check_packages
from trm import LOSSES

OPTIMIZERS = ("adamw", "adam_atan2")
LR_DECAY_OVER = ("steps", "time", "first")


def expand_base(base: dict, override: dict) -> dict:
    """A copy of base with the keys that override's choices bring, where base lacks them: the
    data.<name> defaults (the module's CONFIG) of each puzzle type that base or override names in
    data.puzzle or data.sources, and the model keys of the model.arch it chooses (arch.model_defaults,
    which also admits the old variant keys). Every merge of an override over a RUN_CONFIG goes
    through here (--config, --resume, evaluation --data-config), so the override may set those keys."""
    expanded = copy.deepcopy(base)
    part = (lambda key: override.get(key)) if isinstance(override, dict) else (lambda key: None)
    if isinstance(base.get("data"), dict):
        expanded["data"] = puzzles.data_defaults(base["data"], part("data"))
    if isinstance(base.get("model"), dict):
        try:
            expanded["model"] = model_defaults(base["model"], part("model"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return expanded


def check_config(config: dict, source: str = "config") -> None:
    """Values that have the right type (merge_config checked that) but are impossible."""
    d, t = config["data"], config["training"]
    seed_range = f"must be in 0..{SEED_MAX} (numpy's seed range)"
    rules = [
        ("training.seed", 0 <= t["seed"] <= SEED_MAX, seed_range),
        ("training.test_time.seed", 0 <= t["test_time"]["seed"] <= SEED_MAX, seed_range),
        ("data.seed", 0 <= d["seed"] <= SEED_MAX, seed_range),
        ("training.batch_size", t["batch_size"] >= 1, "must be >= 1"),
        ("training.max_steps", t["max_steps"] >= 0, "must be >= 0"),
        ("training.lr", t["lr"] > 0, "must be > 0"),
        ("training.puzzle_emb_lr", t["puzzle_emb_lr"] >= 0, "must be >= 0"),
        ("training.puzzle_emb_weight_decay", t["puzzle_emb_weight_decay"] >= 0, "must be >= 0"),
        ("training.warmup_steps", t["warmup_steps"] >= 0, "must be >= 0"),
        ("training.ema_decay", 0.0 <= t["ema_decay"] < 1.0, "must be in [0, 1)"),
        ("training.eval_every", t["eval_every"] >= 1, "must be >= 1"),
        ("training.ckpt_every", t["ckpt_every"] >= 0, "must be >= 0"),
        ("training.time_limit_min", t["time_limit_min"] >= 0, "must be >= 0"),
        ("training.grad_clip", t["grad_clip"] >= 0, "must be >= 0"),
        ("training.weight_decay", t["weight_decay"] >= 0, "must be >= 0"),
        ("training.beta1", 0.0 <= t["beta1"] < 1.0, "must be in [0, 1)"),
        ("training.beta2", 0.0 <= t["beta2"] < 1.0, "must be in [0, 1)"),
        ("training.halt_loss_weight", t["halt_loss_weight"] >= 0, "must be >= 0"),
        ("training.eval_N_sup", t["eval_N_sup"] >= 0, "must be >= 0 (0: model.N_sup)"),
        ("training.lr_min_ratio", 0.0 <= t["lr_min_ratio"] <= 1.0, "must be in [0, 1]"),
        ("training.lr_decay_over", t["lr_decay_over"] in LR_DECAY_OVER, f"must be one of {', '.join(LR_DECAY_OVER)}"),
        ("training.lr_decay_over", t["lr_decay_over"] == "steps" or t["time_limit_min"] > 0,
         "needs training.time_limit_min > 0 (the decay ends at the time limit)"),
        ("training.log_every", t["log_every"] >= 1, "must be >= 1"),
        ("training.eval_batch_size", t["eval_batch_size"] >= 1, "must be >= 1"),
        ("training.eval_limit", t["eval_limit"] >= 0, "must be >= 0 (0: all)"),
        ("training.eval_stop_unchanged", t["eval_stop_unchanged"] >= 0, "must be >= 0 (0: off)"),
        ("training.patience", t["patience"] >= 0, "must be >= 0 (0: off)"),
        ("training.stop_exact", 0.0 <= t["stop_exact"] <= 1.0, "must be in [0, 1] (0: off)"),
        ("training.loss", t["loss"] in LOSSES, f"must be one of {', '.join(LOSSES)}"),
        ("training.optimizer", t["optimizer"] in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}"),
        ("training.dtype", t["dtype"] in DTYPES, f"must be one of {', '.join(DTYPES)}"),
        ("training.wandb_mode", t["wandb_mode"] in WANDB_MODES, f"must be one of {', '.join(WANDB_MODES)}"),
    ]
    check_rules(config, rules, source)
    try:
        rundir.check_run_name(t["run_name"])
        model_config(config["model"], vocab_size=2, seq_len=1)
        tt = t["test_time"]
        check_members(tt["members"], tt["member_kind"], tt["sigma"], tt["select"], "training.test_time.",
                      tt["first_round"])
        puzzles.check_data_config(d)
        check_N_sup_schedule(t["N_sup_schedule"], config["model"]["N_sup"])
        check_packages(t)
    except ValueError as e:  # all name the key: "model.T: 0 must be >= 1"
        raise ConfigError(f"{source}: {e}") from None


def check_N_sup_schedule(schedule: list, N_sup: int) -> None:
    """training.N_sup_schedule: [progress, N_sup] pairs, progress in [0, 1] and rising, each N_sup in
    1..model.N_sup (evaluation keeps model.N_sup)."""
    key, last = "training.N_sup_schedule", -1.0
    for i, pair in enumerate(schedule):
        ok = (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                 for v in pair))
        if not ok:
            raise ValueError(f"{key}[{i}]: {json.dumps(pair)} must be a pair [progress, N_sup], e.g. [0.5, 16]")
        progress, value = pair
        if not (0.0 <= progress <= 1.0 and progress > last):
            raise ValueError(f"{key}[{i}]: progress {progress} must be in [0, 1] and above the pair before")
        if value != int(value) or not 1 <= value <= N_sup:
            raise ValueError(f"{key}[{i}]: N_sup {value} must be a whole number in 1..model.N_sup ({N_sup})")
        last = progress


def parse_args(argv: list[str] | None, doc: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="JSON file deep-merged over RUN_CONFIG (e.g. tiny.json)")
    parser.add_argument("--resume", action="store_true",
                        help="continue <runs_dir>/<run_name>/last.pt (without --config: with the config saved in it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.add_argument("--check", action="store_true", help="check the config and print it, then exit (no work)")
    return parser.parse_args(argv)


def cli(argv: list[str] | None, base: dict, main: Callable[..., dict], doc: str | None = None,
        check: Callable[[dict, str], None] | None = None) -> dict:
    """A training script's command line: --config over base, check_config (plus check(config,
    source) for a script's own keys), then main(config, resume=, progress=)."""
    args = parse_args(argv, doc)

    def run() -> dict:
        source = args.config or "RUN_CONFIG"
        if args.resume and not args.config:  # continue the run with the config it was started with
            path = Path(base["training"]["runs_dir"]) / base["training"]["run_name"] / "last.pt"
            source = str(path)
            saved = load_checkpoint(path, needs="resume")["config"]
            try:
                config = merge_config(expand_base(base, saved), saved, source)
            except ConfigError as e:
                raise ConfigError(str(e) if str(e).startswith(source) else f"{source}: {e}") from None
        else:
            config = load_config(args.config, base, expand_base) if args.config else expand_base(base, {})
        try:
            config["model"] = upgrade(config["model"])  # old variant keys (separate_nets: true) -> model.arch
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
        check_config(config, source)
        if check is not None:
            check(config, source)
        if args.check:
            print(f"config ok: {json.dumps(config)}")
            return {"config": config}
        return main(config, resume=args.resume, progress=not args.no_progress)

    return run_cli(run)
