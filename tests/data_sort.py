"""Sorting digits: a puzzle type in one file, the example of impl/puzzles.py's contract.

    {"data": {"puzzle": "sort", "sort": {"length": 6}}}    # an override file; RUN_CONFIG is not edited

The input is a sequence of digits, the answer the same digits in increasing order. Tokens: 0 is
PAD, digit d is token d + 1. Only the required functions and CONFIG are here: every hook is
optional (no augmentation, rule check, parsing or printing; solve.py takes the token ids).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import puzzle_dataset as pd

CONFIG = {                 # data.sort: this puzzle type's data keys, with their defaults
    "length": 6,           # digits per sequence
    "digits": 4,           # digits 0..digits-1 (tokens 1..digits)
    "n_train": 2000,       # training sequences
    "n_test": 256,         # held-out sequences
}


def check_data_config(cfg: dict) -> None:
    """Values of data.sort (types and unknown keys are checked before); errors name the key."""
    for key, value in cfg["sort"].items():
        if value < 1:
            raise ValueError(f"data.sort.{key}: {value} must be >= 1")
    if cfg["sort"]["digits"] > 255:
        raise ValueError(f"data.sort.digits: {cfg['sort']['digits']} must be <= 255 (a token is one byte)")


def build_dataset(cfg: dict, progress: bool = True) -> tuple[Path, str]:
    """The dataset folder of data.sort (built once, in the official layout) and its description."""
    s = cfg["sort"]
    name = f"sort_len{s['length']}_d{s['digits']}_tr{s['n_train']}_te{s['n_test']}_s{cfg['seed']}"
    description = f"sorting {s['length']} digits 0..{s['digits'] - 1}, {s['n_train']} train / {s['n_test']} test"

    def build(path: Path) -> str:
        rng = np.random.default_rng(cfg["seed"])
        splits = {}
        for split, n in (("train", s["n_train"]), ("test", s["n_test"])):
            inputs = rng.integers(1, s["digits"] + 1, size=(n, s["length"]), dtype=np.uint8)  # digit d: token d+1
            arrays = pd.split_arrays(inputs, np.sort(inputs, axis=1))   # one example per puzzle, identifier 0
            splits[split] = (arrays, pd.make_metadata(arrays, vocab_size=s["digits"] + 1, puzzle="sort",
                                                      description=description))
        pd.write_dataset(path, splits)
        return description

    return pd.find_or_build(Path(cfg["data_dir"]) / name, build)
