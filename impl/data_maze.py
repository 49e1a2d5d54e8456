"""Mazes for the TRM sandbox: the data.maze section of a run config, built into a dataset folder in
the official layout (impl/puzzle_dataset.py), and what the trainer, evaluator and solve.py may ask
of mazes (augmentation, the path checker, breakdowns, parsing and printing; see impl/puzzles.py).

Sources (data.maze.source):
* ``generated``: random N x N mazes with exactly one shortest path between S and G
  (maze_gen.py), whose splits share no maze up to the 8 symmetries (and S, G exchanged).
* ``hf``: the CSV files of ``sapientinc/maze-30x30-hard-1k`` (Maze-Hard), or any dataset repo
  with the same ``source,question,answer,rating`` layout (maze_hf.py).
Each becomes a folder in data.data_dir named by its parameters, with train/, test/ (and val/ when
asked for), built once, atomically; a damaged one is rebuilt. The token layout is the official
maze builder's (maze_rules.py), so official Maze-Hard builds and these are interchangeable.

    python impl/data_maze.py bench                   # generator throughput at 8x8, 15x15 and 30x30
    python impl/data_maze.py generate --size 12      # build (or find) a generated dataset folder
"""
from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

import errors
import maze_gen
import puzzle_dataset as pd
from cli_args import check_options, finite, folder_rule, seed_rule, with_option
from config import SEED_MAX
from maze_hf import load_hf
from maze_rules import GOAL, OPEN, PATH, START, VOCAB_SIZE, WALL, augment, canonical_key, dihedral_index, format_maze, parse_maze, path_lengths, path_problem, \
    size_of, unique_label, valid_paths

PUZZLE = "maze"  # the name in dataset.json and in data.puzzle
SOURCES = ("generated", "hf")
VALIDITY = "a shortest path from S to G"  # what solve.py says a valid answer is
SOLUTION = "the unique shortest path"     # what solve.py compares the answer with

# ----------------------------------------------------------------------------------------------
# The data section: checks, the dataset folder, building it
# ----------------------------------------------------------------------------------------------


def _maze_cfg(cfg: dict) -> dict:
    if not isinstance(cfg.get("maze"), dict):
        raise ValueError("data.maze: missing from the data config (an object of the maze keys)")
    return cfg["maze"]


def _get(m: dict, key: str):
    if key not in m:
        raise ValueError(f"data.maze.{key}: missing from the data config")
    return m[key]


def check_data_config(cfg: dict) -> None:
    """Range checks on the data.maze values the chosen source uses (types are checked by the caller)."""
    m = _maze_cfg(cfg)
    source = _get(m, "source")
    if source not in SOURCES:
        raise ValueError(f"data.maze.source: {source!r} is not one of {', '.join(SOURCES)}")
    if not 0 <= cfg.get("seed", 0) <= SEED_MAX:
        raise ValueError(f"data.seed: {cfg['seed']} must be in 0..{SEED_MAX} (numpy's seed range)")
    if source == "generated":
        maze_gen.check_args(_get(m, "size"), _get(m, "wall_density"), _get(m, "min_path_len"))
        for key in ("n_train", "n_test"):
            if _get(m, key) < 1:
                raise ValueError(f"data.maze.{key}: {m[key]} must be >= 1")
        if _get(m, "n_val") < 0:
            raise ValueError(f"data.maze.n_val: {m['n_val']} must be >= 0")
    else:
        for key in ("train_subset", "test_subset", "val_subset"):
            if _get(m, key) < 0:
                raise ValueError(f"data.maze.{key}: {m[key]} must be >= 0" + (" (0 = all rows)" if key != "val_subset" else ""))
        if not _get(m, "repo_id").count("/") == 1:
            raise ValueError(f"data.maze.repo_id: {m['repo_id']!r} is not of the form owner/name")


