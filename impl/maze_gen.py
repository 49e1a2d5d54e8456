"""The maze generator: random N x N mazes with a start S, a goal G and exactly one shortest path
between them, and train/val/test splits that share no maze up to symmetry. numpy, many mazes at
a time; the work moves to worker processes (workers.py) once it is long enough to pay for them.

A candidate maze makes every cell a wall with probability wall_density (the mazes of Maze-Hard
are random walls too). S is the open cell farthest from a random open cell (ties at random: one
end of a long path, as in the double-sweep estimate of a maze's diameter) and G a random open
cell at least min_path_len moves from S; S and G are then exchanged with probability 1/2. A
candidate without such a G is dropped.

Ties between shortest paths are then removed. Walking from S along a shortest path, chosen step
by step at random, every other cell that is one step further along some shortest path is made a
wall. The walked path is untouched, so the shortest length stays, and no other shortest path is
left: it would have to leave the walked one at some step, into a cell that is now a wall. The
label marks the walked path. (tests/test_data_maze.py counts shortest paths independently.)

Work comes in chunks of GEN_CHUNK candidates, chunk c seeded by SeedSequence([seed, c]), so the
output is byte-identical for any number of worker processes.
"""
from __future__ import annotations

import contextlib
import itertools
import os
from functools import lru_cache

import numpy as np
from tqdm import tqdm

import errors
import workers as workers_mod
from maze_rules import GOAL, MAX_SIZE, MIN_SIZE, OPEN, PATH, START, WALL, bfs, canonical_key

# Candidates per chunk. Changing it changes every generated data set.
GEN_CHUNK = 256

# Seconds of generation in this process before worker processes are started (small sets start none).
POOL_AFTER_S = 1.0

# A search that has found no new maze in this many chunks in a row gives up: the request is out of
# reach (or every distinct maze of a small size has been found).
NO_PROGRESS_CHUNKS = 40

SPLIT_ORDER = ("test", "val", "train")  # the stream of new mazes fills the splits in this order


def check_args(size: int, wall_density: float, min_path_len: int) -> None:
    """ValueError naming the data.maze.* key of an argument out of range."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"data.maze.size: {size} is not in {MIN_SIZE}..{MAX_SIZE}")
    if not 0.0 <= wall_density < 1.0:
        raise ValueError(f"data.maze.wall_density: {wall_density} must be in [0, 1)")
    if not 1 <= min_path_len <= size * size - 1:
        raise ValueError(f"data.maze.min_path_len: {min_path_len} must be in 1..{size * size - 1} for {size}x{size} "
                         f"(a path visits each of the {size * size} cells at most once)")


@lru_cache(maxsize=None)
def _neighbours(size: int) -> tuple[tuple[int, ...], ...]:
    """The 4-adjacent cells of each cell (flat indices)."""
    out = []
    for cell in range(size * size):
        r, c = divmod(cell, size)
        out.append(tuple(rr * size + cc for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                         if 0 <= rr < size and 0 <= cc < size))
    return tuple(out)


def _random_choice(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random True cell per row of mask (B, S) (rows without one: index of a False cell)."""
    return np.where(mask, rng.random(mask.shape), -1.0).argmax(axis=1)


def _unique_path(walls: np.ndarray, d_start: np.ndarray, d_goal: np.ndarray, start: int, length: int,
                 size: int, rng: np.random.Generator) -> list[int]:
    """Walk one shortest path from start (random at each branch), walling the other branches
    (walls: flat bool, changed in place). d_start/d_goal: flat distances from S and G."""
    on_some = ((d_start >= 0) & (d_goal >= 0) & (d_start + d_goal == length)).tolist()
    d_start = d_start.tolist()
    neighbours = _neighbours(size)
    path, cell = [start], start
    for k in range(1, length + 1):
        ahead = [c for c in neighbours[cell] if on_some[c] and d_start[c] == k]
        cell = ahead[int(rng.integers(len(ahead)))] if len(ahead) > 1 else ahead[0]
        for other in ahead:
            if other != cell:
                walls[other] = True
        path.append(cell)
    return path


def _generate_chunk(task: tuple) -> tuple[np.ndarray, np.ndarray, list[bytes], int]:
    """One chunk: (inputs, labels, canonical keys, longest shortest path seen) of the candidates
    that made a maze. task = (size, candidates, chunk number, seed, wall_density, min_path_len)."""
    size, n, chunk, seed, wall_density, min_path_len = task
    rng = np.random.default_rng(np.random.SeedSequence([seed, chunk]))
    cells = size * size
    walls = rng.random((n, cells)) < wall_density
    anywhere = _random_choice(~walls, rng)
    d_any = bfs(~walls.reshape(n, size, size), anywhere).reshape(n, cells)
    reach = d_any.max(axis=1)
    keep = np.flatnonzero(2 * reach >= min_path_len)  # every shortest path is at most 2 x reach long
    start = (d_any[keep] + 0.5 * rng.random((len(keep), cells))).argmax(axis=1)  # farthest, ties at random
    d_start = bfs(~walls[keep].reshape(-1, size, size), start).reshape(len(keep), cells)
    longest = int(max(reach.max(initial=0), d_start.max(initial=0)))
    far = d_start >= min_path_len
    ok = far.any(axis=1)
    keep, start, d_start = keep[ok], start[ok], d_start[ok]
    goal = _random_choice(far[ok], rng)
    d_goal = bfs(~walls[keep].reshape(-1, size, size), goal).reshape(len(keep), cells)
    length = d_start[np.arange(len(keep)), goal]
    inputs = np.empty((len(keep), cells), np.uint8)
    labels = np.empty((len(keep), cells), np.uint8)
    swap = rng.random(len(keep)) < 0.5
    for j, maze in enumerate(keep):
        maze_walls = walls[maze].copy()
        path = _unique_path(maze_walls, d_start[j], d_goal[j], int(start[j]), int(length[j]), size, rng)
        grid = np.where(maze_walls, WALL, OPEN).astype(np.uint8)
        grid[path[0]], grid[path[-1]] = (GOAL, START) if swap[j] else (START, GOAL)
        inputs[j] = grid
        grid = grid.copy()
        grid[path[1:-1]] = PATH
        labels[j] = grid
    return inputs, labels, canonical_key(inputs, size), longest


