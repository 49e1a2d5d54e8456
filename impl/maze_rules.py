"""Maze rules: the token layout, parsing and printing, shortest paths, the path checker, and the
8 symmetries of the square (augmentation and equivalence keys). numpy only; no model code.

Token layout (the official maze builder's, dataset/build_maze_dataset.py)
------------------------------------------------------------------------
    PAD   = 0    never inside a maze
    '#'   = 1    wall
    ' '   = 2    open cell
    'S'   = 3    start
    'G'   = 4    goal
    'o'   = 5    a cell of the path (labels only)

so ``vocab_size == 6`` and official builds and these are interchangeable. A maze is a flat,
row-major ``uint8`` array of ``size * size`` tokens. An input holds walls, open cells, one S and
one G; its label is the same maze with the cells of the shortest path between S and G (S and G
excluded) marked 'o'. A path of k moves marks k - 1 cells.

A valid answer (``valid_paths``, ``path_problem``) keeps every cell of the maze as it is except
open cells it marks 'o'; the marked cells with S and G form one route of 4-adjacent cells from S
to G, with no stray marked cell; and that route is a shortest one. It need not equal the label
when the maze has several shortest paths (generated mazes never do; see maze_gen.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

CHARSET = "# SGo"  # tokens 1..5, in the official builder's order
PAD, WALL, OPEN, START, GOAL, PATH = range(6)
VOCAB_SIZE = len(CHARSET) + 1
MIN_SIZE, MAX_SIZE = 4, 30  # supported N for N x N mazes (Maze-Hard: 30)
SHOW = {PAD: "_", WALL: "#", OPEN: ".", START: "S", GOAL: "G", PATH: "o"}  # how cells are printed
_TOKEN_OF = {"#": WALL, " ": OPEN, ".": OPEN, "S": START, "G": GOAL, "o": PATH}  # '.' also reads as open


# ----------------------------------------------------------------------------------------------
# Parsing and printing
# ----------------------------------------------------------------------------------------------


def size_of(n_cells: int) -> int:
    """N of an N x N maze of n_cells cells; ValueError if n_cells is not a square in range."""
    size = int(round(n_cells ** 0.5))
    if size * size != n_cells or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"expected N x N cells with N in {MIN_SIZE}..{MAX_SIZE} (16, 25, ..., 900), got {n_cells}")
    return size


def parse_maze(text: str, answer: bool = False) -> np.ndarray:
    """Tokens of a maze typed as N lines of N characters, or as one line of N*N characters (the CSV
    form): '#' wall, ' ' or '.' open, 'S' start, 'G' goal (and 'o' path when answer=True). Exactly
    one S and one G. Errors name the row and column (1-based)."""
    rows = text.split("\n")
    rows = [r[:-1] if r.endswith("\r") else r for r in rows]
    while rows and rows[-1] == "":
        rows.pop()
    if len(rows) > 1:
        widths = {len(r) for r in rows}
        if widths != {len(rows)}:
            bad = next(i for i, r in enumerate(rows) if len(r) != len(rows))
            raise ValueError(f"a maze of {len(rows)} lines needs {len(rows)} characters per line; "
                             f"line {bad + 1} has {len(rows[bad])}")
    cells = "".join(rows)
    size = size_of(len(cells))
    allowed = "# .SGo" if answer else "# .SG"
    out = np.empty(size * size, dtype=np.uint8)
    for pos, ch in enumerate(cells):
        if ch not in allowed:
            raise ValueError(f"bad character {ch!r} at row {pos // size + 1}, column {pos % size + 1} "
                             f"(a maze uses {' '.join(repr(c) for c in allowed)})")
        out[pos] = _TOKEN_OF[ch]
    for token, name in ((START, "start 'S'"), (GOAL, "goal 'G'")):
        count = int((out == token).sum())
        if count != 1:
            raise ValueError(f"the maze has {count} {name} cells, expected exactly 1")
    return out


def format_maze(tokens: Any, size: int, marked: np.ndarray | None = None) -> str:
    """The maze as rows of cells ('#' wall, '.' open, 'S', 'G', 'o' path), a space or, where marked
    (S,) is true, a '*' after each cell."""
    grid = np.asarray(tokens).reshape(-1)
    if grid.size != size * size:
        raise ValueError(f"format_maze: {grid.size} tokens is not a {size}x{size} maze")
    marks = np.zeros(grid.size, bool) if marked is None else np.asarray(marked).reshape(-1)
    cells = [SHOW.get(int(t), "?") + ("*" if m else " ") for t, m in zip(grid, marks)]
    return "\n".join("".join(cells[r * size:(r + 1) * size]).rstrip() for r in range(size))


# ----------------------------------------------------------------------------------------------
# Shortest paths
# ----------------------------------------------------------------------------------------------


def bfs(passable: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Breadth-first distances, in moves between 4-adjacent passable cells, from one start cell per
    maze. passable: (B, N, N) bool; start: (B,) flat cell index. Returns (B, N, N) int32, -1 where
    unreachable (everywhere when the start is not passable). All mazes advance one layer at a
    time; mazes whose search has ended drop out of the arrays."""
    passable = np.asarray(passable, dtype=bool)
    B, N, _ = passable.shape
    dist = np.full((B, N * N), -1, np.int32)
    rows = np.arange(B)
    frontier = np.zeros((B, N * N), bool)
    frontier[rows, start] = True
    frontier = frontier.reshape(B, N, N) & passable
    dist[frontier.reshape(B, N * N)] = 0
    free = passable & ~frontier
    k = 0
    while len(rows):
        k += 1
        step = np.zeros_like(frontier)
        step[:, 1:] |= frontier[:, :-1]
        step[:, :-1] |= frontier[:, 1:]
        step[:, :, 1:] |= frontier[:, :, :-1]
        step[:, :, :-1] |= frontier[:, :, 1:]
        step &= free
        free &= ~step
        hit_row, hit_cell = np.nonzero(step.reshape(len(rows), N * N))
        dist[rows[hit_row], hit_cell] = k
        alive = np.zeros(len(rows), bool)
        alive[hit_row] = True
        if not alive.all():
            rows, step, free = rows[alive], step[alive], free[alive]
        frontier = step
    return dist.reshape(B, N, N)


