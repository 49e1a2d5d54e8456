"""Sudoku data for the TRM sandbox: parsing, solving, generating, augmenting and loading.

No model code lives here, and torch is not imported: every array is numpy.

Token layout (one layout for every grid size)
---------------------------------------------
    PAD   = 0          never appears in a grid; reserved for the model's padding
    BLANK = 1          an empty cell of a puzzle
    digit d (1..size)  token d + 1

so 9x9 grids use tokens 2..10 for digits, the same as the official TRM Sudoku builder, and
``vocab_size(size) == size + 2``. A grid is a flat, row-major ``uint8`` array of ``size * size``
tokens. Puzzles (``inputs``) hold BLANK and digit tokens, solutions (``labels``) only digits.

Sizes and boxes: 4x4 has 2x2 boxes, 6x6 has boxes of 2 rows x 3 columns, 9x9 has 3x3 boxes.

Where the data comes from
-------------------------
* ``builtin_sample()``: a few 9x9 puzzles embedded below, for smoke tests without any download.
* ``generate_puzzles()`` / ``make_generated_split()``: random puzzles with exactly one solution,
  made by a bitmask solver in plain Python (see "Generator" below), cached as ``.npz``.
* ``load_hf()``: the CSV files of ``sapientinc/sudoku-extreme`` (or any dataset repo with the same
  ``source,question,answer,rating`` layout) from the Hugging Face hub, cached as ``.npz``.
* ``load_sudoku(cfg, seed)``: the dispatcher the training script calls.

Generator
---------
A random complete grid comes from solving an empty grid (diagonal boxes filled at random first)
with random branching. A puzzle starts as a few random givens of it; while the solver finds a
second solution, the grid's value at a random cell where that solution differs becomes a given.
The unique puzzle is then brought to a givens count drawn uniformly from the requested range:
givens are removed in random order while the solution stays unique, or random ones are added.
Work is split into chunks of GEN_CHUNK puzzles, chunk c seeded by SeedSequence([seed, c]), so the
output is byte-identical for any number of worker processes (see "Worker processes" below for how
they run, and why not multiprocessing.Pool).

Rating
------
A puzzle's rating is the number of branch points (guesses) the solver of this module needs,
beyond constraint propagation (naked and hidden singles), to find its solutions and prove there
are no more: ``solve(puzzle, size, limit=2)[1]`` with the default, deterministic candidate order.
0 means propagation alone solves the puzzle.

Equivalent grids
----------------
``canonical_key()`` maps a solution grid to a key that is equal for equivalent grids. For 4x4 and
6x6 "equivalent" means under digit relabelling and every validity-preserving geometric symmetry
(band, stack, row-in-band and column-in-stack permutations, plus transpose where boxes are
square). For 9x9 the key covers digit relabelling only: the 9x9 geometric group has
3!^8 * 2 = 3,359,232 elements, too many to enumerate per grid.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from collections import Counter
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from errors import DataError
import errors

PAD = 0  # padding token, never inside a grid
BLANK = 1  # empty cell of a puzzle
SIZES = (4, 6, 9)  # supported grid sizes
_BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # size -> (box_rows, box_cols)

# Puzzles are generated in fixed-size chunks, each from its own seed, so the output does not depend
# on the number of worker processes. Changing this constant changes every generated data set.
GEN_CHUNK = 64

# How to fetch a Hugging Face dataset into the hub cache (shown when it is missing offline).
HF_DOWNLOAD_HINT = "hf download {repo_id} --repo-type dataset"


# ----------------------------------------------------------------------------------------------
# Token layout and small helpers
# ----------------------------------------------------------------------------------------------


def box_shape(size: int) -> tuple[int, int]:
    """(box_rows, box_cols) of a size x size Sudoku; ValueError for an unsupported size."""
    if size not in _BOX_SHAPES:
        raise ValueError(f"unsupported Sudoku size {size!r}: expected one of 4, 6, 9")
    return _BOX_SHAPES[size]


def vocab_size(size: int) -> int:
    """Number of tokens: PAD, BLANK and one per digit."""
    box_shape(size)
    return size + 2


def _size_from_cells(n_cells: int) -> int:
    for size in SIZES:
        if size * size == n_cells:
            return size
    raise ValueError(f"expected 16, 36 or 81 cells, got {n_cells}")


def unit_index(size: int) -> np.ndarray:
    """[3 * size, size] cell indices of the rows, then the columns, then the boxes."""
    br, bc = box_shape(size)
    cells = np.arange(size * size).reshape(size, size)
    boxes = [
        cells[r0 : r0 + br, c0 : c0 + bc].ravel()
        for r0 in range(0, size, br)
        for c0 in range(0, size, bc)
    ]
    return np.concatenate([cells, cells.T, np.stack(boxes)])


def _as_grid(tokens: Any, size: int | None, what: str) -> tuple[np.ndarray, int]:
    """Flatten a token grid and check its length against size (inferred when None)."""
    grid = np.asarray(tokens).reshape(-1)
    if size is None:
        size = _size_from_cells(grid.size)
    elif grid.size != size * size:
        box_shape(size)
        raise ValueError(f"{what}: expected {size * size} cells for a {size}x{size} grid, got {grid.size}")
    return grid, size


# ----------------------------------------------------------------------------------------------
# Parsing, printing, checking
# ----------------------------------------------------------------------------------------------


def parse_puzzle(text: str, size: int | None = None) -> np.ndarray:
    """Turn a puzzle string into tokens.

    Digits are givens, '.' or '0' a blank; whitespace is ignored. The size is inferred from the
    number of cells (16, 36 or 81) unless given. Errors name the 1-based cell position.
    """
    cells = "".join(text.split())
    if size is None:
        size = _size_from_cells(len(cells))
    elif len(cells) != size * size:
        box_shape(size)
        raise ValueError(f"expected {size * size} cells for a {size}x{size} puzzle, got {len(cells)}")
    out = np.empty(size * size, dtype=np.uint8)
    for pos, ch in enumerate(cells):
        if ch in ".0":
            out[pos] = BLANK
        elif ch.isdigit() and ch.isascii():
            digit = int(ch)
            if digit > size:
                raise ValueError(f"digit {digit} at position {pos + 1} is out of range for a {size}x{size} puzzle")
            out[pos] = digit + 1
        else:
            raise ValueError(f"bad character {ch!r} at position {pos + 1}")
    conflict = _first_conflict(out, size)
    if conflict:
        raise ValueError(f"contradictory givens: {conflict}")
    return out


def _first_conflict(tokens: np.ndarray, size: int) -> str:
    """Describe the first digit repeated inside a row, column or box ('' if none)."""
    names = ["row"] * size + ["column"] * size + ["box"] * size
    for unit_no, unit in enumerate(unit_index(size)):
        seen: dict[int, int] = {}
        for cell in unit:
            tok = int(tokens[cell])
            if tok <= BLANK:
                continue
            if tok in seen:
                return (
                    f"digit {tok - 1} appears twice in {names[unit_no]} {unit_no % size + 1} "
                    f"(positions {seen[tok] + 1} and {cell + 1})"
                )
            seen[tok] = int(cell)
    return ""


def format_grid(tokens: Any, size: int) -> str:
    """Pretty-print a token grid with box separators; blanks show as '.'."""
    grid, size = _as_grid(tokens, size, "format_grid")
    br, bc = box_shape(size)
    symbols = {PAD: "_", BLANK: "."} | {d + 1: str(d) for d in range(1, size + 1)}
    lines = []
    for r in range(size):
        if r and r % br == 0:
            lines.append("-+-".join(["-" * (2 * bc - 1)] * (size // bc)))
        row = [symbols.get(int(t), "?") for t in grid[r * size : (r + 1) * size]]
        lines.append(" | ".join(" ".join(row[c : c + bc]) for c in range(0, size, bc)))
    return "\n".join(lines)


def is_valid_solution(puzzle: np.ndarray, grid: np.ndarray, size: int | None = None) -> bool:
    """True when grid is a complete, valid Sudoku that keeps every given of puzzle (tokens)."""
    grid, size = _as_grid(grid, size, "is_valid_solution grid")
    puzzle, _ = _as_grid(puzzle, size, "is_valid_solution puzzle")
    grid = grid.astype(np.int64)
    puzzle = puzzle.astype(np.int64)
    if grid.min() < 2 or grid.max() > size + 1:
        return False
    units = np.sort(grid[unit_index(size)], axis=1)
    if not (units == np.arange(2, size + 2)).all():
        return False
    given = puzzle > BLANK
    return bool((puzzle[given] == grid[given]).all())


# ----------------------------------------------------------------------------------------------
# Solver: bitmask candidates, naked + hidden singles, MRV branching
# ----------------------------------------------------------------------------------------------
# Internally a cell holds a bit (1 << (digit - 1)) or 0 when empty; rows/cols/boxes keep the
# mask of digits already placed. Everything is plain Python ints and lists: for grids this small
# that beats numpy by a wide margin.


class _Tables:
    """Precomputed lookup tables for one grid size."""

    def __init__(self, size: int):
        br, bc = box_shape(size)
        self.size = size
        self.n = size * size
        self.full = (1 << size) - 1
        self.row = [i // size for i in range(self.n)]
        self.col = [i % size for i in range(self.n)]
        self.box = [(i // size) // br * (size // bc) + (i % size) // bc for i in range(self.n)]
        units = unit_index(size).tolist()
        self.row_units = units[:size]
        self.col_units = units[size : 2 * size]
        self.box_units = units[2 * size :]
        masks = range(1 << size)
        self.popcount = [bin(m).count("1") for m in masks]
        self.bits_of = [[1 << d for d in range(size) if m >> d & 1] for m in masks]
        self.digit_of = {1 << d: d + 1 for d in range(size)}  # bit -> digit


_TABLES: dict[int, _Tables] = {}


def _tables(size: int) -> _Tables:
    if size not in _TABLES:
        _TABLES[size] = _Tables(size)
    return _TABLES[size]


def _propagate(g: list, rm: list, cm: list, bm: list, empty: list, t: _Tables):
    """Place naked and hidden singles until none is left.

    Mutates g/rm/cm/bm. Returns None on a contradiction, else (empty cells, cell to branch on),
    the cell being -1 when the grid is complete.
    """
    row, col, box, full = t.row, t.col, t.box, t.full
    while True:
        # Naked singles: a cell with one candidate. Placing at once is safe (the mask is current).
        cand = [0] * t.n
        rest: list = []
        keep = rest.append
        placed = False
        for i in empty:
            if g[i]:
                continue
            r = row[i]
            c = col[i]
            b = box[i]
            m = full & ~(rm[r] | cm[c] | bm[b])
            if not m:
                return None
            if m & (m - 1):
                cand[i] = m
                keep(i)
            else:
                g[i] = m
                rm[r] |= m
                cm[c] |= m
                bm[b] |= m
                placed = True
        empty = rest
        if not empty:
            return empty, -1
        if placed:
            continue
        # Hidden singles: a digit with one possible cell in a unit (cand is exact here).
        for used_masks, units in ((rm, t.row_units), (cm, t.col_units), (bm, t.box_units)):
            for u, cells in enumerate(units):
                once = twice = 0
                for i in cells:
                    m = cand[i]
                    twice |= once & m
                    once |= m
                if (once | used_masks[u]) != full:
                    return None  # some digit has no place left in this unit
                hidden = once & ~twice
                while hidden:
                    bit = hidden & -hidden
                    hidden ^= bit
                    for i in cells:
                        if cand[i] & bit:
                            break
                    if g[i]:
                        if g[i] != bit:
                            return None
                        continue
                    r = row[i]
                    c = col[i]
                    b = box[i]
                    if (rm[r] | cm[c] | bm[b]) & bit:
                        return None
                    g[i] = bit
                    rm[r] |= bit
                    cm[c] |= bit
                    bm[b] |= bit
                    placed = True
        if placed:
            continue
        # Nothing forced: branch on the cell with the fewest candidates (MRV).
        pop = t.popcount
        best, best_n = -1, 99
        for i in empty:
            k = pop[cand[i]]
            if k < best_n:
                best, best_n = i, k
                if k == 2:
                    break
        return empty, best


def _search(g, rm, cm, bm, empty, t, limit, rnd, sols, stats) -> None:
    result = _propagate(g, rm, cm, bm, empty, t)
    if result is None:
        return
    empty, cell = result
    if cell < 0:
        sols.append(g)
        return
    stats[0] += 1  # one more guess (branch point)
    r, c, b = t.row[cell], t.col[cell], t.box[cell]
    bits = t.bits_of[t.full & ~(rm[r] | cm[c] | bm[b])]
    if rnd is not None:
        bits = bits[:]
        rnd.shuffle(bits)
    for bit in bits:
        g2, rm2, cm2, bm2 = g[:], rm[:], cm[:], bm[:]
        g2[cell] = bit
        rm2[r] |= bit
        cm2[c] |= bit
        bm2[b] |= bit
        _search(g2, rm2, cm2, bm2, empty, t, limit, rnd, sols, stats)
        if len(sols) >= limit:
            return


def _solve_bits(givens: list, t: _Tables, limit: int, rnd: random.Random | None) -> tuple[list, int]:
    """Solve a puzzle of cell bits (0 = blank); returns (up to limit solutions, guesses)."""
    g = list(givens)
    rm, cm, bm = [0] * t.size, [0] * t.size, [0] * t.size
    for i, bit in enumerate(g):
        if bit:
            r, c, b = t.row[i], t.col[i], t.box[i]
            if (rm[r] | cm[c] | bm[b]) & bit:
                return [], 0  # contradictory givens
            rm[r] |= bit
            cm[c] |= bit
            bm[b] |= bit
    sols: list = []
    stats = [0]
    _search(g, rm, cm, bm, [i for i in range(t.n) if not g[i]], t, limit, rnd, sols, stats)
    return sols, stats[0]


def _tokens_to_bits(puzzle: Any, size: int) -> list:
    grid, size = _as_grid(puzzle, size, "puzzle")
    values = grid.astype(np.int64)
    if values.min() < BLANK or values.max() > size + 1:
        bad = int(np.flatnonzero((values < BLANK) | (values > size + 1))[0])
        raise ValueError(
            f"puzzle: token {values[bad]} at position {bad + 1} is not BLANK (1) or a digit token 2..{size + 1}"
        )
    return [0 if v == BLANK else 1 << (v - 2) for v in values.tolist()]


def _bits_to_tokens(bits: list, t: _Tables) -> np.ndarray:
    digit_of = t.digit_of
    return np.array([digit_of[b] + 1 if b else BLANK for b in bits], dtype=np.uint8)


def _python_rng(rng: Any) -> random.Random | None:
    """A random.Random from a numpy Generator (seeded from it), a Random, or None."""
    if rng is None or isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(0, 2**63)))
    raise TypeError(f"rng must be None, numpy.random.Generator or random.Random, got {type(rng).__name__}")


def solve(puzzle: np.ndarray, size: int, limit: int = 2, rng: Any = None) -> tuple[list[np.ndarray], int]:
    """Up to `limit` solutions (token arrays) of a puzzle, and its rating (number of guesses).

    With rng=None candidates are tried in increasing order, so the rating is deterministic; with
    a numpy Generator (or random.Random) the order is random. Contradictory givens give ([], 0).
    """
    if limit < 1:
        raise ValueError(f"solve: limit must be >= 1, got {limit}")
    t = _tables(size)
    sols, guesses = _solve_bits(_tokens_to_bits(puzzle, size), t, limit, _python_rng(rng))
    return [_bits_to_tokens(s, t) for s in sols], guesses


def count_solutions(puzzle: np.ndarray, size: int, limit: int = 2) -> int:
    """Number of solutions, counting stops at `limit`."""
    return len(solve(puzzle, size, limit=limit)[0])


# ----------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------

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
# two classes of 4x4 grids under canonical_key (96 and 192 of the 288 grids). Counted exhaustively
# by tests/test_data_sudoku.py::test_4x4_puzzle_counts_are_exact.
_PUZZLES_4X4 = (
    (0, 0, 0, 0, 1152, 38400, 211968, 552960, 870144, 930816, 718080, 410112, 173952, 53760, 11520, 1536, 96),
    (0, 0, 0, 0, 24576, 245760, 829440, 1588224, 2090880, 2027520, 1486848, 829440, 348672, 107520, 23040, 3072,
     192),
)


def _random_full_grid(t: _Tables, rnd: random.Random) -> list:
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
        sols, _ = _solve_bits(g, t, 1, rnd)
        if sols:
            return sols[0]


def _unique_puzzle(t: _Tables, rnd: random.Random, lo: int, hi: int) -> tuple[list, list] | None:
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
        sols, _ = _solve_bits(puz, t, 2, None)
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
            if len(_solve_bits(puz, t, 2, None)[0]) == 1:
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

    Returns (inputs, labels, ratings, keys); keys are the solutions' canonical keys when
    with_keys is set (computed here so that the split builder's key work runs in parallel).
    """
    size, count, chunk, seed, lo, hi, min_rating, max_rating, with_keys = args
    t = _tables(size)
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
        _, rating = _solve_bits(puz, t, 2, None)
        if rating < min_rating or (max_rating >= 0 and rating > max_rating):
            rejected["rating outside the range"] += 1
            continue
        inputs[done] = _bits_to_tokens(puz, t)
        labels[done] = _bits_to_tokens(sol, t)
        ratings[done] = rating
        done += 1
    if done < count:
        reasons = ", ".join(f"{v} {k}" for k, v in rejected.items())
        raise errors.DataError(
            f"generate_puzzles: only {done} of {count} {size}x{size} puzzles with {lo}-{hi} givens and "
            f"rating {min_rating}..{'any' if max_rating < 0 else max_rating} after {attempts} attempts "
            f"(rejected: {reasons}); widen the givens range (more givens) or the rating range"
        )
    keys = [canonical_key(label, size) for label in labels] if with_keys else []
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


