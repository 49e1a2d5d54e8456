"""The Sudoku generator: random puzzles with exactly one solution, and train/test splits that
share no solution grid up to symmetry. Plain Python on the solver of sudoku_solver.py; the work
runs on worker processes (workers.py) once it is long enough to pay for starting them.

A random complete grid comes from solving an empty grid (diagonal boxes filled at random first)
with random branching. A puzzle starts as a few random givens of it; while the solver finds a
second solution, the grid's value at a random cell where that solution differs becomes a given.
The unique puzzle is then brought to a givens count drawn uniformly from the requested range:
givens are removed in random order while the solution stays unique, or random ones are added.
Work is split into chunks of GEN_CHUNK puzzles, chunk c seeded by SeedSequence([seed, c]), so the
output is byte-identical for any number of worker processes.
"""
from __future__ import annotations

import contextlib
import os
import random
from collections import Counter
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

import errors
import workers as workers_mod
from sudoku_rules import box_shape, split_key
from sudoku_solver import Tables, bits_to_tokens, solve_bits, tables

# Puzzles are generated in fixed-size chunks, each from its own seed, so the output does not depend
# on the number of worker processes. Changing this constant changes every generated data set.
GEN_CHUNK = 64

# Number of random givens the uniqueness loop starts from, per size (capped by the givens range).
_START_GIVENS = {4: 3, 6: 8, 9: 20}

# A chunk that has made no puzzle in this many attempts gives up (the request is out of reach);
# otherwise it gives up after 200 attempts per puzzle + 2000. Neither changes a chunk that succeeds.
_HOPELESS_AFTER = 2000

# Fewest givens of a puzzle with one solution: 4x4 counted exhaustively (_PUZZLES_4X4), 9x9 proved
# by McGuire, Tugemann and Civario (2012, "There is no 16-clue Sudoku"); for 6x6 only the simple
# bound size - 1 (two digits that appear in no given could be swapped in any solution).
MIN_GIVENS = {4: 4, 6: 5, 9: 17}

# Distinct 4x4 puzzles with exactly one solution, by number of givens (index 0..16), in each of the
# two classes of 4x4 grids under sudoku_rules.canonical_key (96 and 192 of the 288 grids). Counted exhaustively
# by tests/test_data_sudoku.py::test_4x4_puzzle_counts_are_exact.
_PUZZLES_4X4 = (
    (0, 0, 0, 0, 1152, 38400, 211968, 552960, 870144, 930816, 718080, 410112, 173952, 53760, 11520, 1536, 96),
    (0, 0, 0, 0, 24576, 245760, 829440, 1588224, 2090880, 2027520, 1486848, 829440, 348672, 107520, 23040, 3072,
     192),
)


