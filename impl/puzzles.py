"""Puzzle types, and the data of a run: which module builds and understands which puzzle.

    data = puzzles.load(config["data"])   # Data(path, train, test, val, hooks, description)

data.puzzle "X" is the module data_X, found by name (impl/ is on the path): data_sudoku.py,
data_maze.py and data_arc.py are built in, and adding a puzzle type is writing one file data_X.py
(tests/data_sort.py is a small example). With `data.sources` (a list of data sections) the run
trains on several datasets at once, written together as one (impl/mixed.py). With `data.path`
set, the run reads that folder, in the official layout (impl/puzzle_dataset.py), whoever built it;
its dataset.json may name a puzzle type ("puzzle": "X"), whose module then supplies the hooks.

The contract of a puzzle module, all of it (the code reads exactly these names):

Required
    check_data_config(cfg)            cfg is the run's data section, its types already checked against
                                      the defaults (config.merge_config: unknown keys and wrong types never
                                      get here). Raise ValueError (errors.ConfigError is one) for a value that
                                      is impossible, the message starting with its dotted key:
                                      "data.X.length: 0 must be >= 1"; the caller prefixes the file.
    build_dataset(cfg, progress) -> (Path, str)
                                      find or build the dataset in the official layout (puzzle_dataset:
                                      find_or_build, split_arrays, make_metadata, write_dataset) in a folder
                                      under cfg["data_dir"] named by the data it holds, with "puzzle": "X"
                                      in its dataset.json (make_metadata(..., puzzle="X")): that is how a
                                      checkpoint, evaluate.py and solve.py find this module again. Returns
                                      the folder and a one-line description.
Constants (optional)
    CONFIG = {...}                    the defaults of the data.X section, one comment per key. A run's
                                      config without data.X gets them (train_cli.expand_base), so an
                                      override file sets data.X.* with no edit of a RUN_CONFIG; unknown keys
                                      and wrong types in data.X are still errors.
    VALIDITY = "..."                  solve.py: what a valid answer is (default "the puzzle's rules")
    SOLUTION = "..."                  solve.py: what the answer is compared with (default "the unique answer")
Hooks (optional: every caller works without them)
    augment_examples(inputs, labels, meta, rng) -> (inputs, labels)
                                      a random validity-preserving transform of a batch of training examples
                                      (N, S), drawn from rng only; used when data.augment is true
    valid_fn(meta) -> fn(inputs, answers) -> (N,) bool
                                      answers that obey the rules, equal to the label or not (metrics'
                                      "validity", the "valid" selection of test-time ensembles)
    symmetries(meta, k, rng) -> [(forward, inverse)] * k
                                      k transforms of token arrays (N, S), the first the identity, each with
                                      the function that exactly undoes it on answers (impl/ensemble.py)
    breakdowns(split) -> {name: (N,) values}   groups of examples for evaluate.py's tables
    groups(inputs) -> {name: (N,) values}      groups of the training loop's evaluations, from the inputs alone
    parse(text, meta) -> (S,) tokens          solve.py: a typed puzzle; ValueError says why not
                                              (default: the token ids, separated by spaces)
    format(tokens, meta, marked=None) -> str  solve.py: a puzzle or answer printed, marked cells flagged
                                              (default: the token ids, '*' after marked ones)
    reference(puzzle, meta) -> answer | None  solve.py: the unique answer (None: several are right;
                                              ValueError: the puzzle is not to be answered)
    problem(puzzle, answer, meta) -> str      solve.py: why an answer is not valid ('' if it is)
    report(split, pred, out_dir) -> (record, text, files)
                                              evaluate.py: the puzzle's own evaluation (ARC: voting, pass@K)
    cells(tokens, meta) -> rows of (text, css colour)
                                              recursion_view.py (solve.py / evaluate.py --html, --png): a
                                              token array drawn as a grid (default: the token ids)
A function of the module whose name is close to one of these (augment vs augment_examples) is
reported on stderr, once: it would otherwise be silently ignored.

Tokens: inputs and labels are (examples, seq_len) integer arrays. Token 0 is PAD (pad_id 0); a
puzzle's own tokens are 1..vocab_size-1 (Sudoku: 1 blank, 2.. the digits). In labels, 0 is
ignore_label_id (make_metadata's default, as the official builders write): "no target". Training
turns it into IGNORE_LABEL (puzzle_dataset.training_labels), which the loss and every metric skip,
so a position that must be answered never has label 0. A source of data.sources needs pad_id 0
and ignore_label_id 0 or none (impl/mixed.py).
"""
from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import mixed
from errors import ConfigError
from puzzle_dataset import Metadata, PuzzleSplit, read_dataset, read_split

BUILT_IN = ("sudoku", "maze", "arc")  # impl/data_<name>.py, for messages; any data_<name> module is found
REQUIRED = ("check_data_config", "build_dataset")
HOOKS = ("augment_examples", "valid_fn", "symmetries", "breakdowns", "groups", "parse", "format", "reference",
         "problem", "report", "cells")
_checked: set[str] = set()  # modules whose names were compared with the contract's