def _resolve_workers(workers: int) -> int:
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = all cores), got {workers}")
    return workers or os.cpu_count() or 1


def _chunks(size: int, seed: int, wall_density: float, min_path_len: int, workers: int):
    """The endless stream of chunks, in order (close it to stop the workers)."""
    tasks = ((size, GEN_CHUNK, c, seed, wall_density, min_path_len) for c in itertools.count())
    return workers_mod.in_order(_generate_chunk, tasks, workers, POOL_AFTER_S)


def _out_of_reach(found: str, size: int, wall_density: float, min_path_len: int, candidates: int,
                  longest: int) -> errors.DataError:
    return errors.DataError(
        f"found {found} distinct {size}x{size} mazes with a shortest path of at least {min_path_len} moves after "
        f"{candidates:,} candidates at wall density {wall_density:g} (the longest shortest path seen: {longest} "
        f"moves); lower data.maze.min_path_len, change data.maze.wall_density or ask for fewer mazes")


def generate_mazes(size: int, n: int, wall_density: float = 0.4, min_path_len: int = 1, seed: int = 0,
                   workers: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """The first n mazes of the generator's stream (duplicates possible at small sizes; the splits
    of make_generated_split drop them). Returns dict(inputs, labels) as uint8 (n, size*size)."""
    check_args(size, wall_density, min_path_len)
    workers = _resolve_workers(workers)
    parts, got, dry, candidates, longest = [], 0, 0, 0, 0
    with tqdm(total=n, disable=not progress, desc=f"maze {size}x{size}", unit="maze") as bar, \
            contextlib.closing(_chunks(size, seed, wall_density, min_path_len, workers)) as chunks:
        for inputs, labels, _keys, chunk_longest in chunks:
            if got >= n:
                break
            candidates += GEN_CHUNK
            longest = max(longest, chunk_longest)
            dry = 0 if len(inputs) else dry + 1
            if dry >= NO_PROGRESS_CHUNKS:
                raise _out_of_reach(f"{got} of {n}", size, wall_density, min_path_len, candidates, longest)
            take = min(len(inputs), n - got)
            parts.append((inputs[:take], labels[:take]))
            got += take
            bar.update(take)
            if got >= n:
                break
    cells = size * size
    return {"inputs": np.concatenate([p[0] for p in parts]) if parts else np.empty((0, cells), np.uint8),
            "labels": np.concatenate([p[1] for p in parts]) if parts else np.empty((0, cells), np.uint8)}


def make_generated_split(size: int, n_train: int, n_test: int, wall_density: float, min_path_len: int,
                         seed: int, n_val: int = 0, workers: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """Splits (test, val when n_val, train) of distinct mazes, none of which is an image of a maze of
    another split (or of its own) under the 8 symmetries or the exchange of S and G
    (maze_rules.canonical_key). New mazes of the stream fill the splits in SPLIT_ORDER, so the test
    set depends only on n_test and the generator's parameters. Returns {split}_inputs/_labels."""
    check_args(size, wall_density, min_path_len)
    if n_train < 1 or n_test < 1 or n_val < 0:
        raise ValueError(f"n_train and n_test must be >= 1 and n_val >= 0, got {n_train}, {n_test} and {n_val}")
    workers = _resolve_workers(workers)
    want = {name: n for name, n in (("test", n_test), ("val", n_val), ("train", n_train)) if n}
    got: dict[str, list] = {name: [] for name in want}
    seen: set[bytes] = set()
    total, dry, candidates, longest = sum(want.values()), 0, 0, 0
    order = iter(want)
    split = next(order)
    with tqdm(total=total, disable=not progress, desc=f"maze {size}x{size} split", unit="maze") as bar, \
            contextlib.closing(_chunks(size, seed, wall_density, min_path_len, workers)) as chunks:
        for inputs, labels, keys, chunk_longest in chunks:
            candidates += GEN_CHUNK
            longest = max(longest, chunk_longest)
            new = 0
            for maze, label, key in zip(inputs, labels, keys):
                if key in seen:
                    continue
                seen.add(key)
                got[split].append((maze, label))
                new += 1
                if len(got[split]) == want[split]:
                    split = next(order, "")
                    if not split:
                        break
            bar.update(new)
            if not split:
                break
            dry = 0 if new else dry + 1
            if dry >= NO_PROGRESS_CHUNKS:
                found = ", ".join(f"{len(got[s])} of {want[s]} {s}" for s in want)
                raise _out_of_reach(found, size, wall_density, min_path_len, candidates, longest)
    data = {}
    for name, rows in got.items():
        data[f"{name}_inputs"] = np.stack([r[0] for r in rows])
        data[f"{name}_labels"] = np.stack([r[1] for r in rows])
    return data