def split_supply_problem(size: int, n_train: int, n_test: int, givens: tuple[int, int]) -> str:
    """Why no split of n_train + n_test puzzles with these givens can exist ('' when one may).

    Checked before any generation: the minimum givens (MIN_GIVENS) and, for 4x4, the exact puzzle
    counts of the two grid classes, one of which make_generated_split gives to train, the other to
    test. Ratings are not counted, so with a rating range these are upper bounds; what passes here
    can still fail the bounded search of make_generated_split. Keys are named as in `data.`.
    """
    lo, hi = givens
    if hi < MIN_GIVENS[size] or size != 4:
        return _min_givens_problem(size, lo, hi)
    a, b = (sum(counts[lo : hi + 1]) for counts in _PUZZLES_4X4)
    if (n_test <= a and n_train <= b) or (n_test <= b and n_train <= a):
        return ""
    if n_train > max(a, b):
        key, asked = "n_train", f"{n_train} training puzzles"
    elif n_test > max(a, b):
        key, asked = "n_test", f"{n_test} held-out puzzles"
    else:
        key, asked = "n_train", f"{n_train} training and {n_test} held-out puzzles"
    return (f"{key}: {asked} cannot be met: there are only {a} and {b} distinct 4x4 puzzles with "
            f"{lo}-{hi} givens in the two classes of 4x4 grids, and training and held-out puzzles come "
            f"from different classes; lower n_train / n_test or widen givens")


