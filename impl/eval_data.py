"""What a trained checkpoint is evaluated on: the model, the data section (the checkpoint's, or a
file's merged over it), the split and its first `limit` examples, checked against the shapes the
model was trained on. Shared by the evaluation commands (evaluate.py, ttc.py)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

import puzzles
from checkpoint import load_trained
from config import load_config
from device import pick_device_dtype
from errors import ConfigError, DataError
from puzzle_dataset import PuzzleSplit
from train_cli import expand_base


# Data keys newer than some checkpoints, with the value that does what those checkpoints did, so
# that an override file may set them over an older checkpoint's data section.
LATER_DATA_KEYS = {"held_out_from": ""}


def data_section(ckpt: dict, data_config: str | None) -> tuple[dict, str]:
    """The checkpoint's data section, or it with a run-override file's data section merged over."""
    if not data_config:
        return ckpt["config"]["data"], "the checkpoint's data config"
    base = copy.deepcopy(ckpt["config"])
    for key, value in LATER_DATA_KEYS.items():
        base["data"].setdefault(key, value)
    try:
        merged = load_config(data_config, base=base, expand=expand_base)
        puzzles.check_data_config(merged["data"])
    except ValueError as e:
        raise ConfigError(f"{data_config}: {e}" if str(data_config) not in str(e) else str(e)) from None
    return merged["data"], f"the checkpoint's data config with {data_config} merged over it (data section only)"


def check_fits(meta, trained: dict, where: str) -> None:
    """The data must have the shapes the model was trained on (its dataset metadata)."""
    for key in ("seq_len", "vocab_size", "num_puzzle_identifiers"):
        if getattr(meta, key) != trained.get(key, 1):
            raise DataError(f"the data has {key} {getattr(meta, key)} but {where} was trained on {key} "
                            f"{trained.get(key, 1)} (another puzzle type or size)")


@dataclass
class EvalSetup:
    model: torch.nn.Module
    ckpt: dict
    weights: str                 # "EMA" or "raw"
    device: torch.device
    dtype: torch.dtype
    device_line: str             # which device and dtype, and why
    data: puzzles.Data
    data_from: str               # where the data section came from
    split: PuzzleSplit
    inputs: np.ndarray           # the first `limit` examples of the split
    labels: np.ndarray           # their training labels (IGNORE_LABEL where no target)
    ids: np.ndarray              # their puzzle identifiers
    valid_fn: object             # the puzzle's rule check, or None

    @property
    def hooks(self) -> puzzles.Hooks | None:
        return self.data.hooks


def load_for_eval(checkpoint: str, split_name: str, limit: int, data_config: str | None, device_name: str,
                  dtype_name: str, progress: bool) -> EvalSetup:
    """The trained model of `checkpoint` and the first `limit` (0: all) examples of its data's split."""
    device, dtype, device_line = pick_device_dtype(device_name, dtype_name)
    model, ckpt, weights = load_trained(checkpoint, device)
    data_cfg, data_from = data_section(ckpt, data_config)
    data = puzzles.load(data_cfg, progress=progress)
    check_fits(data.train.meta, ckpt["dataset"], checkpoint)
    split = {"test": data.test, "train": data.train, "val": data.val}[split_name]
    if split is None:
        raise ConfigError("--split val: the data has no validation split (set data.n_val or data.val_subset)")
    n = min(limit or split.n_examples, split.n_examples)
    valid_fn = data.hooks.valid_fn(split.meta) if data.hooks else None
    return EvalSetup(model, ckpt, weights, device, dtype, device_line, data, data_from, split,
                     np.asarray(split.inputs[:n]), split.labels_for_training(np.arange(n)),
                     split.example_identifiers()[:n], valid_fn)
