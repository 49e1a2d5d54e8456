"""Puzzle types, and the data of a run: which module builds and understands which puzzle.

    data = puzzles.load(config["data"])   # Data(path, train, test, val, hooks, description)

With `data.sources` (a list of data sections), the run trains on several datasets at once, written
together as one (impl/mixed.py). With `data.path` set, the run reads that folder, in the official layout (impl/puzzle_dataset.py),
whoever built it; its dataset.json may name a puzzle type ("puzzle": "sudoku" or "maze"), whose module then
supplies augmentation and a validity check. Otherwise `data.puzzle`'s module builds the dataset
(or finds it already built) in `data.data_dir` from the rest of the data section.

A puzzle module (data_sudoku.py, ...) offers, by name:
    check_data_config(cfg)                      its keys of the data section, checked
    build_dataset(cfg, progress) -> (Path, str)  the dataset folder and a one-line description
    augment(inputs, labels, meta, rng)          a random validity-preserving transform (optional)
    valid_fn(meta) -> fn(inputs, answers)       (N,) bool: answers that obey the rules (optional)
    symmetries(meta, k, rng) -> [(forward, inverse)] * k   k transforms of token arrays (N, S), the first
                                                the identity, each with the function that exactly undoes it
                                                on answers: test-time ensembles, impl/ensemble.py (optional)
    breakdowns(split) -> {name: values}         groups for evaluation tables (optional)
    parse(text, meta) / format(tokens, meta[, marked])   typed puzzles and printing, for solve.py (optional)
    reference(puzzle, meta) -> answer | None    the puzzle's unique answer (None: several right answers;
                                                ValueError: not to be answered), for solve.py (optional)
    problem(puzzle, answer, meta) -> str        why an answer is not valid ('' if it is), for solve.py (optional)
    report(split, pred, out_dir) -> (record, text, files)   the puzzle's own evaluation of predictions
                                                (ARC: voting, pass@K, a submission), for evaluate.py (optional)
The trainer and evaluator call only these; they know no puzzle.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from errors import ConfigError
from puzzle_dataset import Metadata, PuzzleSplit, read_dataset, read_split

MODULES = {"sudoku": "data_sudoku", "maze": "data_maze", "arc": "data_arc"}  # data.puzzle -> module in impl/


def module_for(name: str) -> ModuleType | None:
    """The module of a puzzle type ("" or an unknown name: None)."""
    return importlib.import_module(MODULES[name]) if name in MODULES else None


class Hooks:
    """What a puzzle module offers, with defaults for what it does not."""

    def __init__(self, name: str, module: ModuleType) -> None:
        self.name, self.module = name, module
        self.augment = getattr(module, "augment_examples", None)
        # for solve.py: typed puzzles, printing, the unique answer, and what the checks are called
        self.parse = getattr(module, "parse", None)
        self.format = getattr(module, "format", None)
        self.reference = getattr(module, "reference", None)
        self.problem = getattr(module, "problem", None)  # why an answer is not valid, in words (optional)
        self.validity = getattr(module, "VALIDITY", "the puzzle's rules")
        self.solution = getattr(module, "SOLUTION", "the unique answer")

    def valid_fn(self, meta: Metadata):
        make = getattr(self.module, "valid_fn", None)
        return make(meta) if make is not None else None

    def symmetries(self, meta: Metadata, k: int, rng):
        make = getattr(self.module, "symmetries", None)
        return make(meta, k, rng) if make is not None else None

    def breakdowns(self, split: PuzzleSplit) -> dict:
        make = getattr(self.module, "breakdowns", None)
        return make(split) if make is not None else {}

    def report(self, split: PuzzleSplit, pred: dict, out_dir: Path):
        make = getattr(self.module, "report", None)
        return make(split, pred, out_dir) if make is not None else None

    def groups(self, inputs) -> dict:
        """Breakdowns the training loop's evaluations report (a mixed dataset: by source)."""
        return {}


def hooks_for(meta: Metadata) -> Hooks | None:
    if meta.puzzle == "mixed":
        import mixed  # here, not at the top: mixed imports this module
        return mixed.MixedHooks(meta)
    module = module_for(meta.puzzle)
    return Hooks(meta.puzzle, module) if module is not None else None


@dataclass
class Data:
    path: Path
    train: PuzzleSplit
    test: PuzzleSplit
    val: PuzzleSplit | None  # a validation split, when the dataset has one (best.pt is chosen on it)
    hooks: Hooks | None
    description: str


def check_data_config(cfg: dict) -> None:
    """The data section's values (types are checked by the caller); errors name the data.* key."""
    if cfg.get("sources"):
        import mixed
        return mixed.check_data_config(cfg)
    if cfg["path"]:
        return
    if cfg["puzzle"] not in MODULES:
        raise ConfigError(f"data.puzzle: {cfg['puzzle']!r} is not one of {', '.join(MODULES)} "
                          f"(or set data.path to a dataset folder)")
    module_for(cfg["puzzle"]).check_data_config(cfg)


def load(cfg: dict, progress: bool = True) -> Data:
    """Build or find the dataset the data section describes, and read it (checked)."""
    check_data_config(cfg)
    if cfg.get("sources"):
        import mixed
        path, description = mixed.build_dataset(cfg, progress=progress)
    elif cfg["path"]:
        path = Path(cfg["path"])
        if not path.is_dir():
            raise ConfigError(f"data.path: {path} is not a folder (a dataset folder holds train/ and test/)")
        description = f"{path} (official layout)"
    else:
        path, description = module_for(cfg["puzzle"]).build_dataset(cfg, progress=progress)
    train, test = read_dataset(path)
    val = read_split(path, "val") if (path / "val").is_dir() else None
    hooks = hooks_for(train.meta)
    if cfg["path"]:
        description += f", puzzle type {hooks.name}" if hooks else ", no puzzle type named: no augmentation or validity"
    return Data(path, train, test, val, hooks, description)
