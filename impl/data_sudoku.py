"""Sudoku for the TRM sandbox: the data section of a run config, built into a dataset folder in
the official layout (impl/puzzle_dataset.py), and what the trainer and evaluator may ask of
Sudoku (augmentation, the validity check, breakdowns, parsing and printing; see impl/puzzles.py).

Sources (data.source):
* ``builtin``: ten 9x9 puzzles embedded below, for smoke tests without any download (test = train).
* ``generated``: random puzzles with exactly one solution (sudoku_gen.py), 4x4, 6x6 or 9x9, whose
  splits share no solution grid up to symmetry (sudoku_rules.split_key), nor, with
  data.held_out_from, with another dataset folder's training split (a harder set for a trained model).
* ``hf``: the CSV files of ``sapientinc/sudoku-extreme``, or any dataset repo with the same
  ``source,question,answer,rating`` layout (sudoku_hf.py).
* ``csv``: local CSV files in that layout, by path (data.csv_train, data.csv_test), with the same
  row checks (sudoku_hf.load_csv); without data.csv_train the test file is both splits.
Each becomes a folder in data.data_dir named by its parameters, with train/, test/ (and val/
when asked for), built once, atomically; a damaged one is rebuilt. The token layout is the
official builder's (sudoku_rules.py), so official Sudoku builds and these are interchangeable.

    python impl/data_sudoku.py bench                 # generator throughput per grid size
    python impl/data_sudoku.py generate --size 6     # build (or find) a generated dataset folder
"""
from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

import errors
import puzzle_dataset as pd
import sudoku_gen
from cli_args import check_options, finite, folder_rule, seed_rule, with_option
from config import SEED_MAX
from sudoku_gen import make_generated_split, split_supply_problem
from sudoku_hf import load_csv, load_hf
from sudoku_rules import BLANK, SIZES, apply_symmetry, augment, box_shape, canonical_key, format_grid, format_marked, \
    invert_symmetry, parse_puzzle, random_symmetry, split_key, valid_grids, vocab_size
from sudoku_solver import solve

PUZZLE = "sudoku"  # the name in dataset.json and in data.puzzle
VALIDITY = "rules and givens"  # what solve.py says a valid answer is
SOLUTION = "the unique solution"  # what solve.py compares the answer with

# ----------------------------------------------------------------------------------------------
# Built-in sample: real 9x9 puzzles with their (unique) solutions
# ----------------------------------------------------------------------------------------------

# (name, puzzle, solution). Famous puzzles first, then five made by generate_puzzles (seed noted).
# tests/test_data_sudoku.py checks every solution and its uniqueness with an independent solver.
_BUILTIN = (
    (
        "wikipedia",
        "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79",
        "534678912672195348198342567859761423426853791713924856961537284287419635345286179",
    ),
    (
        "norvig top95 #1",
        "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......",
        "417369825632158947958724316825437169791586432346912758289643571573291684164875293",
    ),
    (
        "norvig hardest",
        "..53.....8......2..7..1.5..4....53...1..7...6..32...8..6.5....9..4....3......97..",
        "145327698839654127672918543496185372218473956753296481367542819984761235521839764",
    ),
    (
        "ai escargot",
        "1....7.9..3..2...8..96..5....53..9...1..8...26....4...3......1..4......7..7...3..",
        "162857493534129678789643521475312986913586742628794135356478219241935867897261354",
    ),
    (
        "inkala 2010",
        "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4..",
        "812753649943682175675491283154237896369845721287169534521974368438526917796318452",
    ),
    (
        "generated 24 givens (seed 4)",
        ".2.8.4.7.8.6.......7....9.19.......5...4.7....41.5.2.....5..12..13......6...7....",
        "129834576856719432374625981938162745265487319741953268487596123513248697692371854",
    ),
    (
        "generated 25 givens (seed 1)",
        ".82.......7..49...9.36...7..5.........1....6.....528..8.....594..95...32.1....6..",
        "582317946176249358943685271358461729721893465694752813837126594469578132215934687",
    ),
    (
        "generated 27 givens (seed 5)",
        "..79....1.5.....68.1..75.2..6...1.......2..43......5.2.791.....2...8...44..29..3.",
        "827964351954312768613875429362451897195728643748639512579143286231586974486297135",
    ),
    (
        "generated 30 givens (seed 2)",
        ".8.........32..4.6.2..34189.45..7..2...14.7..63....8.....65..2.9....25.3..4..1...",
        "489516237713289456526734189145867392892143765637925841371658924968472513254391678",
    ),
    (
        "generated 33 givens (seed 3)",
        "..8.4.15.......4..5.2.....6.2.978.....5..1..2.81....6.25.38..1..3...6275.1.5.963.",
        "368742159197865423542193786623978541475631892981254367256387914839416275714529638",
    ),
)