def _random_full_grid(t: Tables, rnd: random.Random) -> list:
    """A random complete grid (cell bits): fill the diagonal boxes at random, then solve the rest
    with random branching. The diagonal boxes share no row, column or box, so any filling is legal.
    """
    br, bc = box_shape(t.size)
    n_diag = min(t.size // br, t.size // bc)
    while True:
        g = [0] * t.n
        all_bits = [1 << d for d in range(t.size)]
        for k in range(n_diag):
            rnd.shuffle(all_bits)
            box_no = k * (t.size // bc) + k
            for bit, cell in zip(all_bits, t.box_units[box_no]):
                g[cell] = bit
        sols, _ = solve_bits(g, t, 1, rnd)
        if sols:
            return sols[0]


def _unique_puzzle(t: Tables, rnd: random.Random, lo: int, hi: int) -> tuple[list, list] | None:
    """One puzzle with exactly one solution and lo..hi givens, or None when none was reached.

    1. Start from a few random givens of a random grid; while a second solution exists, give the
       grid's value at a random cell where that other solution differs.
    2. Aim at a givens count drawn uniformly from lo..hi: above it, remove givens in random order
       while the solution stays unique; below it, add random givens of the grid.
    """
    sol = _random_full_grid(t, rnd)
    order = list(range(t.n))
    rnd.shuffle(order)
    k = min(lo, _START_GIVENS[t.size])
    puz = [0] * t.n
    for i in order[:k]:
        puz[i] = sol[i]
    while True:
        sols, _ = solve_bits(puz, t, 2, None)
        if len(sols) == 1:
            break
        other = sols[0] if sols[0] != sol else sols[1]
        diff = [i for i in range(t.n) if other[i] != sol[i]]
        i = diff[rnd.randrange(len(diff))]
        puz[i] = sol[i]
        k += 1
    target = rnd.randint(lo, hi)
    if k > target:
        for i in [i for i in order if puz[i]]:
            if k <= target:
                break
            puz[i] = 0
            if len(solve_bits(puz, t, 2, None)[0]) == 1:
                k -= 1
            else:
                puz[i] = sol[i]
        if k > hi:
            return None  # this grid and order give no unique puzzle that small
    for i in order:
        if k >= target:
            break
        if not puz[i]:
            puz[i] = sol[i]
            k += 1
    return puz, sol


def _chunk_seed(seed: int, chunk: int) -> int:
    state = np.random.SeedSequence([seed, chunk]).generate_state(2, dtype=np.uint64)
    return int(state[0]) << 64 | int(state[1])


def _generate_chunk(args: tuple) -> tuple:
    """Worker: `count` puzzles of chunk number `chunk` (its own seed). Module-level for pickling.

    Returns (inputs, labels, ratings, keys); keys are the solutions' split keys when
    with_keys is set (computed here so that the split builder's key work runs in parallel).
    """
    size, count, chunk, seed, lo, hi, min_rating, max_rating, with_keys = args
    t = tables(size)
    rnd = random.Random(_chunk_seed(seed, chunk))
    inputs = np.empty((count, t.n), dtype=np.uint8)
    labels = np.empty((count, t.n), dtype=np.uint8)
    ratings = np.empty(count, dtype=np.int32)
    max_attempts = 200 * count + 2000
    rejected: Counter = Counter()
    done = attempts = 0
    while done < count and attempts < max_attempts and (done or attempts < _HOPELESS_AFTER):
        attempts += 1
        made = _unique_puzzle(t, rnd, lo, hi)
        if made is None:
            rejected["more givens needed than the maximum"] += 1
            continue
        puz, sol = made
        _, rating = solve_bits(puz, t, 2, None)
        if rating < min_rating or (max_rating >= 0 and rating > max_rating):
            rejected["rating outside the range"] += 1
            continue
        inputs[done] = bits_to_tokens(puz, t)
        labels[done] = bits_to_tokens(sol, t)
        ratings[done] = rating
        done += 1
    if done < count:
        reasons = ", ".join(f"{v} {k}" for k, v in rejected.items())
        raise errors.DataError(
            f"generate_puzzles: only {done} of {count} {size}x{size} puzzles with {lo}-{hi} givens and "
            f"rating {min_rating}..{'any' if max_rating < 0 else max_rating} after {attempts} attempts "
            f"(rejected: {reasons}); widen the givens range (more givens) or the rating range"
        )
    keys = [split_key(label, size) for label in labels] if with_keys else []
    return inputs, labels, ratings, keys


def _check_gen_args(size: int, givens: tuple[int, int], min_rating: int, max_rating: int) -> tuple[int, int]:
    box_shape(size)
    lo, hi = (int(v) for v in givens)
    if not 0 <= lo <= hi <= size * size:
        raise ValueError(f"givens: need 0 <= lo <= hi <= {size * size} for {size}x{size}, got ({lo}, {hi})")
    if min_rating < 0:
        raise ValueError(f"min_rating must be >= 0, got {min_rating}")
    if max_rating != -1 and max_rating < min_rating:
        raise ValueError(f"max_rating must be -1 (no maximum) or >= min_rating ({min_rating}), got {max_rating}")
    return lo, hi


def _min_givens_problem(size: int, lo: int, hi: int) -> str:
    if hi >= MIN_GIVENS[size]:
        return ""
    return (f"givens: {[lo, hi]} allows no {size}x{size} puzzle with exactly one solution "
            f"(one needs at least {MIN_GIVENS[size]} givens)")


def split_supply_problem(size: int, n_train: int, n_test: int, givens: tuple[int, int], n_val: int = 0) -> str:
    """Why no split of n_train + n_val + n_test puzzles with these givens can exist ('' when one may).

    Checked before any generation: the minimum givens (MIN_GIVENS) and, for 4x4, the exact puzzle
    counts (_PUZZLES_4X4): 12 grid classes up to relabelling (split_key), 4 of the first kind and 8
    of the second, each holding 1/4 or 1/8 of its kind's puzzles, every class kept whole on one side
    of the split. Ratings are not counted, so with a rating range these are upper bounds; what
    passes here can still fail the bounded search of make_generated_split. Keys as in `data.`.
    """
    lo, hi = givens
    if hi < MIN_GIVENS[size] or size != 4:
        return _min_givens_problem(size, lo, hi)
    a, b = (sum(counts[lo : hi + 1]) for counts in _PUZZLES_4X4)
    classes = sorted([a // 4] * 4 + [b // 8] * 8)  # puzzles per class
    wanted = [n for n in (n_train, n_val, n_test) if n]
    # all of them fit, and the largest fits beside one smallest class for each of the others
    if sum(wanted) <= a + b and max(wanted) <= a + b - sum(classes[:len(wanted) - 1]):
        return ""
    return (f"n_train: {n_train} training, {n_val} validation and {n_test} held-out puzzles cannot be met: there "
            f"are only {a + b} distinct 4x4 puzzles with {lo}-{hi} givens, in 12 grid classes (up to "
            f"relabelling) that each go whole to one split; lower n_train / n_test or widen givens")


def _resolve_workers(workers: int) -> int:
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores), got {workers}")
    return workers or os.cpu_count() or 1



# Start-up cost, measured on the project's 2-core CPU machine from a main script that imports torch
# (as train_trm.py does), until 2 workers have answered a trivial call: fork 0.04 s (unsafe, above),
# `python -c` 0.6 s, spawn 3.5-4.5 s and forkserver 3.4-3.7 s per pool (those two re-import the main
# script, hence torch, in the workers). 0.6 s is the time of about 800 4x4 or 50 9x9 puzzles, so
# generation starts in this process and moves to workers only after POOL_AFTER_S: small sets never
# start a process (a fresh 4x4 set of 250 puzzles takes about 0.1 s), a long run loses about a second.

POOL_AFTER_S = 1.0  # seconds of generation in this process before workers are started


def _iter_chunks(tasks: Iterable[tuple], workers: int) -> Iterator[tuple]:
    """_generate_chunk of each task, in task order, so the output does not depend on workers: in
    this process for POOL_AFTER_S, then on worker processes (workers.in_order). Close the
    generator (contextlib.closing) to stop at once, workers included."""
    return workers_mod.in_order(_generate_chunk, tasks, workers, POOL_AFTER_S)


def generate_puzzles(
    size: int,
    n: int,
    givens: tuple[int, int] = (28, 32),
    min_rating: int = 0,
    max_rating: int = -1,
    seed: int = 0,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """n random puzzles with exactly one solution, lo..hi givens and rating in range.

    Returns dict(inputs=uint8 [n, size*size], labels=uint8 [n, size*size], ratings=int32 [n]).
    max_rating=-1: no maximum. workers=0: all cores, 1: this process only. The arrays depend
    only on the arguments other than workers/progress. Duplicates are possible (mostly 4x4);
    make_generated_split removes them.
    """
    lo, hi = _check_gen_args(size, givens, min_rating, max_rating)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if _min_givens_problem(size, lo, hi):
        raise errors.ConfigError(_min_givens_problem(size, lo, hi))
    workers = _resolve_workers(workers)
    tasks = [
        (size, min(GEN_CHUNK, n - start), start // GEN_CHUNK, seed, lo, hi, min_rating, max_rating, False)
        for start in range(0, n, GEN_CHUNK)
    ]
    parts = []
    with tqdm(total=n, disable=not progress, desc=f"sudoku {size}x{size}", unit="puzzle") as bar, \
            contextlib.closing(_iter_chunks(tasks, min(workers, len(tasks)))) as chunks:
        for part in chunks:
            parts.append(part)
            bar.update(len(part[2]))
    n_cells = size * size
    return dict(
        inputs=np.concatenate([p[0] for p in parts]) if parts else np.empty((0, n_cells), np.uint8),
        labels=np.concatenate([p[1] for p in parts]) if parts else np.empty((0, n_cells), np.uint8),
        ratings=np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int32),
    )



# ----------------------------------------------------------------------------------------------
# Generated splits
# ----------------------------------------------------------------------------------------------

_SPLIT_STREAM = 2**32 - 1  # SeedSequence word of the split decisions; chunk numbers stay far below
SPLIT_MAX_TRIES = 50  # give up after generating this many puzzles per puzzle asked for (+ 20 chunks)
SPLIT_ORDER = ("test", "val", "train")  # the order in which splits get their first grid class


def make_generated_split(
    size: int,
    n_train: int,
    n_test: int,
    givens: tuple[int, int],
    min_rating: int,
    max_rating: int,
    seed: int,
    n_val: int = 0,
    workers: int = 0,
    progress: bool = True,
    exclude: set[bytes] | frozenset = frozenset(),
) -> dict[str, np.ndarray]:
    """Generated splits (train, test and, with n_val, val) that share no solution grid up to
    equivalence (split_key), nor any with the split keys in exclude (e.g. another dataset's training
    grids). Returns {split}_inputs, {split}_labels, {split}_ratings per split.

    A grid class seen first goes to the first split in SPLIT_ORDER that has none yet; after that to
    a split drawn with probability proportional to its size among those not full; later puzzles of
    the class follow it (dropped when that split is full). Duplicate puzzles are dropped.
    """
    lo, hi = _check_gen_args(size, givens, min_rating, max_rating)
    if n_train < 1 or n_test < 1 or n_val < 0:
        raise ValueError(f"n_train and n_test must be >= 1 and n_val >= 0, got {n_train}, {n_test} and {n_val}")
    problem = split_supply_problem(size, n_train, n_test, (lo, hi), n_val)
    if problem:
        raise errors.ConfigError(problem)

    workers = _resolve_workers(workers)
    want = {name: n for name, n in (("test", n_test), ("val", n_val), ("train", n_train)) if n}
    got: dict[str, list] = {name: [] for name in want}  # (input, label, rating) per split
    key_split: dict[bytes, str] = {}  # split key -> split
    seen_puzzles: set[bytes] = set()
    split_rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM]))
    total = sum(want.values())
    max_chunks = -(-(SPLIT_MAX_TRIES * total + 20 * GEN_CHUNK) // GEN_CHUNK)  # the bounded search
    tasks = ((size, GEN_CHUNK, c, seed, lo, hi, min_rating, max_rating, True) for c in range(max_chunks))
    generated = 0

    def full(split: str) -> bool:
        return len(got[split]) >= want[split]

    def new_class_split(u: float) -> str:
        for split in want:  # SPLIT_ORDER: every split first gets one class
            if not got[split] and not full(split):
                return split
        open_ = [split for split in want if not full(split)]
        if not open_:  # every split is full: the class is dropped with its puzzles
            return next(iter(want))
        weights = np.array([want[split] for split in open_], dtype=float)
        return open_[int(np.searchsorted(np.cumsum(weights / weights.sum()), u, side="right"))] \
            if len(open_) > 1 else open_[0]

    with tqdm(total=total, disable=not progress, desc=f"sudoku {size}x{size} split", unit="puzzle") as bar, \
            contextlib.closing(_iter_chunks(tasks, workers)) as chunks:
        for inputs, labels, ratings, keys in chunks:
            for puz, sol, rating, key in zip(inputs, labels, ratings, keys):
                generated += 1
                puz_bytes = puz.tobytes()
                if puz_bytes in seen_puzzles or key in exclude:
                    continue
                if key not in key_split:
                    key_split[key] = new_class_split(split_rng.random())
                split = key_split[key]
                if full(split):
                    continue
                seen_puzzles.add(puz_bytes)
                got[split].append((puz, sol, rating))
                bar.update(1)
            if all(full(split) for split in want):
                break
    if not all(full(split) for split in want):
        counts = ", ".join(f"{len(got[split])} of {want[split]} {split}" for split in want)
        raise errors.DataError(
            f"make_generated_split: found {counts} distinct {size}x{size} puzzles with {lo}-{hi} givens "
            f"(splits from different grid classes; {len(key_split)} classes seen"
            + (f", {len(exclude)} excluded" if exclude else "") + f") after {generated} tries; "
            f"lower n_train / n_test or widen givens"
        )
    n_cells = size * size
    data = {}
    for split, rows in got.items():
        data[f"{split}_inputs"] = np.stack([r[0] for r in rows]).astype(np.uint8).reshape(-1, n_cells)
        data[f"{split}_labels"] = np.stack([r[1] for r in rows]).astype(np.uint8).reshape(-1, n_cells)
        data[f"{split}_ratings"] = np.array([r[2] for r in rows], dtype=np.int32)
    return data