def dataset_path(cfg: dict) -> Path:
    """The folder in data.data_dir that holds the dataset a data section describes."""
    m = cfg["maze"]
    if m["source"] == "generated":
        val = f"_va{m['n_val']}" if m["n_val"] else ""
        name = (f"maze{m['size']}_tr{m['n_train']}{val}_te{m['n_test']}_p{m['min_path_len']}"
                f"_w{m['wall_density']:g}_s{cfg['seed']}")
    else:
        val = f"_va{m['val_subset']}" if m["val_subset"] else ""
        skip = "_skipbad" if m["skip_bad_rows"] else ""
        name = (f"hf_{m['repo_id'].replace('/', '--')}_sub{m['train_subset']}-{m['test_subset']}{val}"
                f"_s{cfg['seed']}{skip}")
    return Path(cfg["data_dir"]) / name


def _arrays(cfg: dict, progress: bool) -> tuple[dict, str]:
    """{split}_inputs / _labels (/ _ratings) for each split, and a one-line description."""
    m = cfg["maze"]
    if m["source"] == "generated":
        arrays = maze_gen.make_generated_split(m["size"], m["n_train"], m["n_test"], m["wall_density"],
                                               m["min_path_len"], cfg["seed"], n_val=m["n_val"], progress=progress)
        val = f" / {m['n_val']} val" if m["n_val"] else ""
        return arrays, (f"generated mazes {m['size']}x{m['size']}, {m['n_train']} train{val} / {m['n_test']} test, "
                        f"shortest path >= {m['min_path_len']} moves, wall density {m['wall_density']:g}")
    arrays = load_hf(repo_id=m["repo_id"], train_subset=m["train_subset"], test_subset=m["test_subset"],
                     val_subset=m["val_subset"], force_download=m["force_download"], seed=cfg["seed"],
                     skip_bad_rows=m["skip_bad_rows"], progress=progress)
    size = size_of(arrays["train_inputs"].shape[1])
    val = f" / {len(arrays['val_inputs'])} val" if "val_inputs" in arrays else ""
    return arrays, (f"{m['repo_id']} (train/test.csv), {size}x{size} mazes, {len(arrays['train_inputs'])} "
                    f"train{val} / {len(arrays['test_inputs'])} test")


def write_maze_dataset(path: Path, arrays: dict, description: str) -> Path:
    """Write {split}_* arrays as a dataset folder in the official layout (other arrays, such as
    ratings, as extra per-example arrays)."""
    size = size_of(arrays["train_inputs"].shape[1])
    splits = {}
    for split in ("train", "val", "test"):
        if f"{split}_inputs" not in arrays:
            continue
        layout = pd.split_arrays(arrays[f"{split}_inputs"], arrays[f"{split}_labels"])
        meta = pd.make_metadata(layout, vocab_size=VOCAB_SIZE, puzzle=PUZZLE, grid_size=size, description=description)
        extra = {key[len(split) + 1:]: value for key, value in arrays.items()
                 if key.startswith(f"{split}_") and key[len(split) + 1:] not in ("inputs", "labels")}
        splits[split] = ({**layout, **extra}, meta)
    return pd.write_dataset(path, splits, identifiers=["<blank>"])


def build_dataset(cfg: dict, progress: bool = True) -> tuple[Path, str]:
    """The dataset folder of a data section: found and checked, or built. A damaged folder is
    discarded and built again; data.maze.force_download (hf) builds it again from a new download."""
    check_data_config(cfg)
    m = cfg["maze"]

    def build(path: Path) -> str:
        arrays, description = _arrays(cfg, progress)
        write_maze_dataset(path, arrays, description)
        return description

    force = m["source"] == "hf" and m["force_download"]
    return pd.find_or_build(dataset_path(cfg), build, "data.maze.force_download is set" if force else "")


# ----------------------------------------------------------------------------------------------
# What the trainer, evaluator and solve.py may ask (see impl/puzzles.py)
# ----------------------------------------------------------------------------------------------


def grid_size(meta: pd.Metadata) -> int:
    try:
        return size_of(meta.seq_len)
    except ValueError as e:
        raise errors.DataError(f"a maze dataset has N x N cells per example: {e}") from None


def augment_examples(inputs: np.ndarray, labels: np.ndarray, meta: pd.Metadata, rng: np.random.Generator):
    """One of the 8 symmetries of the square per example, from rng (maze_rules.augment)."""
    return augment(inputs, labels, grid_size(meta), rng)