def builtin_sample() -> dict[str, np.ndarray]:
    """The embedded 9x9 puzzles: dict(inputs, labels) as uint8 tokens [10, 81]."""
    inputs = np.stack([parse_puzzle(p, 9) for _, p, _ in _BUILTIN])
    labels = np.stack([parse_puzzle(s, 9) for _, _, s in _BUILTIN])
    return dict(inputs=inputs, labels=labels)




# ----------------------------------------------------------------------------------------------
# The data section: checks, the dataset folder, building it
# ----------------------------------------------------------------------------------------------


def _cfg(cfg: dict, key: str):
    if key not in cfg:
        raise ValueError(f"data.{key}: missing from the data config")
    return cfg[key]


def data_source(cfg: dict) -> str:
    """The source a data config selects: use_builtin_sample=True overrides data.source."""
    source = "builtin" if _cfg(cfg, "use_builtin_sample") else _cfg(cfg, "source")
    if source not in ("builtin", "generated", "hf", "csv"):
        raise ValueError(f"data.source: {source!r} is not one of builtin, generated, hf, csv")
    return source


def check_data_config(cfg: dict) -> None:
    """Range checks on the values the chosen source uses (types are checked by the caller)."""
    source = data_source(cfg)
    if source != "builtin" and not 0 <= _cfg(cfg, "seed") <= SEED_MAX:
        raise ValueError(f"data.seed: {cfg['seed']} must be in 0..{SEED_MAX} (numpy's seed range)")
    if source == "generated":
        size = _cfg(cfg, "grid_size")
        if size not in SIZES:
            raise ValueError(f"data.grid_size: {size} is not one of 4, 6, 9")
        givens = _cfg(cfg, "givens")
        if len(givens) != 2:
            raise ValueError(f"data.givens: expected [lo, hi], got {givens}")
        lo, hi = givens
        if not 0 <= lo <= hi <= size * size:
            raise ValueError(f"data.givens: {list(givens)} must satisfy 0 <= lo <= hi <= {size * size} for {size}x{size}")
        for key in ("n_train", "n_test"):
            if _cfg(cfg, key) < 1:
                raise ValueError(f"data.{key}: {cfg[key]} must be >= 1")
        if _cfg(cfg, "n_val") < 0:
            raise ValueError(f"data.n_val: {cfg['n_val']} must be >= 0")
        problem = split_supply_problem(size, cfg["n_train"], cfg["n_test"], (lo, hi), cfg["n_val"])
        if problem:
            raise errors.ConfigError(f"data.{problem}")
        max_rating = _cfg(cfg, "max_rating")
        if max_rating != -1 and max_rating < _cfg(cfg, "min_rating"):
            raise ValueError(f"data.max_rating: {max_rating} must be -1 (no maximum) or >= data.min_rating ({cfg['min_rating']})")
    elif cfg.get("held_out_from"):
        raise ValueError(f"data.held_out_from: only for data.source 'generated', not {source!r}")
    if source == "csv":
        if not _cfg(cfg, "csv_test"):
            raise ValueError("data.csv_test: a CSV file is needed with data.source 'csv' "
                             "(columns source,question,answer,rating)")
        _cfg(cfg, "csv_train")
        for key in ("train_subset", "test_subset", "val_subset"):
            if _cfg(cfg, key) < 0:
                raise ValueError(f"data.{key}: {cfg[key]} must be >= 0 (0 = all rows)")
        if _cfg(cfg, "max_rating") != -1:
            raise ValueError(f"data.max_rating: {cfg['max_rating']} is not supported for source {source!r} (use -1); "
                             f"only data.min_rating filters CSV rows")
    if source in ("generated", "hf", "csv") and _cfg(cfg, "min_rating") < 0:
        raise ValueError(f"data.min_rating: {cfg['min_rating']} must be >= 0")
    if source == "hf":
        if len(_cfg(cfg, "splits")) != 2:
            raise ValueError(f"data.splits: {cfg['splits']} must name two CSV files, e.g. ['train', 'test']")
        for key in ("train_subset", "test_subset", "val_subset"):
            if _cfg(cfg, key) < 0:
                raise ValueError(f"data.{key}: {cfg[key]} must be >= 0 (0 = all rows)" if key != "val_subset"
                                 else f"data.val_subset: {cfg[key]} must be >= 0")
        if _cfg(cfg, "max_rating") != -1:
            raise ValueError(f"data.max_rating: {cfg['max_rating']} is not supported for source 'hf' (use -1); "
                             f"only data.min_rating filters CSV rows")


