"""Sudoku rules: the token layout, parsing and printing, the validity check, and the symmetries
(augmentation and equivalence keys). numpy only; no model code.

Token layout (one layout for every grid size)
---------------------------------------------
    PAD   = 0          never appears in a grid; reserved for the model's padding
    BLANK = 1          an empty cell of a puzzle
    digit d (1..size)  token d + 1

so 9x9 grids use tokens 2..10 for digits, the same as the official TRM Sudoku builder, and
``vocab_size(size) == size + 2``. A grid is a flat, row-major ``uint8`` array of ``size * size``
tokens. Puzzles (``inputs``) hold BLANK and digit tokens, solutions (``labels``) only digits.
Sizes and boxes: 4x4 has 2x2 boxes, 6x6 has boxes of 2 rows x 3 columns, 9x9 has 3x3 boxes.

Equivalent grids
----------------
``canonical_key()`` maps a solution grid to a key that is equal for equivalent grids. For 4x4 and
6x6 "equivalent" means under digit relabelling and every validity-preserving geometric symmetry
(band, stack, row-in-band and column-in-stack permutations, plus transpose where boxes are
square). For 9x9 the key covers digit relabelling only: the 9x9 geometric group has
3!^8 * 2 = 3,359,232 elements, too many to enumerate per grid. ``split_key()`` is the key that
generated train/test splits keep apart (see there why 4x4 differs).
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

PAD = 0  # padding token, never inside a grid
BLANK = 1  # empty cell of a puzzle
SIZES = (4, 6, 9)  # supported grid sizes
_BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # size -> (box_rows, box_cols)


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


def format_marked(tokens: Any, size: int, marked: np.ndarray) -> str:
    """Like format_grid, with '*' after the cells where marked (S,) is true."""
    grid, size = _as_grid(tokens, size, "format_marked")
    br, bc = box_shape(size)
    symbols = {PAD: "_", BLANK: "."} | {d + 1: str(d) for d in range(1, size + 1)}
    cells = [symbols.get(int(t), "?") + ("*" if m else " ") for t, m in zip(grid, np.asarray(marked).reshape(-1))]
    lines = []
    for r in range(size):
        if r and r % br == 0:
            lines.append("-+-".join(["-" * (3 * bc - 1)] * (size // bc)))
        row = cells[r * size:(r + 1) * size]
        lines.append(" | ".join(" ".join(row[c:c + bc]) for c in range(0, size, bc)).rstrip())
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



def valid_grids(inputs: np.ndarray, answers: np.ndarray, size: int) -> np.ndarray:
    """(N,) bool: the answer is a complete grid (every row, column and box a permutation of the
    digits) that keeps every given of its puzzle. Vectorised over puzzles; is_valid_solution is
    the one-grid reference."""
    inputs, answers = np.asarray(inputs).astype(np.int64), np.asarray(answers).astype(np.int64)
    units = answers[:, unit_index(size)]                                # (N, 3*size, size)
    digits = np.arange(2, size + 2)                                     # tokens of digits 1..size
    rules = (np.sort(units, axis=2) == digits).all(axis=(1, 2))
    kept = ((answers == inputs) | (inputs <= BLANK)).all(axis=1)
    return rules & kept


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


def relabel_key(solution: np.ndarray, size: int) -> bytes:
    """A key equal for grids that differ only by a relabelling of the digits (first row -> 1..size)."""
    grid, size = _as_grid(solution, size, "relabel_key")
    relabel = np.zeros(size + 2, dtype=np.uint8)
    relabel[grid[:size]] = np.arange(1, size + 1, dtype=np.uint8)
    return bytes([size, 0]) + relabel[grid].tobytes()


def split_key(solution: np.ndarray, size: int) -> bytes:
    """The key that generated splits keep apart: canonical_key for 6x6 and 9x9, relabel_key for 4x4.

    4x4 Sudoku has 288 solution grids in only two classes under the full symmetry group, so a
    split disjoint in those would hold out a kind of grid that training never shows: held-out
    accuracy then falls while training accuracy rises. Up to relabelling there are 12 classes, and
    augmentation's geometric symmetries reach every grid: a 4x4 held-out set measures solving
    puzzles not seen in training, on grids of a kind training shows.
    """
    return relabel_key(solution, size) if size == 4 else canonical_key(solution, size)


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


def random_symmetry(size: int, rng: np.random.Generator, identity: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One validity-preserving transform, as augment draws them: (index, token_map) with
    transformed = token_map[grid[index]]; index (size*size,) is a cell permutation (band, stack,
    row-in-band, column-in-stack orders, and a transpose with probability 1/2 where boxes are
    square), token_map (size + 2,) relabels the digits and keeps PAD and BLANK. identity=True: the
    identity transform (nothing drawn)."""
    n_cells = size * size
    if identity:
        return np.arange(n_cells), np.arange(size + 2)
    br, bc = box_shape(size)
    n_bands, n_stacks = size // br, size // bc
    src_row = (rng.permutation(n_bands)[:, None] * br + np.stack([rng.permutation(br) for _ in range(n_bands)])).reshape(-1)
    src_col = (rng.permutation(n_stacks)[:, None] * bc + np.stack([rng.permutation(bc) for _ in range(n_stacks)])).reshape(-1)
    index = src_row[:, None] * size + src_col[None, :]                   # (size, size)
    if br == bc and rng.random() < 0.5:
        index = index.T
    token_map = np.concatenate([[PAD, BLANK], rng.permutation(size) + 2])
    return index.reshape(n_cells), token_map


def apply_symmetry(tokens: np.ndarray, index: np.ndarray, token_map: np.ndarray) -> np.ndarray:
    """token_map[tokens[:, index]] for tokens (N, size*size); any token of the vocabulary."""
    tokens = np.asarray(tokens)
    return token_map[tokens[:, index].astype(np.intp)].astype(tokens.dtype)


def invert_symmetry(index: np.ndarray, token_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (index, token_map) that undoes apply_symmetry(., index, token_map) exactly."""
    return np.argsort(index), np.argsort(token_map)