def _resolve_workers(workers: int) -> int:
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores), got {workers}")
    return workers or os.cpu_count() or 1


# Worker processes
# ----------------
# Not multiprocessing.Pool: its terminate() SIGTERMs workers that may hold the shared result
# queue's lock (killed mid-put), then joins the task-feeder thread, which needs that lock to put
# its end marker, so it waits forever (issue 21: 1 fresh start in 20 hung). And fork() copies a
# process whose other threads (torch's, tqdm's monitor) may hold locks the child then waits on.
#
# Here each worker is a fresh interpreter (`python -c`, not a fork) that imports only this module,
# talking over its own task pipe and result pipe: no lock is shared between processes and no
# helper thread runs in this one. A worker gets a call only when idle, so the parent never blocks
# on a write; it waits only for results, and a worker that dies shows there as end-of-file and is
# reported with its exit status. Stopping is SIGKILL, safe at any moment: nothing shared can be
# left locked and workers write no files.
#
# Start-up cost, measured on the project's 2-core CPU machine from a main script that imports torch
# (as train_trm.py does), until 2 workers have answered a trivial call: fork 0.04 s (unsafe, above),
# `python -c` 0.6 s, spawn 3.5-4.5 s and forkserver 3.4-3.7 s per pool (those two re-import the main
# script, hence torch, in the workers). 0.6 s is the time of about 800 4x4 or 50 9x9 puzzles, so
# generation starts in this process and moves to workers only after POOL_AFTER_S: small sets never
# start a process (a fresh 4x4 set of 250 puzzles takes about 0.1 s), a long run loses about a second.

POOL_AFTER_S = 1.0  # seconds of generation in this process before workers are started
_WORKERS_SUPPORTED = os.name == "posix" and bool(sys.executable)  # else: all in this process