def passable_of(tokens: np.ndarray) -> np.ndarray:
    """Cells a path may use: open, S and G (and cells already marked 'o')."""
    return (tokens == OPEN) | (tokens == START) | (tokens == GOAL) | (tokens == PATH)


def endpoints(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, goal, ok): flat index of the first S and G of each maze (B, S), and whether it has
    exactly one of each."""
    tokens = np.asarray(tokens)
    is_s, is_g = tokens == START, tokens == GOAL
    ok = (is_s.sum(axis=1) == 1) & (is_g.sum(axis=1) == 1)
    return is_s.argmax(axis=1), is_g.argmax(axis=1), ok


def shortest_lengths(inputs: np.ndarray, size: int) -> np.ndarray:
    """(B,) moves of a shortest path from S to G in each maze; -1 without one (or without exactly
    one S and one G)."""
    inputs = np.asarray(inputs).reshape(len(inputs), size * size)
    start, goal, ok = endpoints(inputs)
    dist = bfs(passable_of(inputs).reshape(len(inputs), size, size), start).reshape(len(inputs), size * size)
    return np.where(ok, dist[np.arange(len(inputs)), goal], -1)


def unique_label(maze: np.ndarray, size: int) -> np.ndarray | None:
    """The label of a maze (S,) whose shortest path from S to G is unique; None when it has
    several; ValueError when it has none. Unique iff every distance k = 0..D from S holds exactly
    one cell of the cells on shortest paths (those with d_S + d_G = D)."""
    maze = np.asarray(maze).reshape(size * size)
    start, goal, ok = endpoints(maze[None])
    if not ok[0]:
        raise ValueError("the maze needs exactly one S and one G")
    passable = passable_of(maze).reshape(1, size, size)
    d_start = bfs(passable, start).reshape(-1)
    d_goal = bfs(passable, goal).reshape(-1)
    length = int(d_start[goal[0]])
    if length < 0:
        raise ValueError("the maze has no path from S to G")
    on = (d_start >= 0) & (d_goal >= 0) & (d_start + d_goal == length)
    if on.sum() != length + 1:
        return None
    label = maze.copy()
    label[on & (maze == OPEN)] = PATH
    return label


def path_lengths(labels: np.ndarray) -> np.ndarray:
    """(B,) moves of the path a label marks: its 'o' cells + 1."""
    return (np.asarray(labels) == PATH).sum(axis=1) + 1


# ----------------------------------------------------------------------------------------------
# Checking answers
# ----------------------------------------------------------------------------------------------


def valid_paths(inputs: np.ndarray, answers: np.ndarray, size: int) -> np.ndarray:
    """(B,) bool: the answer marks a shortest path from S to G of its maze (module docstring).
    Vectorised over mazes; path_problem says why one is not."""
    inputs = np.asarray(inputs).astype(np.int64).reshape(len(inputs), size * size)
    answers = np.asarray(answers).astype(np.int64).reshape(len(answers), size * size)
    B = len(inputs)
    if not B:
        return np.zeros(0, bool)
    marked = answers == PATH
    kept = ((answers == inputs) | (marked & (inputs == OPEN))).all(axis=1)
    start, goal, ok = endpoints(inputs)
    rows = np.arange(B)
    shortest = bfs(passable_of(inputs).reshape(B, size, size), start).reshape(B, size * size)[rows, goal]
    on_route = marked | (inputs == START) | (inputs == GOAL)
    along = bfs(on_route.reshape(B, size, size), start).reshape(B, size * size)[rows, goal]
    # D + 1 marked cells (S, G included) in which G is D moves from S: exactly one route, no stray cell
    return ok & kept & (shortest >= 1) & (marked.sum(axis=1) == shortest - 1) & (along == shortest)


def path_problem(maze: np.ndarray, answer: np.ndarray, size: int) -> str:
    """Why an answer is not a shortest path from S to G of the maze ('' when it is one). The
    one-maze reference of valid_paths, with a reason: the first problem found, in this order."""
    maze = np.asarray(maze).astype(np.int64).reshape(-1)
    answer = np.asarray(answer).astype(np.int64).reshape(-1)

    def where(pos: int) -> str:
        return f"row {pos // size + 1}, column {pos % size + 1}"

    start, goal, ok = endpoints(maze[None])
    if not ok[0]:
        return "the maze needs exactly one S and one G"
    shortest = int(shortest_lengths(maze[None], size)[0])
    if shortest < 0:
        return "the maze has no path from S to G"
    marked = answer == PATH
    walls = np.flatnonzero(marked & (maze == WALL))
    if len(walls):
        return f"the path goes through a wall at {where(int(walls[0]))}"
    changed = np.flatnonzero((answer != maze) & ~(marked & (maze == OPEN)))
    if len(changed):
        pos = int(changed[0])
        return (f"the answer changes the maze at {where(pos)} ({SHOW.get(int(maze[pos]), '?')!r} in the maze, "
                f"{SHOW.get(int(answer[pos]), '?')!r} in the answer)")
    if not marked.any() and shortest > 1:
        return "the answer marks no path"
    on_route = (marked | (maze == START) | (maze == GOAL)).reshape(1, size, size)
    reach = bfs(on_route, start).reshape(-1)
    if reach[goal[0]] < 0:
        return "the path has a gap: G cannot be reached from S along the marked cells"
    stray = np.flatnonzero(marked & (reach < 0))
    if len(stray):
        return f"{len(stray)} marked cell(s) not connected to the path, the first at {where(int(stray[0]))}"
    moves = int(reach[goal[0]])
    if moves > shortest:
        return f"not a shortest path: {moves} moves, the shortest has {shortest}"
    extra = int(marked.sum()) - (moves - 1)
    if extra:
        return f"{extra} marked cell(s) off the route from S to G (a branch or loop beside the path)"
    return ""


# ----------------------------------------------------------------------------------------------
# The 8 symmetries of the square: augmentation and canonical keys
# ----------------------------------------------------------------------------------------------


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Transform k (0..7) of an (..., N, N) array, numbered as the official builders'
    dataset/common.py: identity, rotations by 90/180/270 degrees, left-right flip, up-down flip,
    transpose, anti-transpose."""
    if k == 0:
        return grid
    if k in (1, 2, 3):
        return np.rot90(grid, k=k, axes=(-2, -1))
    if k == 4:
        return np.flip(grid, axis=-1)
    if k == 5:
        return np.flip(grid, axis=-2)
    if k == 6:
        return np.swapaxes(grid, -2, -1)
    if k == 7:
        return np.flip(np.rot90(grid, k=1, axes=(-2, -1)), axis=-1)
    raise ValueError(f"dihedral: transform {k} is not one of 0..7")