def find_module(name: str) -> ModuleType | None:
    """The module data_<name>, imported; None when there is none (an error inside it is raised)."""
    if not name.isidentifier():
        return None
    try:
        module = importlib.import_module(f"data_{name}")
    except ModuleNotFoundError as e:
        if e.name != f"data_{name}":  # the module is there, but something it imports is not
            raise
        return None
    _check_names(module)
    return module


def module_for(name: str, key: str = "data.puzzle") -> ModuleType:
    """The module of a puzzle type; a ConfigError naming key says which file to write."""
    module = find_module(name)
    if module is None:
        raise ConfigError(f"{key}: {name!r} is not a puzzle type (built in: {', '.join(BUILT_IN)}); to add it, write "
                          f"impl/data_{name}.py defining {' and '.join(REQUIRED)} (the contract: impl/puzzles.py), "
                          f"or set data.path to a dataset folder")
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise ConfigError(f"{module.__file__}: a puzzle module defines {' and '.join(REQUIRED)} "
                          f"(impl/puzzles.py); this one has no {' or '.join(missing)}")
    return module


def _check_names(module: ModuleType) -> None:
    """Say once, on stderr, which functions of module look like a name of the contract but are not one."""
    if module.__name__ in _checked:
        return
    _checked.add(module.__name__)
    names = REQUIRED + HOOKS
    for fn, obj in vars(module).items():
        if fn in names or fn.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != module.__name__:
            continue
        close = difflib.get_close_matches(fn, names, n=1, cutoff=0.75) or [h for h in names if h.startswith(fn + "_")]
        if close:
            print(f"{module.__file__}: {fn} is not a name of the puzzle contract, so nothing calls it "
                  f"(did you mean {close[0]}? see impl/puzzles.py)", file=sys.stderr)


def _entries(section: object) -> list[tuple[str, dict]]:
    """(where, entry) for a data section (or an override of one) and each of its sources that
    names a puzzle type: ("data", section), ("data.sources[0]", entry), ...; ill-typed ones skipped."""
    if not isinstance(section, dict):
        return []
    sources = section.get("sources")
    entries = [("data", section)] + ([(f"data.sources[{i}]", s) for i, s in enumerate(sources) if isinstance(s, dict)]
                                     if isinstance(sources, list) else [])
    return [(where, e) for where, e in entries if isinstance(e.get("puzzle"), str)]


def data_defaults(data: dict, override: object = None) -> dict:
    """A copy of data with data.<name> = the module's CONFIG for each puzzle type that data or
    override (its data section, possibly ill-typed) names, where data has no key <name>. An
    override that sets data.<name> for a puzzle type without a module gets module_for's error."""
    data = copy.deepcopy(data)
    for where, entry in _entries(data) + _entries(override):
        name = entry["puzzle"]
        if name in data:
            continue
        module = find_module(name)
        if module is None and name in entry:  # rather than "unknown key 'data.<name>'"
            module_for(name, f"{where}.puzzle")
        if module is not None and isinstance(getattr(module, "CONFIG", None), dict):
            data[name] = copy.deepcopy(module.CONFIG)
    return data


class Hooks:
    """What a puzzle module (or an object with the same names) offers, with defaults for what it does not."""

    def __init__(self, name: str, module: object) -> None:
        self.name, self.module = name, module
        self.augment = getattr(module, "augment_examples", None)
        # for solve.py: typed puzzles, printing, the unique answer, and what the checks are called
        self.parse = getattr(module, "parse", None)
        self.format = getattr(module, "format", None)
        self.reference = getattr(module, "reference", None)
        self.problem = getattr(module, "problem", None)
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

    def groups(self, inputs) -> dict:
        make = getattr(self.module, "groups", None)
        return make(inputs) if make is not None else {}

    def cells(self, meta: Metadata):
        """tokens -> rows of (text, css colour), for pictures of the recursion (None: the module has none)."""
        make = getattr(self.module, "cells", None)
        return (lambda tokens: make(tokens, meta)) if make is not None else None

    def report(self, split: PuzzleSplit, pred: dict, out_dir: Path):
        make = getattr(self.module, "report", None)
        return make(split, pred, out_dir) if make is not None else None


def hooks_for(meta: Metadata) -> Hooks | None:
    """The hooks of a dataset's puzzle type (None: it names none, or one without a module)."""
    if meta.puzzle == "mixed":
        return Hooks("mixed", mixed.MixedPuzzle(meta, hooks_for))
    module = find_module(meta.puzzle)
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
    cfg = data_defaults(cfg)
    if cfg.get("sources"):
        return mixed.check_data_config(cfg, check_data_config)
    if cfg["path"]:
        return
    module_for(cfg["puzzle"]).check_data_config(cfg)


def load(cfg: dict, progress: bool = True) -> Data:
    """Build or find the dataset the data section describes, and read it (checked)."""
    check_data_config(cfg)
    cfg = data_defaults(cfg)
    if cfg.get("sources"):
        path, description = mixed.build_dataset(cfg, load, progress=progress)
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
        name = train.meta.puzzle
        description += (f", puzzle type {hooks.name}" if hooks else
                        f", puzzle type {name!r} without a module data_{name}: no augmentation or validity" if name else
                        ", no puzzle type named: no augmentation or validity")
    return Data(path, train, test, val, hooks, description)