class _Workers:
    """`n` worker processes that run fn(arg) calls for run(); close() (or `with`) kills them."""

    def __init__(self, n: int) -> None:
        self._procs: list[subprocess.Popen] = []
        self._send: list[Connection] = []  # this process's end of each worker's task pipe
        self._recv: list[Connection] = []  # this process's end of each worker's result pipe
        self._busy: dict[int, int] = {}  # worker index -> number of the call it runs
        self._calls = 0  # calls handed out so far (their numbers are 0, 1, ...)
        here = os.path.dirname(os.path.abspath(__file__))
        code = f"import sys; sys.path.insert(0, {here!r}); import data_sudoku; data_sudoku._worker_main()"
        try:
            for _ in range(n):
                task_r, task_w = os.pipe()
                result_r, result_w = os.pipe()
                self._send.append(Connection(task_w, readable=False))
                self._recv.append(Connection(result_r, writable=False))
                try:
                    # A new session: Ctrl-C in the terminal reaches this process only, which stops them.
                    self._procs.append(subprocess.Popen([sys.executable, "-c", code], stdin=task_r,
                                                        stdout=result_w, start_new_session=True))
                finally:
                    os.close(task_r)
                    os.close(result_w)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, fn: Callable[[Any], Any], args: Iterable[Any]) -> Iterator[Any]:
        """fn(arg) for each arg, in order (fn must be importable by name, like _generate_chunk).

        Calls are handed out one per idle worker and at most 2 per worker ahead of the result
        the caller waits for (bounded submission). An exception raised by a call is raised here
        in its turn; a worker that dies raises errors.DataError. Stopping early is fine: results
        of calls still running are dropped when they arrive, by this run or a later one.
        """
        args = iter(args)
        first = next_out = self._calls
        arrived: dict[int, tuple[bool, Any]] = {}  # call number -> (ok, result or exception)
        more = True
        while True:
            while more and len(self._busy) < len(self._procs) and self._calls < next_out + 2 * len(self._procs):
                arg = next(args, StopIteration)
                if arg is StopIteration:
                    more = False
                    break
                w = next(i for i in range(len(self._procs)) if i not in self._busy)
                try:
                    self._send[w].send((self._calls, fn, arg))
                except OSError:  # BrokenPipeError: the worker is gone
                    raise self._died(w) from None
                self._busy[w] = self._calls
                self._calls += 1
            if next_out in arrived:
                ok, value = arrived.pop(next_out)
                next_out += 1
                if not ok:
                    raise value
                yield value
                continue
            if not more and next_out == self._calls:  # every call of this run answered and handed on
                return
            if not self._busy:  # cannot happen: call next_out is out or arrived; never wait on nothing
                raise RuntimeError("_Workers.run: no call in flight and none arrived")
            for conn in wait([self._recv[w] for w in self._busy]):
                w = self._recv.index(conn)
                try:
                    number, ok, value = conn.recv()
                except (EOFError, OSError):  # its end of the pipe closed: the worker exited
                    raise self._died(w) from None
                del self._busy[w]
                if number >= first:
                    arrived[number] = (ok, value)

    def _died(self, w: int) -> errors.DataError:
        proc = self._procs[w]
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its pipe without exiting: should not happen
            proc.kill()
            code = proc.wait()
        if code < 0:
            cause = f"was killed by {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                cause += " (out of memory? the kernel's OOM killer sends SIGKILL)"
        else:
            cause = f"exited with status {code} (see its message above)"
        return errors.DataError(f"puzzle generation: worker process {proc.pid} {cause}; "
                                f"run again, or with fewer workers (workers=1: no worker processes)")

    def close(self) -> None:
        """Kill the workers and reap them; never waits on one that is stuck."""
        for proc in self._procs:
            proc.kill()  # a no-op for one that has exited
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): leave it
                pass
        for conn in self._send + self._recv:
            conn.close()
        self._procs, self._send, self._recv, self._busy = [], [], [], {}


def _worker_main() -> None:
    """A worker process (see _Workers): answer (number, fn, arg) calls from stdin on stdout."""
    tasks = Connection(os.dup(0), writable=False)
    results = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # a stray print goes to stderr, not into the result pipe
    while True:
        try:
            number, fn, arg = tasks.recv()
        except EOFError:  # the parent closed the pipe or exited
            return
        try:
            reply = (number, True, fn(arg))
        except errors.UserError as e:
            reply = (number, False, e)
        except Exception as e:  # a bug: send its traceback, which the parent could not show
            trace = "".join(traceback.format_exception(e))
            reply = (number, False, RuntimeError(f"in a puzzle generation worker:\n{trace}"))
        try:
            results.send(reply)
        except BrokenPipeError:  # the parent is gone
            return


def _iter_chunks(tasks: Iterable[tuple], workers: int) -> Iterator[tuple]:
    """_generate_chunk of each task, in task order, so the output does not depend on workers.

    Runs in this process until POOL_AFTER_S have passed, then on `workers` worker processes (if
    more than 1). Close the generator (contextlib.closing) to stop at once, workers included.
    """
    tasks = iter(tasks)
    start = time.perf_counter()
    for task in tasks:
        yield _generate_chunk(task)
        if workers > 1 and _WORKERS_SUPPORTED and time.perf_counter() - start >= POOL_AFTER_S:
            break
    else:
        return
    with _Workers(workers) as pool:
        yield from pool.run(_generate_chunk, tasks)


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
# Symmetries: augmentation and canonical keys
# ----------------------------------------------------------------------------------------------


def _line_orders(n_groups: int, group_len: int) -> list[list[int]]:
    """Every order of lines that permutes whole groups (bands/stacks) and lines inside each."""
    orders = []
    for group_perm in itertools.permutations(range(n_groups)):
        for inner in itertools.product(itertools.permutations(range(group_len)), repeat=n_groups):
            orders.append([group_perm[g] * group_len + inner[g][k] for g in range(n_groups) for k in range(group_len)])
    return orders


_GEOMETRY: dict[int, np.ndarray] = {}