def _files_key(*paths: str) -> str:
    """8 hex digits that change with the files' paths, sizes and modification times (a changed file is read again)."""
    parts = []
    for path in paths:
        stat = Path(path).stat() if path and Path(path).is_file() else None
        parts.append(f"{Path(path).resolve() if path else ''}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:8]


def _held_out_labels(folder: str) -> Path:
    """The training labels of the dataset folder named by data.held_out_from (checked to exist)."""
    labels = Path(folder) / "train" / "all__labels.npy"
    if not labels.is_file():
        raise errors.ConfigError(
            f"data.held_out_from: {folder!r} holds no training split ({labels} not found); give the folder of a "
            f"built dataset, e.g. data/sudoku6_tr3000_va200_te500_g14-20_r0-any_s0 (python impl/train_trm.py makes it)")
    return labels


def held_out_keys(folder: str, size: int) -> set[bytes]:
    """Split keys of the training grids of a dataset folder (data.held_out_from), for a grid size."""
    labels = np.load(_held_out_labels(folder))
    if labels.ndim != 2 or labels.shape[1] != size * size:
        raise errors.ConfigError(f"data.held_out_from: {folder!r} holds puzzles of {labels.shape[-1]} cells, "
                                 f"not {size}x{size}")
    return {split_key(row, size) for row in labels}


def dataset_path(cfg: dict) -> Path:
    """The folder in data.data_dir that holds the dataset a data section describes."""
    source = data_source(cfg)
    if source == "builtin":
        name = "sudoku_builtin"
    elif source == "generated":
        lo, hi = cfg["givens"]
        top = "any" if cfg["max_rating"] < 0 else str(cfg["max_rating"])
        val = f"_va{cfg['n_val']}" if cfg["n_val"] else ""
        held = f"_ho{_files_key(str(_held_out_labels(cfg['held_out_from'])))}" if cfg.get("held_out_from") else ""
        name = (f"sudoku{cfg['grid_size']}_tr{cfg['n_train']}{val}_te{cfg['n_test']}_g{lo}-{hi}"
                f"_r{cfg['min_rating']}-{top}_s{cfg['seed']}{held}")
    elif source == "csv":
        val = f"_va{cfg['val_subset']}" if cfg["val_subset"] else ""
        skip = "_skipbad" if cfg["skip_bad_rows"] else ""
        name = (f"csv_{Path(cfg['csv_test']).stem}_{_files_key(cfg['csv_train'], cfg['csv_test'])}_sub"
                f"{cfg['train_subset']}-{cfg['test_subset']}{val}_r{cfg['min_rating']}_s{cfg['seed']}{skip}")
    else:
        val = f"_va{cfg['val_subset']}" if cfg["val_subset"] else ""
        skip = "_skipbad" if cfg["skip_bad_rows"] else ""
        name = (f"hf_{cfg['repo_id'].replace('/', '--')}_{'-'.join(cfg['splits'])}_sub{cfg['train_subset']}-"
                f"{cfg['test_subset']}{val}_r{cfg['min_rating']}_s{cfg['seed']}{skip}")
    return Path(cfg["data_dir"]) / name


def _arrays(cfg: dict, progress: bool) -> tuple[dict, str]:
    """{split}_inputs / _labels / _ratings for each split, and a one-line description."""
    source = data_source(cfg)
    if source == "builtin":
        sample = builtin_sample()
        n = len(sample["inputs"])
        arrays = {f"{split}_{key}": value for split in ("train", "test") for key, value in
                  (("inputs", sample["inputs"]), ("labels", sample["labels"]), ("ratings", np.zeros(n, np.int32)))}
        return arrays, f"builtin sample 9x9, {n} puzzles; test = train (a sanity set, not held-out)"
    if source == "generated":
        size, (lo, hi) = cfg["grid_size"], cfg["givens"]
        held = cfg.get("held_out_from", "")
        arrays = make_generated_split(size, cfg["n_train"], cfg["n_test"], (lo, hi), cfg["min_rating"],
                                      cfg["max_rating"], cfg["seed"], n_val=cfg["n_val"], progress=progress,
                                      exclude=held_out_keys(held, size) if held else frozenset())
        rating = ""
        if cfg["min_rating"] > 0 or cfg["max_rating"] != -1:
            top = "any" if cfg["max_rating"] == -1 else cfg["max_rating"]
            rating = f", rating {cfg['min_rating']}-{top}"
        val = f" / {cfg['n_val']} val" if cfg["n_val"] else ""
        held = f", no grid of {held}'s training split" if held else ""
        return arrays, (f"generated {size}x{size}, {cfg['n_train']} train{val} / {cfg['n_test']} test, {lo}-{hi} "
                        f"givens{rating}{held}")
    if source == "csv":
        arrays = load_csv(cfg["csv_train"], cfg["csv_test"], train_subset=cfg["train_subset"],
                          test_subset=cfg["test_subset"], min_rating=cfg["min_rating"], seed=cfg["seed"],
                          skip_bad_rows=cfg["skip_bad_rows"], progress=progress, val_subset=cfg["val_subset"])
        val = f" / {len(arrays['val_inputs'])} val" if "val_inputs" in arrays else ""
        train = cfg["csv_train"] or f"{cfg['csv_test']} (train = test: for evaluation, not held-out)"
        return arrays, (f"CSV {train} / {cfg['csv_test']}, {len(arrays['train_inputs'])} train{val} / "
                        f"{len(arrays['test_inputs'])} test" + (f", rating >= {cfg['min_rating']}" if cfg["min_rating"] else ""))
    arrays = load_hf(repo_id=cfg["repo_id"], splits=tuple(cfg["splits"]), train_subset=cfg["train_subset"],
                     test_subset=cfg["test_subset"], min_rating=cfg["min_rating"],
                     force_download=cfg["force_download"], seed=cfg["seed"], skip_bad_rows=cfg["skip_bad_rows"],
                     progress=progress, val_subset=cfg["val_subset"])
    rating = f", rating >= {cfg['min_rating']}" if cfg["min_rating"] else ""
    val = f" / {len(arrays['val_inputs'])} val" if "val_inputs" in arrays else ""
    return arrays, (f"{cfg['repo_id']} ({cfg['splits'][0]}/{cfg['splits'][1]}.csv), {len(arrays['train_inputs'])} "
                    f"train{val} / {len(arrays['test_inputs'])} test{rating}")


def write_sudoku_dataset(path: Path, arrays: dict, description: str) -> Path:
    """Write {split}_* arrays as a dataset folder in the official layout (ratings as an extra array)."""
    size = int(round(arrays["train_inputs"].shape[1] ** 0.5))
    splits = {}
    for split in ("train", "val", "test"):
        if f"{split}_inputs" not in arrays:
            continue
        layout = pd.split_arrays(arrays[f"{split}_inputs"], arrays[f"{split}_labels"])
        meta = pd.make_metadata(layout, vocab_size=vocab_size(size), puzzle=PUZZLE, grid_size=size,
                                description=description)
        splits[split] = ({**layout, "ratings": arrays[f"{split}_ratings"]}, meta)
    return pd.write_dataset(path, splits, identifiers=["<blank>"])


def build_dataset(cfg: dict, progress: bool = True) -> tuple[Path, str]:
    """The dataset folder of a data section: found and checked, or built. A damaged folder is
    discarded and built again; data.force_download (hf) builds it again from a new download."""
    check_data_config(cfg)

    def build(path: Path) -> str:
        arrays, description = _arrays(cfg, progress)
        write_sudoku_dataset(path, arrays, description)
        return description

    force = data_source(cfg) == "hf" and cfg["force_download"]
    return pd.find_or_build(dataset_path(cfg), build, "data.force_download is set" if force else "")


# ----------------------------------------------------------------------------------------------
# What the trainer and evaluator may ask (see impl/puzzles.py)
# ----------------------------------------------------------------------------------------------


def grid_size(meta: pd.Metadata) -> int:
    size = int(round(meta.seq_len ** 0.5))
    if size not in SIZES or size * size != meta.seq_len:
        raise errors.DataError(f"a Sudoku dataset has 16, 36 or 81 cells per puzzle, this one {meta.seq_len}")
    return size


def augment_examples(inputs: np.ndarray, labels: np.ndarray, meta: pd.Metadata, rng: np.random.Generator):
    """A random relabelling and validity-preserving permutation per example (sudoku_rules.augment)."""
    return augment(inputs, labels, grid_size(meta), rng)


def symmetries(meta: pd.Metadata, k: int, rng: np.random.Generator) -> list[tuple]:
    """k (forward, inverse) pairs of functions on token arrays (N, S): the identity first, then random
    digit relabellings with band, stack, row, column and transpose moves (sudoku_rules.random_symmetry)."""
    size = grid_size(meta)
    pairs = []
    for member in range(k):
        index, token_map = random_symmetry(size, rng, identity=member == 0)
        inv_index, inv_map = invert_symmetry(index, token_map)
        pairs.append((partial(apply_symmetry, index=index, token_map=token_map),
                      partial(apply_symmetry, index=inv_index, token_map=inv_map)))
    return pairs


def valid_fn(meta: pd.Metadata):
    size = grid_size(meta)
    return lambda inputs, answers: valid_grids(inputs, answers, size)


def breakdowns(split: pd.PuzzleSplit) -> dict[str, np.ndarray]:
    out = {"by_givens": (np.asarray(split.inputs) > BLANK).sum(axis=1)}
    if "ratings" in split.extras:
        out = {"by_rating": split.extras["ratings"], **out}
    return out


def parse(text: str, meta: pd.Metadata) -> np.ndarray:
    """A puzzle typed for a model trained on meta's grid size; ValueError names the position, or the sizes."""
    size = grid_size(meta)
    puzzle = parse_puzzle(text)
    own = int(round(len(puzzle) ** 0.5))
    if own != size:
        raise ValueError(f"the puzzle is {own}x{own} ({own * own} cells) but the checkpoint was trained on "
                         f"{size}x{size} grids ({size * size} cells)")
    return puzzle


def reference(puzzle: np.ndarray, meta: pd.Metadata) -> np.ndarray:
    """The puzzle's unique solution; ValueError when it has none or several (not answered)."""
    solutions, _ = solve(puzzle, grid_size(meta), limit=2)
    if len(solutions) != 1:
        raise ValueError(f"the puzzle has {'no solution' if not solutions else 'more than one solution (not unique)'}; "
                         f"not answered")
    return solutions[0]


def cells(tokens: np.ndarray, meta: pd.Metadata) -> list[list[tuple[str, str]]]:
    """The grid for pictures of the recursion: digits, blanks empty, every other box shaded."""
    size = grid_size(meta)
    rows, cols = box_shape(size)
    grid = np.asarray(tokens).reshape(size, size)
    return [[("" if t <= BLANK else str(int(t) - BLANK), "#eef" if (r // rows + c // cols) % 2 else "")
             for c, t in enumerate(row)] for r, row in enumerate(grid)]


def format(tokens: np.ndarray, meta: pd.Metadata, marked: np.ndarray | None = None) -> str:
    size = grid_size(meta)
    return format_grid(tokens, size) if marked is None else format_marked(tokens, size, marked)


# ----------------------------------------------------------------------------------------------
# Command line: bench and generate
# ----------------------------------------------------------------------------------------------

_BENCH_DEFAULTS = {4: ((4, 10), 8000), 6: ((12, 20), 6000), 9: ((28, 32), 800)}  # givens, puzzles


def _histogram(values: np.ndarray) -> str:
    counts = Counter(values.tolist())
    return " ".join(f"{k}:{counts[k]}" for k in sorted(counts))


def _bench(args: argparse.Namespace) -> None:
    sudoku_gen.POOL_AFTER_S = 0.0  # measure all the workers: start them with the first chunk (start-up timed)
    workers = args.workers or os.cpu_count() or 1
    print(f"generator bench: {workers} worker process(es), {os.cpu_count()} cores, seed {args.seed}")
    for size in args.sizes:
        givens, n = _BENCH_DEFAULTS[size]
        n = max(1, int(n * args.scale))
        start = time.perf_counter()
        data = sudoku_gen.generate_puzzles(size, n, givens, seed=args.seed, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        print(f"{size}x{size}: {n} unique puzzles, givens {givens[0]}-{givens[1]}, "
              f"{seconds:.2f} s = {n / seconds:,.0f} puzzles/s")
        print(f"  givens  {_histogram((data['inputs'] > BLANK).sum(axis=1))}")
        print(f"  ratings {_histogram(data['ratings'])}")


# the options of `generate` that set a data section's keys, named in an error
GENERATE_OPTIONS = {"data.grid_size": "--size", "data.n_train": "--n-train", "data.n_val": "--n-val",
                    "data.n_test": "--n-test", "data.givens": "--givens", "data.min_rating": "--min-rating",
                    "data.max_rating": "--max-rating", "data.seed": "--seed", "data.data_dir": "--data-dir"}


def _generate_config(args: argparse.Namespace) -> dict:
    """The data section `generate` builds, checked: an error names the key and the option."""
    cfg = {"source": "generated", "use_builtin_sample": False, "grid_size": args.size, "n_train": args.n_train,
           "n_val": args.n_val, "n_test": args.n_test, "givens": list(args.givens), "min_rating": args.min_rating,
           "max_rating": args.max_rating, "seed": args.seed, "data_dir": args.data_dir}
    try:
        check_data_config(cfg)
    except ValueError as e:
        errors.fail(with_option(str(e), GENERATE_OPTIONS))
    check_options([folder_rule("--data-dir", args.data_dir)])
    return cfg


def _check_bench(args: argparse.Namespace) -> None:
    check_options([("--scale", args.scale, finite(args.scale) and args.scale > 0, "must be a finite number > 0"),
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
        inputs = np.asarray(data.inputs)
        classes = len({canonical_key(g, args.size) for g in np.asarray(data.labels)})
        print(f"{split}: {len(inputs)} puzzles, {classes} grid classes (full symmetry), "
              f"givens {_histogram((inputs > BLANK).sum(axis=1))}, ratings {_histogram(data.extras['ratings'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Sudoku data: generator benchmark and dataset builder.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="measure generator throughput per grid size")
    bench.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 9], choices=SIZES, help="grid sizes to time")
    bench.add_argument("--scale", type=float, default=1.0, help="multiply the default puzzle counts")
    bench.add_argument("--workers", type=int, default=0, help="worker processes (0 = all cores)")
    bench.add_argument("--seed", type=int, default=0, help="generator seed")
    gen = sub.add_parser("generate", help="build (or find) a generated dataset folder and print counts")
    gen.add_argument("--size", type=int, default=6, choices=SIZES, help="grid size")
    gen.add_argument("--n-train", type=int, default=2000, help="training puzzles")
    gen.add_argument("--n-val", type=int, default=0, help="validation puzzles")
    gen.add_argument("--n-test", type=int, default=500, help="test puzzles")
    gen.add_argument("--givens", type=int, nargs=2, default=[14, 20], metavar=("LO", "HI"), help="givens range, inclusive")
    gen.add_argument("--min-rating", type=int, default=0, help="minimum rating (solver guesses)")
    gen.add_argument("--max-rating", type=int, default=-1, help="maximum rating, -1 = none")
    gen.add_argument("--seed", type=int, default=0, help="generator seed")
    gen.add_argument("--data-dir", default="data", help="where dataset folders are kept")
    args = parser.parse_args(argv)
    if args.command == "bench":
        _check_bench(args)
        _bench(args)
    else:
        _generate(args, _generate_config(args))


if __name__ == "__main__":
    errors.run_cli(main)  # a user error or Ctrl-C ends with one line, no traceback
