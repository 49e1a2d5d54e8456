"""A Sudoku solver for every grid size: bitmask candidates, naked and hidden singles, and
branching on the cell with the fewest candidates. It counts solutions (uniqueness), rates a
puzzle by its number of guesses, and makes complete random grids for the generator.

Rating: a puzzle's rating is the number of branch points (guesses) this solver needs, beyond
constraint propagation, to find its solutions and prove there are no more:
``solve(puzzle, size, limit=2)[1]`` with the default, deterministic candidate order. 0 means
propagation alone solves the puzzle.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np

from sudoku_rules import BLANK, _as_grid, box_shape, unit_index

# ----------------------------------------------------------------------------------------------
# Solver: bitmask candidates, naked + hidden singles, MRV branching
# ----------------------------------------------------------------------------------------------
# Internally a cell holds a bit (1 << (digit - 1)) or 0 when empty; rows/cols/boxes keep the
# mask of digits already placed. Everything is plain Python ints and lists: for grids this small
# that beats numpy by a wide margin.


class Tables:
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


_TABLES: dict[int, Tables] = {}


def tables(size: int) -> Tables:
    if size not in _TABLES:
        _TABLES[size] = Tables(size)
    return _TABLES[size]


def _propagate(g: list, rm: list, cm: list, bm: list, empty: list, t: Tables):
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


def solve_bits(givens: list, t: Tables, limit: int, rnd: random.Random | None) -> tuple[list, int]:
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


def tokens_to_bits(puzzle: Any, size: int) -> list:
    grid, size = _as_grid(puzzle, size, "puzzle")
    values = grid.astype(np.int64)
    if values.min() < BLANK or values.max() > size + 1:
        bad = int(np.flatnonzero((values < BLANK) | (values > size + 1))[0])
        raise ValueError(
            f"puzzle: token {values[bad]} at position {bad + 1} is not BLANK (1) or a digit token 2..{size + 1}"
        )
    return [0 if v == BLANK else 1 << (v - 2) for v in values.tolist()]


def bits_to_tokens(bits: list, t: Tables) -> np.ndarray:
    digit_of = t.digit_of
    return np.array([digit_of[b] + 1 if b else BLANK for b in bits], dtype=np.uint8)


def python_rng(rng: Any) -> random.Random | None:
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
    t = tables(size)
    sols, guesses = solve_bits(tokens_to_bits(puzzle, size), t, limit, python_rng(rng))
    return [bits_to_tokens(s, t) for s in sols], guesses


def count_solutions(puzzle: np.ndarray, size: int, limit: int = 2) -> int:
    """Number of solutions, counting stops at `limit`."""
    return len(solve(puzzle, size, limit=limit)[0])