def dihedral_index(size: int) -> np.ndarray:
    """(8, size*size): output cell j of transform k takes input cell index[k, j]."""
    cells = np.arange(size * size).reshape(size, size)
    return np.stack([dihedral(cells, k).reshape(-1) for k in range(8)])


def canonical_key(mazes: np.ndarray, size: int) -> list[bytes]:
    """One key per maze (B, S), equal for mazes that are images of each other under the 8 symmetries
    or S and G exchanged (the same maze, the same path): the smallest byte string among its 16 images."""
    mazes = np.asarray(mazes, dtype=np.uint8).reshape(len(mazes), size * size)
    swapped = np.where(mazes == START, GOAL, np.where(mazes == GOAL, START, mazes)).astype(np.uint8)
    both = np.concatenate([mazes[:, None], swapped[:, None]], axis=1)   # (B, 2, S)
    images = both[:, :, dihedral_index(size)].reshape(len(mazes), 16, size * size)
    return [min(bytes(row) for row in maze_images) for maze_images in images]


def augment(inputs: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries per example, drawn from rng, applied to the maze and its label
    alike (a shortest path stays a shortest path). inputs, labels: (B, size*size)."""
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    n_cells = size * size
    for name, arr in (("inputs", inputs), ("labels", labels)):
        if arr.ndim != 2 or arr.shape[1] != n_cells:
            raise ValueError(f"augment: {name} must have shape [B, {n_cells}] for {size}x{size}, got {arr.shape}")
    if inputs.shape != labels.shape:
        raise ValueError(f"augment: inputs {inputs.shape} and labels {labels.shape} differ in shape")
    index = dihedral_index(size)[rng.integers(0, 8, size=len(inputs))]  # (B, S)
    return np.take_along_axis(inputs, index, axis=1), np.take_along_axis(labels, index, axis=1)