def _gather(tokens: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.asarray(tokens)[:, index]


def symmetries(meta: pd.Metadata, k: int, rng: np.random.Generator) -> list[tuple]:
    """k (forward, inverse) pairs of functions on token arrays (N, S): the identity first, then the
    other 7 symmetries of the square in a random order (past 8 members they repeat, in the same order)."""
    index = dihedral_index(grid_size(meta))                              # (8, S)
    order = np.concatenate([[0], 1 + rng.permutation(7)])
    pairs = []
    for member in range(k):
        forward = index[order[member % 8]]
        pairs.append((partial(_gather, index=forward), partial(_gather, index=np.argsort(forward))))
    return pairs


def valid_fn(meta: pd.Metadata):
    """Answers that mark a shortest path from S to G (maze_rules.valid_paths)."""
    size = grid_size(meta)
    return lambda inputs, answers: valid_paths(inputs, answers, size)


def breakdowns(split: pd.PuzzleSplit) -> dict[str, np.ndarray]:
    """Evaluation groups: by the length (moves) of the labelled path."""
    return {"by_path_len": path_lengths(np.asarray(split.labels))}


def parse(text: str, meta: pd.Metadata) -> np.ndarray:
    """A maze typed for a model trained on N x N mazes (maze_rules.parse_maze); ValueError says why not."""
    size = grid_size(meta)
    maze = parse_maze(text)
    if len(maze) != size * size:
        own = size_of(len(maze))
        raise ValueError(f"the maze is {own}x{own} but the checkpoint was trained on {size}x{size} mazes")
    return maze


def reference(maze: np.ndarray, meta: pd.Metadata) -> np.ndarray | None:
    """The maze's unique shortest path (as a label), or None when it has several (any one of them
    is valid); ValueError when it has none (not answered)."""
    try:
        return unique_label(maze, grid_size(meta))
    except ValueError as e:
        raise ValueError(f"{e}; not answered") from None


def problem(maze: np.ndarray, answer: np.ndarray, meta: pd.Metadata) -> str:
    """Why an answer is not a shortest path from S to G ('' when it is one)."""
    return path_problem(maze, answer, grid_size(meta))


COLOURS = {WALL: "#444", OPEN: "", START: "#3b3", GOAL: "#d33", PATH: "#39f"}  # cells(): other tokens light grey


def cells(tokens: np.ndarray, meta: pd.Metadata) -> list[list[tuple[str, str]]]:
    """The maze for pictures of the recursion: walls dark, S green, G red, the path blue."""
    size = grid_size(meta)
    grid = np.asarray(tokens).reshape(size, size)
    return [[("S" if t == START else "G" if t == GOAL else "", COLOURS.get(int(t), "#ccc")) for t in row]
            for row in grid]


def format(tokens: np.ndarray, meta: pd.Metadata, marked: np.ndarray | None = None) -> str:
    return format_maze(tokens, grid_size(meta), marked)


# ----------------------------------------------------------------------------------------------
# Command line: bench and generate
# ----------------------------------------------------------------------------------------------

# size -> (min_path_len, wall_density, mazes) timed by `bench`: configs/recipes/maze.json's setting, a middle size, Maze-Hard's bar
_BENCH = {8: (6, 0.4, 6000), 15: (20, 0.4, 6000), 30: (111, 0.38, 200)}


def _histogram(values: np.ndarray) -> str:
    counts = Counter(values.tolist())
    return " ".join(f"{k}:{counts[k]}" for k in sorted(counts))


def _bench(args: argparse.Namespace) -> None:
    maze_gen.POOL_AFTER_S = 0.0  # measure all the workers: start them with the first chunk (start-up timed)
    workers = args.workers or os.cpu_count() or 1
    print(f"maze generator bench: {workers} worker process(es), {os.cpu_count()} cores, seed {args.seed}")
    for size in args.sizes:
        min_len, density, n = _BENCH.get(size, (2 * size, 0.4, 1000))
        n = max(1, int(n * args.scale))
        start = time.perf_counter()
        data = maze_gen.generate_mazes(size, n, density, min_len, seed=args.seed, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        lengths = path_lengths(data["labels"])
        walls = float((data["inputs"] == 1).mean())
        print(f"{size}x{size}: {n} mazes, shortest path >= {min_len} moves, wall density {density:g}: "
              f"{seconds:.2f} s = {n / seconds:,.0f} mazes/s")
        print(f"  path length min {lengths.min()} median {int(np.median(lengths))} max {lengths.max()}; "
              f"walls {walls:.1%} of cells (after the tie-breaking walls)")


# the options of `generate` that set a data section's keys, named in an error
OPTIONS = {"data.maze.size": "--size", "data.maze.n_train": "--n-train", "data.maze.n_val": "--n-val",
           "data.maze.n_test": "--n-test", "data.maze.min_path_len": "--min-path-len",
           "data.maze.wall_density": "--wall-density", "data.seed": "--seed", "data.data_dir": "--data-dir"}


def _generate_config(args: argparse.Namespace) -> dict:
    """The data section `generate` builds, checked: an error names the key and the option."""
    cfg = {"seed": args.seed, "data_dir": args.data_dir,
           "maze": {"source": "generated", "size": args.size, "n_train": args.n_train, "n_val": args.n_val,
                    "n_test": args.n_test, "min_path_len": args.min_path_len, "wall_density": args.wall_density}}
    try:
        check_data_config(cfg)
    except ValueError as e:
        errors.fail(with_option(str(e), OPTIONS))
    check_options([folder_rule("--data-dir", args.data_dir)])
    return cfg


def _check_bench(args: argparse.Namespace) -> None:
    lo, hi = maze_gen.MIN_SIZE, maze_gen.MAX_SIZE
    check_options([("--sizes", size, lo <= size <= hi, f"is not in {lo}..{hi}") for size in args.sizes] + [
        ("--scale", args.scale, finite(args.scale) and args.scale > 0, "must be a finite number > 0"),
        ("--workers", args.workers, args.workers >= 0, "must be >= 0 (0: all cores)"),
        seed_rule("--seed", args.seed)])


def _generate(args: argparse.Namespace, cfg: dict) -> None:
    start = time.perf_counter()
    path, description = build_dataset(cfg)
    print(f"{path}: {description} ({time.perf_counter() - start:.1f} s)")
    for split in ("train", "val", "test"):
        if not (path / split).exists():
            continue
        data = pd.read_split(path, split)
        classes = len(set(canonical_key(np.asarray(data.inputs), args.size)))
        print(f"{split}: {data.n_examples} mazes, {classes} distinct up to symmetry, path lengths "
              f"{_histogram(path_lengths(np.asarray(data.labels)))}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Maze data: generator benchmark and dataset builder.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="measure generator throughput (15x15 and 30x30)")
    bench.add_argument("--sizes", type=int, nargs="+", default=[8, 15, 30], help="maze sizes to time")
    bench.add_argument("--scale", type=float, default=1.0, help="multiply the default maze counts")
    bench.add_argument("--workers", type=int, default=0, help="worker processes (0 = all cores)")
    bench.add_argument("--seed", type=int, default=0, help="generator seed")
    gen = sub.add_parser("generate", help="build (or find) a generated dataset folder and print counts")
    gen.add_argument("--size", type=int, default=12, help="N of N x N mazes")
    gen.add_argument("--n-train", type=int, default=2000, help="training mazes")
    gen.add_argument("--n-val", type=int, default=0, help="validation mazes")
    gen.add_argument("--n-test", type=int, default=500, help="test mazes")
    gen.add_argument("--min-path-len", type=int, default=16, help="shortest path at least this many moves")
    gen.add_argument("--wall-density", type=float, default=0.4, help="chance a cell starts as a wall")
    gen.add_argument("--seed", type=int, default=0, help="generator seed")
    gen.add_argument("--data-dir", default="data", help="where dataset folders are kept")
    args = parser.parse_args(argv)
    if args.command == "bench":
        _check_bench(args)
    cfg = _generate_config(args) if args.command == "generate" else None
    try:
        _bench(args) if args.command == "bench" else _generate(args, cfg)
    except ValueError as e:
        if isinstance(e, errors.UserError):
            raise
        raise errors.ConfigError(str(e)) from None


if __name__ == "__main__":
    errors.run_cli(main)  # a user error or Ctrl-C ends with one line, no traceback