def _geometric_group(size: int) -> np.ndarray:
    """[P, size*size] gather indices of the geometric symmetry group (transformed = grid[perm]).

    4x4: 2!*2^2 row orders x 2!*2^2 column orders x transpose = 128.
    6x6: 3!*2^3 row orders x 2!*(3!)^2 column orders = 3456 (no transpose: boxes are 2x3).
    9x9: identity only; the key covers relabelling alone (the group has 3,359,232 elements).
    """
    if size not in _GEOMETRY:
        br, bc = box_shape(size)
        if size == 9:
            perms = np.arange(81)[None, :]
        else:
            rows = np.array(_line_orders(size // br, br))  # [R, size]
            cols = np.array(_line_orders(size // bc, bc))  # [C, size]
            grid = rows[:, None, :, None] * size + cols[None, :, None, :]  # [R, C, size, size]
            grid = grid.reshape(-1, size, size)
            if br == bc:
                grid = np.concatenate([grid, grid.transpose(0, 2, 1)])
            perms = grid.reshape(len(grid), size * size)
        _GEOMETRY[size] = perms.astype(np.intp)
    return _GEOMETRY[size]


def canonical_key(solution: np.ndarray, size: int) -> bytes:
    """A key equal for equivalent complete grids (tokens).

    4x4, 6x6: equivalent under digit relabelling and every geometric symmetry. Each symmetric
    image is relabelled so its first row reads 1..size; the key is the lexicographic minimum.
    9x9: relabelling only (see _geometric_group).
    """
    grid, size = _as_grid(solution, size, "canonical_key")
    if not is_valid_solution(np.full(size * size, BLANK, np.uint8), grid, size):
        raise ValueError(f"canonical_key: not a complete valid {size}x{size} grid: {grid.tolist()}")
    grid = grid.astype(np.intp)
    perms = _geometric_group(size)  # image p of the grid is grid[perms[p]]
    n_images = len(perms)
    # relabel[p] maps image p's first row onto 1..size.
    relabel = np.zeros((n_images, size + 2), dtype=np.uint8)
    relabel[np.arange(n_images)[:, None], grid[perms[:, :size]]] = np.arange(1, size + 1, dtype=np.uint8)
    # Lexicographic minimum over the relabelled images, one cell at a time, only relabelling the
    # cells of images still in the running (most drop out within a few cells).
    best = np.arange(n_images)
    for cell in range(size, size * size):
        values = relabel[best, grid[perms[best, cell]]]
        best = best[values == values.min()]
        if len(best) == 1:
            break
    image = relabel[best[0]][grid[perms[best[0]]]]
    return bytes([size]) + image.tobytes()


def augment(
    inputs: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random validity-preserving transform per row to a batch of puzzles/solutions.

    inputs, labels: [B, size*size] tokens. Each row gets its own digit relabelling (BLANK and PAD
    kept), band, stack, row-in-band and column-in-stack permutations, and a transpose with
    probability 1/2 where boxes are square (4x4, 9x9). Puzzle and solution get the same transform.
    """
    inputs = np.asarray(inputs)
    labels = np.asarray(labels)
    n_cells = size * size
    br, bc = box_shape(size)
    for name, arr in (("inputs", inputs), ("labels", labels)):
        if arr.ndim != 2 or arr.shape[1] != n_cells:
            raise ValueError(f"augment: {name} must have shape [B, {n_cells}] for {size}x{size}, got {arr.shape}")
        if arr.size and arr.max() > size + 1:
            raise ValueError(f"augment: {name} holds token {arr.max()}, above the largest digit token {size + 1}")
    if inputs.shape != labels.shape:
        raise ValueError(f"augment: inputs {inputs.shape} and labels {labels.shape} differ in shape")
    batch = len(inputs)
    n_bands, n_stacks = size // br, size // bc
    # Source row of each output row: band order, then row order inside each band.
    band = rng.random((batch, n_bands)).argsort(axis=1)
    row_in_band = rng.random((batch, n_bands, br)).argsort(axis=2)
    src_row = (band[:, :, None] * br + row_in_band).reshape(batch, size)
    stack = rng.random((batch, n_stacks)).argsort(axis=1)
    col_in_stack = rng.random((batch, n_stacks, bc)).argsort(axis=2)
    src_col = (stack[:, :, None] * bc + col_in_stack).reshape(batch, size)
    index = src_row[:, :, None] * size + src_col[:, None, :]  # [B, size, size]
    if br == bc:
        flip = rng.random(batch) < 0.5
        index = np.where(flip[:, None, None], index.transpose(0, 2, 1), index)
    index = index.reshape(batch, n_cells)
    # Token map per row: PAD and BLANK fixed, digit tokens permuted.
    token_map = np.empty((batch, size + 2), dtype=inputs.dtype)
    token_map[:, PAD] = PAD
    token_map[:, BLANK] = BLANK
    token_map[:, 2:] = rng.random((batch, size)).argsort(axis=1) + 2
    out = []
    for arr in (inputs, labels):
        moved = np.take_along_axis(arr, index, axis=1).astype(np.intp)
        out.append(np.take_along_axis(token_map, moved, axis=1).astype(arr.dtype))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------
# .npz caches
# ----------------------------------------------------------------------------------------------


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to path atomically: a temporary file in the same folder, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read a cache file; a damaged one raises DataError naming the path."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise KeyError(f"missing arrays {missing}")
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cache file is corrupt or incomplete ({e})") from None


def _cached(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file; None when there is none, or when it is damaged: a cache is
    always rebuilt from its source (generator or CSV), atomically, over the damaged file."""
    if not path.exists():
        return None
    try:
        return _load_npz(path, keys)
    except DataError as e:
        print(f"warning: {e}; rebuilding it", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------------------------
# Generated train/test split
# ----------------------------------------------------------------------------------------------

SPLIT_KEYS = ("train_inputs", "train_labels", "train_ratings", "test_inputs", "test_labels", "test_ratings")
_SPLIT_STREAM = 2**32 - 1  # SeedSequence word of the split decisions; chunk numbers stay far below
SPLIT_MAX_TRIES = 50  # give up after generating this many puzzles per puzzle asked for (+ 20 chunks)


def generated_cache_path(
    size: int, n_train: int, n_test: int, givens: tuple[int, int], min_rating: int, max_rating: int,
    seed: int, data_dir: str | Path,
) -> Path:
    """Where make_generated_split caches a split with these parameters."""
    lo, hi = givens
    top = "any" if max_rating < 0 else str(max_rating)
    return Path(data_dir) / f"sudoku{size}_tr{n_train}_te{n_test}_g{lo}-{hi}_r{min_rating}-{top}_s{seed}.npz"


def make_generated_split(
    size: int,
    n_train: int,
    n_test: int,
    givens: tuple[int, int],
    min_rating: int,
    max_rating: int,
    seed: int,
    data_dir: str | Path,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Generated train and test sets that share no solution grid up to equivalence.

    Equivalence is canonical_key's (full symmetry for 4x4/6x6, relabelling for 9x9). A grid class
    seen first goes to test if test has none yet, else to train if train has none yet, else to
    test with probability n_test / (n_train + n_test) while test is not full; later puzzles of the
    class follow it (dropped when that split is full). Duplicate puzzles are dropped. Cached as
    .npz in data_dir (see generated_cache_path); a second call just loads the file.
    """
    lo, hi = _check_gen_args(size, givens, min_rating, max_rating)
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    problem = split_supply_problem(size, n_train, n_test, (lo, hi))
    if problem:
        raise errors.ConfigError(problem)
    path = generated_cache_path(size, n_train, n_test, (lo, hi), min_rating, max_rating, seed, data_dir)
    cached = _cached(path, SPLIT_KEYS)
    if cached is not None:
        return cached

    workers = _resolve_workers(workers)
    want = {"train": n_train, "test": n_test}
    got: dict[str, list] = {"train": [], "test": []}  # (input, label, rating) per split
    key_split: dict[bytes, str] = {}  # canonical key -> split
    seen_puzzles: set[bytes] = set()
    p_test = n_test / (n_train + n_test)
    split_rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM]))
    total = n_train + n_test
    max_chunks = -(-(SPLIT_MAX_TRIES * total + 20 * GEN_CHUNK) // GEN_CHUNK)  # the bounded search
    tasks = ((size, GEN_CHUNK, c, seed, lo, hi, min_rating, max_rating, True) for c in range(max_chunks))
    generated = 0

    def full(split: str) -> bool:
        return len(got[split]) >= want[split]

    with tqdm(total=total, disable=not progress, desc=f"sudoku {size}x{size} split", unit="puzzle") as bar, \
            contextlib.closing(_iter_chunks(tasks, workers)) as chunks:
        for inputs, labels, ratings, keys in chunks:
            for puz, sol, rating, key in zip(inputs, labels, ratings, keys):
                generated += 1
                puz_bytes = puz.tobytes()
                if puz_bytes in seen_puzzles:
                    continue
                if key not in key_split:
                    to_test = split_rng.random() < p_test
                    if not got["test"] and not full("test"):
                        key_split[key] = "test"
                    elif not got["train"] and not full("train"):
                        key_split[key] = "train"
                    elif full("test"):
                        key_split[key] = "train"
                    elif full("train"):
                        key_split[key] = "test"
                    else:
                        key_split[key] = "test" if to_test else "train"
                split = key_split[key]
                if full(split):
                    continue
                seen_puzzles.add(puz_bytes)
                got[split].append((puz, sol, rating))
                bar.update(1)
            if full("train") and full("test"):
                break
    if not (full("train") and full("test")):
        raise errors.DataError(
            f"make_generated_split: found {len(got['train'])} of {n_train} training and {len(got['test'])} of "
            f"{n_test} held-out distinct {size}x{size} puzzles with {lo}-{hi} givens (training and held-out "
            f"from different grid classes; {len(key_split)} classes seen) after {generated} tries; "
            f"lower n_train / n_test or widen givens"
        )

    n_cells = size * size
    data = {}
    for split in ("train", "test"):
        rows = got[split]
        data[f"{split}_inputs"] = np.stack([r[0] for r in rows]).astype(np.uint8).reshape(-1, n_cells)
        data[f"{split}_labels"] = np.stack([r[1] for r in rows]).astype(np.uint8).reshape(-1, n_cells)
        data[f"{split}_ratings"] = np.array([r[2] for r in rows], dtype=np.int32)
    _save_npz(path, data)
    return data


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
# Hugging Face CSV datasets (sapientinc/sudoku-extreme layout)
# ----------------------------------------------------------------------------------------------

HF_COLUMNS = ("question", "answer", "rating")  # required header columns ("source" is optional)
_ALL_ONES_9 = 0b1111111110  # OR of 1 << d for d in 1..9


def _hf_csv_path(
    repo_id: str, split: str, cache_dir: str | Path | None, local_files_only: bool, force_download: bool
) -> str:
    """Local path of {split}.csv of a dataset repo, downloaded into the hub cache if needed."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    filename = f"{split}.csv"
    offline = local_files_only or huggingface_hub.is_offline_mode()
    if force_download and offline:
        # The hub refuses force_download offline; rebuild our cache from the local CSV instead.
        print(f"load_hf: offline, so force_download re-reads the cached {repo_id}/{filename} instead of downloading")
        force_download = False
    try:
        return huggingface_hub.hf_hub_download(
            repo_id,
            filename=filename,
            repo_type="dataset",
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        where = cache_dir if cache_dir is not None else constants.HF_HUB_CACHE
        raise DataError(
            f"dataset file {repo_id}/{filename} is not in the Hugging Face cache ({where}) and cannot be "
            f"downloaded here (offline or no network). Get it on a machine with internet with "
            f"`{HF_DOWNLOAD_HINT.format(repo_id=repo_id)}` (older huggingface_hub: "
            f"`huggingface-cli download {repo_id} --repo-type dataset`) and copy the cache over, "
            f"or run once with internet access."
        ) from e


def _read_sudoku_csv(path: str | Path, skip_bad_rows: bool, progress: bool, role: str = "data"
                     ) -> tuple[np.ndarray, ...]:
    """Parse a question,answer,rating CSV into (inputs, labels, ratings); bad rows raise or skip.

    A file without a usable row raises errors.DataError naming it and the counts (role, e.g.
    "training", says in the message which split it was read for).
    """
    name = str(path)
    bad: list[tuple[int, str]] = []  # (line number, reason)
    questions, answers, ratings, lines = [], [], [], []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not a column name
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise errors.DataError(f"{name}: empty file, expected a header with columns {', '.join(HF_COLUMNS)}")
        header = [h.strip() for h in header]
        missing = [c for c in HF_COLUMNS if c not in header]
        if missing:
            raise errors.DataError(
                f"{name} line 1: header {header} lacks column(s) {missing}; expected source,question,answer,rating"
            )
        qi, ai, ri = (header.index(c) for c in HF_COLUMNS)
        n_fields = max(qi, ai, ri) + 1
        for row in tqdm(reader, disable=not progress, desc=f"reading {Path(name).name}", unit="row"):
            line = reader.line_num
            if not row:
                continue
            if len(row) < n_fields:
                bad.append((line, f"{len(row)} fields, expected {len(header)}"))
                continue
            q, a, r = row[qi].strip(), row[ai].strip(), row[ri].strip()
            problem = ""
            for what, s in (("question", q), ("answer", a)):
                if len(s) != 81:
                    problem = problem or f"{what} has {len(s)} characters, expected 81"
                elif not s.isascii():
                    pos = next(k for k, ch in enumerate(s) if not ch.isascii())
                    problem = problem or f"bad character {s[pos]!r} at position {pos + 1} of the {what}"
            try:
                rating = int(r)
            except ValueError:
                problem = problem or f"rating {r!r} is not an integer"
            if problem:
                bad.append((line, problem))
                continue
            questions.append(q)
            answers.append(a)
            ratings.append(rating)
            lines.append(line)

    n = len(questions)
    q_chars = np.frombuffer("".join(questions).encode("ascii"), dtype=np.uint8).reshape(n, 81)
    a_chars = np.frombuffer("".join(answers).encode("ascii"), dtype=np.uint8).reshape(n, 81)
    q_blank = (q_chars == ord(".")) | (q_chars == ord("0"))
    q_ok = q_blank | ((q_chars >= ord("1")) & (q_chars <= ord("9")))
    a_ok = (a_chars >= ord("1")) & (a_chars <= ord("9"))
    row_ok = q_ok.all(axis=1) & a_ok.all(axis=1)
    units = unit_index(9)
    for start in range(0, n, 65536):  # blocks keep the [rows, 27, 9] temporaries small
        block = slice(start, start + 65536)
        digits = np.where(a_ok[block], a_chars[block] - ord("0"), 0).astype(np.uint16)
        unit_bits = np.bitwise_or.reduce(np.left_shift(1, digits)[:, units], axis=2)  # [rows, 27]
        valid = (unit_bits == _ALL_ONES_9).all(axis=1)
        kept = (q_blank[block] | (q_chars[block] == a_chars[block])).all(axis=1)
        row_ok[block] &= valid & kept
    for k in np.flatnonzero(~row_ok):
        q, a = questions[k], answers[k]
        pos_q = [j for j, ch in enumerate(q) if ch not in ".0123456789"]
        pos_a = [j for j, ch in enumerate(a) if ch not in "123456789"]
        if pos_q:
            reason = f"bad character {q[pos_q[0]]!r} at position {pos_q[0] + 1} of the question"
        elif pos_a:
            reason = f"bad character {a[pos_a[0]]!r} at position {pos_a[0] + 1} of the answer"
        else:
            differs = [j for j in range(81) if q[j] not in ".0" and q[j] != a[j]]
            if differs:
                j = differs[0]
                reason = f"answer contradicts its givens: position {j + 1} is {q[j]} in the question, {a[j]} in the answer"
            else:
                reason = "answer is not a valid Sudoku grid (a digit repeats in a row, column or box)"
        bad.append((lines[k], reason))

    if bad:
        bad.sort()
        first_line, first_reason = bad[0]
        if not skip_bad_rows:
            more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
            raise errors.DataError(
                f"{name} line {first_line}: {first_reason}{more}; pass skip_bad_rows=True "
                f"(data.skip_bad_rows) to skip bad rows"
            )
        if not row_ok.any():
            raise errors.DataError(
                f"{name}: no usable {role} row: all {len(bad)} data rows are bad "
                f"(first: line {first_line}: {first_reason})"
            )
        print(
            f"warning: {name}: skipped {len(bad)} bad rows (first: line {first_line}: {first_reason})",
            file=sys.stderr,
        )
    if not n:
        raise errors.DataError(f"{name}: no {role} rows after the header")
    q_digits = q_chars[row_ok].astype(np.int16) - ord("0")
    inputs = np.where(q_blank[row_ok], BLANK, q_digits + 1).astype(np.uint8)
    labels = (a_chars[row_ok] - ord("0") + 1).astype(np.uint8)
    return inputs, labels, np.asarray(ratings, dtype=np.int32)[row_ok]


def hf_cache_path(
    repo_id: str, split: str, subset: int, min_rating: int, seed: int, data_dir: str | Path, skip_bad_rows: bool
) -> Path:
    """Where load_hf caches one parsed split."""
    skip = "_skipbad" if skip_bad_rows else ""
    return Path(data_dir) / f"hf_{repo_id.replace('/', '--')}_{split}_sub{subset}_r{min_rating}_s{seed}{skip}.npz"


def load_hf(
    repo_id: str = "sapientinc/sudoku-extreme",
    splits: tuple[str, str] = ("train", "test"),
    train_subset: int = 0,
    test_subset: int = 0,
    min_rating: int = 0,
    force_download: bool = False,
    data_dir: str | Path = "data",
    seed: int = 0,
    skip_bad_rows: bool = False,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Load a Sudoku CSV dataset from the Hugging Face hub (9x9, `source,question,answer,rating`).

    splits names the CSV files used as (train, test): `{splits[0]}.csv` and `{splits[1]}.csv`.
    Rows with rating < min_rating are dropped, then a seeded random subset of train_subset /
    test_subset rows is kept (0 = all; file order is preserved). The result of each split is cached
    as .npz in data_dir (see hf_cache_path) and later calls read it without touching the hub.
    force_download=True downloads the CSV again (offline: re-reads the cached CSV) and rebuilds the
    .npz. Returns the keys of make_generated_split.
    """
    splits = tuple(splits)
    if len(splits) != 2:
        raise ValueError(f"load_hf: splits must name two CSV files (train, test), got {splits!r}")
    for name, value in (("train_subset", train_subset), ("test_subset", test_subset), ("min_rating", min_rating)):
        if value < 0:
            raise ValueError(f"load_hf: {name} must be >= 0, got {value}")
    out = {}
    for prefix, split, subset in (("train", splits[0], train_subset), ("test", splits[1], test_subset)):
        role = "training" if prefix == "train" else "held-out"
        path = hf_cache_path(repo_id, split, subset, min_rating, seed, data_dir, skip_bad_rows)
        arrays = None if force_download else _cached(path, ("inputs", "labels", "ratings"))
        if arrays is None:
            csv_path = _hf_csv_path(repo_id, split, cache_dir, local_files_only, force_download)
            try:
                inputs, labels, ratings = _read_sudoku_csv(csv_path, skip_bad_rows, progress, role)
            except DataError:  # the file read, but no usable rows: the message says why
                raise
            except ValueError as e:  # names the file and line; a damaged download is fixed by a new one
                if isinstance(e, UnicodeDecodeError):
                    e = f"{csv_path}: not UTF-8 text ({e.reason})"
                raise DataError(f"{e}. If the download is damaged, fetch it again with "
                                f'{{"data": {{"force_download": true}}}} in your config') from None
            keep = np.flatnonzero(ratings >= min_rating)
            if not len(keep):
                raise errors.DataError(f"{csv_path}: none of its {len(ratings)} usable {role} rows has a rating "
                                       f">= {min_rating}; lower data.min_rating")
            if subset:
                if subset > len(keep):
                    print(f"load_hf: {repo_id}/{split}.csv has {len(keep)} rows with rating >= {min_rating}, "
                          f"fewer than the {subset} asked for; using all of them", file=sys.stderr)
                else:
                    sub_rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode())]))
                    keep = np.sort(sub_rng.choice(keep, size=subset, replace=False))
            arrays = dict(inputs=inputs[keep], labels=labels[keep], ratings=ratings[keep])
            _save_npz(path, arrays)
        if not len(arrays["inputs"]):  # a cache written before the checks above existed
            raise errors.DataError(f"{path}: the cached {role} split is empty; delete the file and run again")
        for key, value in arrays.items():
            out[f"{prefix}_{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------
# Dispatcher for the training script
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SudokuData:
    """Train and test arrays (tokens, see the module docstring) plus a one-line description."""

    size: int
    train_inputs: np.ndarray
    train_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray
    train_ratings: np.ndarray
    test_ratings: np.ndarray
    description: str


def _cfg(cfg: dict, key: str) -> Any:
    if key not in cfg:
        raise ValueError(f"data.{key}: missing from the data config")
    return cfg[key]


def data_source(cfg: dict) -> str:
    """The source a data config selects: use_builtin_sample=True overrides data.source."""
    source = "builtin" if _cfg(cfg, "use_builtin_sample") else _cfg(cfg, "source")
    if source not in ("builtin", "generated", "hf"):
        raise ValueError(f"data.source: {source!r} is not one of builtin, generated, hf")
    return source


def check_data_config(cfg: dict) -> None:
    """Range checks on the values the chosen source uses (types are checked by the caller)."""
    source = data_source(cfg)
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
        problem = split_supply_problem(size, cfg["n_train"], cfg["n_test"], (lo, hi))
        if problem:
            raise errors.ConfigError(f"data.{problem}")
        max_rating = _cfg(cfg, "max_rating")
        if max_rating != -1 and max_rating < _cfg(cfg, "min_rating"):
            raise ValueError(f"data.max_rating: {max_rating} must be -1 (no maximum) or >= data.min_rating ({cfg['min_rating']})")
    if source in ("generated", "hf") and _cfg(cfg, "min_rating") < 0:
        raise ValueError(f"data.min_rating: {cfg['min_rating']} must be >= 0")
    if source == "hf":
        if len(_cfg(cfg, "splits")) != 2:
            raise ValueError(f"data.splits: {cfg['splits']} must name two CSV files, e.g. ['train', 'test']")
        for key in ("train_subset", "test_subset"):
            if _cfg(cfg, key) < 0:
                raise ValueError(f"data.{key}: {cfg[key]} must be >= 0 (0 = all rows)")
        if _cfg(cfg, "max_rating") != -1:
            raise ValueError(f"data.max_rating: {cfg['max_rating']} is not supported for source 'hf' (use -1); "
                             f"only data.min_rating filters CSV rows")


def load_sudoku(cfg: dict, seed: int, progress: bool = True) -> SudokuData:
    """Build or load the data set described by the `data` section of a run config."""
    check_data_config(cfg)
    source = data_source(cfg)

    if source == "builtin":
        sample = builtin_sample()
        n = len(sample["inputs"])
        zeros = np.zeros(n, dtype=np.int32)
        return SudokuData(
            size=9,
            train_inputs=sample["inputs"], train_labels=sample["labels"],
            test_inputs=sample["inputs"].copy(), test_labels=sample["labels"].copy(),
            train_ratings=zeros, test_ratings=zeros.copy(),
            description=f"builtin sample 9x9, {n} puzzles; test = train (a sanity set, not held-out)",
        )

    if source == "generated":
        size, (lo, hi) = cfg["grid_size"], cfg["givens"]
        data = make_generated_split(
            size, cfg["n_train"], cfg["n_test"], (lo, hi), cfg["min_rating"], cfg["max_rating"],
            seed, _cfg(cfg, "data_dir"), progress=progress,
        )
        rating = ""
        if cfg["min_rating"] > 0 or cfg["max_rating"] != -1:
            top = "any" if cfg["max_rating"] == -1 else cfg["max_rating"]
            rating = f", rating {cfg['min_rating']}-{top}"
        description = (
            f"generated {size}x{size}, {cfg['n_train']} train / {cfg['n_test']} test, {lo}-{hi} givens{rating}"
        )
    else:
        size = 9
        data = load_hf(
            repo_id=_cfg(cfg, "repo_id"), splits=tuple(cfg["splits"]),
            train_subset=cfg["train_subset"], test_subset=cfg["test_subset"], min_rating=cfg["min_rating"],
            force_download=_cfg(cfg, "force_download"), data_dir=_cfg(cfg, "data_dir"), seed=seed,
            skip_bad_rows=_cfg(cfg, "skip_bad_rows"), progress=progress,
        )
        rating = f", rating >= {cfg['min_rating']}" if cfg["min_rating"] else ""
        description = (
            f"{cfg['repo_id']} ({cfg['splits'][0]}/{cfg['splits'][1]}.csv), {len(data['train_inputs'])} train / "
            f"{len(data['test_inputs'])} test{rating}"
        )
    return SudokuData(size=size, description=description, **data)


# ----------------------------------------------------------------------------------------------
# Command line: bench and generate
# ----------------------------------------------------------------------------------------------

_BENCH_DEFAULTS = {4: ((4, 10), 8000), 6: ((12, 20), 6000), 9: ((28, 32), 800)}  # givens, puzzles


def _histogram(values: np.ndarray) -> str:
    counts = Counter(values.tolist())
    return " ".join(f"{k}:{counts[k]}" for k in sorted(counts))


def _bench(args: argparse.Namespace) -> None:
    global POOL_AFTER_S
    POOL_AFTER_S = 0.0  # measure all the workers: start them with the first chunk (their start-up is timed)
    workers = _resolve_workers(args.workers)
    print(f"generator bench: {workers} worker process(es), {os.cpu_count()} cores, seed {args.seed}")
    for size in args.sizes:
        givens, n = _BENCH_DEFAULTS[size]
        n = max(1, int(n * args.scale))
        start = time.perf_counter()
        data = generate_puzzles(size, n, givens, seed=args.seed, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        print(f"{size}x{size}: {n} unique puzzles, givens {givens[0]}-{givens[1]}, "
              f"{seconds:.2f} s = {n / seconds:,.0f} puzzles/s")
        print(f"  givens  {_histogram((data['inputs'] > BLANK).sum(axis=1))}")
        print(f"  ratings {_histogram(data['ratings'])}")


def _generate(args: argparse.Namespace) -> None:
    lo, hi = args.givens
    start = time.perf_counter()
    data = make_generated_split(
        args.size, args.n_train, args.n_test, (lo, hi), args.min_rating, args.max_rating,
        args.seed, args.data_dir, workers=args.workers, progress=True,
    )
    path = generated_cache_path(args.size, args.n_train, args.n_test, (lo, hi), args.min_rating,
                                args.max_rating, args.seed, args.data_dir)
    print(f"{path} ({time.perf_counter() - start:.1f} s)")
    for split in ("train", "test"):
        inputs, ratings = data[f"{split}_inputs"], data[f"{split}_ratings"]
        classes = len({canonical_key(g, args.size) for g in data[f"{split}_labels"]})
        print(f"{split}: {len(inputs)} puzzles, {classes} grid classes, "
              f"givens {_histogram((inputs > BLANK).sum(axis=1))}, ratings {_histogram(ratings)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Sudoku data: generator benchmark and cache builder.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="measure generator throughput per grid size")
    bench.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 9], choices=SIZES, help="grid sizes to time")
    bench.add_argument("--scale", type=float, default=1.0, help="multiply the default puzzle counts")
    bench.add_argument("--workers", type=int, default=0, help="worker processes (0 = all cores)")
    bench.add_argument("--seed", type=int, default=0, help="generator seed")
    gen = sub.add_parser("generate", help="build (or load) a cached train/test split and print counts")
    gen.add_argument("--size", type=int, default=6, choices=SIZES, help="grid size")
    gen.add_argument("--n-train", type=int, default=2000, help="training puzzles")
    gen.add_argument("--n-test", type=int, default=500, help="test puzzles")
    gen.add_argument("--givens", type=int, nargs=2, default=[14, 20], metavar=("LO", "HI"), help="givens range, inclusive")
    gen.add_argument("--min-rating", type=int, default=0, help="minimum rating (solver guesses)")
    gen.add_argument("--max-rating", type=int, default=-1, help="maximum rating, -1 = none")
    gen.add_argument("--seed", type=int, default=0, help="generator seed")
    gen.add_argument("--data-dir", default="data", help="folder of the .npz caches")
    gen.add_argument("--workers", type=int, default=0, help="worker processes (0 = all cores)")
    args = parser.parse_args(argv)
    if args.command == "bench":
        _bench(args)
    else:
        _generate(args)


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: worker processes find its functions by name.
    import data_sudoku

    errors.run_cli(data_sudoku.main)  # a user error or Ctrl-C ends with one line, no traceback
