"""Maze datasets from the Hugging Face hub in the Maze-Hard CSV layout
(`sapientinc/maze-30x30-hard-1k`: train.csv / test.csv, columns source,question,answer,rating;
question and answer are N*N-character strings, row-major, over '#' wall, ' ' open, 'S' start,
'G' goal, and 'o' for the path in the answer), downloaded with huggingface_hub.hf_hub_download.
Every row is checked: lengths, characters, one S and one G, the answer the question with open
cells marked 'o', and those marking a shortest path from S to G (maze_rules.path_problem). A bad
row stops the load naming the file and line, or is skipped with a count (skip_bad_rows).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import errors
from errors import DataError
from hf_csv import check_bad_rows, csv_path, csv_rows, refetch_error, split_off_validation, subsample
from maze_rules import GOAL, START, path_problem, size_of, valid_paths

HF_COLUMNS = ("question", "answer", "rating")  # required header columns ("source" is optional)
_TOKENS = np.zeros(256, np.uint8)  # character -> token (0: not a maze character)
_TOKENS[[ord(c) for c in "# SGo"]] = np.arange(1, 6)


def _row_problem(q: str, a: str, r: str, cells: int) -> str:
    """What is wrong with a row's strings ('' if nothing), before the maze itself is checked."""
    for what, s, allowed in (("question", q, "# SG"), ("answer", a, "# SGo")):
        if len(s) != cells:
            return f"{what} has {len(s)} characters, expected {cells}"
        bad = next((k for k, ch in enumerate(s) if ch not in allowed), -1)
        if bad >= 0:
            return f"bad character {s[bad]!r} at position {bad + 1} of the {what} (allowed: {allowed!r})"
    try:
        int(r)
    except ValueError:
        return f"rating {r!r} is not an integer"
    return ""


def read_maze_csv(path: str | Path, skip_bad_rows: bool, progress: bool, role: str = "data"
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a question,answer,rating CSV of mazes into (inputs, labels, ratings); bad rows raise
    DataError naming the file and line, or are skipped (skip_bad_rows). The size N comes from the
    first row whose question has N*N characters (N in 4..30); a file without a usable row raises
    DataError naming it and the counts (role, e.g. "training", says which split it was read for)."""
    name = str(path)
    bad: list[tuple[int, str]] = []  # (line number, reason)
    questions, answers, ratings, lines = [], [], [], []
    cells = 0
    for line, fields in csv_rows(path, HF_COLUMNS, progress):
        if fields is None:
            bad.append((line, f"too few fields, expected columns {', '.join(HF_COLUMNS)}"))
            continue
        q, a, r = fields
        if not cells:
            try:
                cells = size_of(len(q)) ** 2
            except ValueError as e:
                bad.append((line, f"question: {e}"))
                continue
        problem = _row_problem(q, a, r.strip(), cells)
        if problem:
            bad.append((line, problem))
            continue
        questions.append(q)
        answers.append(a)
        ratings.append(int(r))
        lines.append(line)
    n = len(questions)
    size = int(round(cells ** 0.5))
    inputs = _TOKENS[np.frombuffer("".join(questions).encode("ascii"), np.uint8)].reshape(n, cells)
    labels = _TOKENS[np.frombuffer("".join(answers).encode("ascii"), np.uint8)].reshape(n, cells)
    row_ok = valid_paths(inputs, labels, size) if n else np.zeros(0, bool)
    for k in np.flatnonzero(~row_ok):
        for token, what in ((START, "start 'S'"), (GOAL, "goal 'G'")):
            count = int((inputs[k] == token).sum())
            if count != 1:
                reason = f"the question has {count} {what} cells, expected 1"
                break
        else:
            reason = f"the answer is not a shortest path from S to G: {path_problem(inputs[k], labels[k], size)}"
        bad.append((lines[k], reason))

    check_bad_rows(name, bad, bool(row_ok.any()), skip_bad_rows, "data.maze.skip_bad_rows", role)
    if not n:
        raise DataError(f"{name}: no {role} rows after the header")
    return inputs[row_ok], labels[row_ok], np.asarray(ratings, dtype=np.int32)[row_ok]


def load_hf(
    repo_id: str = "sapientinc/maze-30x30-hard-1k",
    train_subset: int = 0,
    test_subset: int = 0,
    val_subset: int = 0,
    force_download: bool = False,
    seed: int = 0,
    skip_bad_rows: bool = False,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Load train.csv and test.csv of a maze dataset repo on the Hugging Face hub.

    A seeded random subset of train_subset / test_subset rows is kept (0 = all; file order is
    preserved); with val_subset, that many of the kept training rows (seeded) become a validation
    split and leave training. The hub keeps the downloaded CSV in its own cache; force_download
    downloads it again (offline: re-reads the cached CSV). Returns {split}_inputs / _labels /
    _ratings, as maze_gen.make_generated_split does (plus ratings).
    """
    for name, value in (("train_subset", train_subset), ("test_subset", test_subset), ("val_subset", val_subset)):
        if value < 0:
            raise ValueError(f"data.maze.{name}: {value} must be >= 0")
    out: dict[str, np.ndarray] = {}
    for prefix, subset in (("train", train_subset), ("test", test_subset)):
        role = "training" if prefix == "train" else "held-out"
        path = csv_path(repo_id, prefix, cache_dir, local_files_only, force_download)
        try:
            inputs, labels, ratings = read_maze_csv(path, skip_bad_rows, progress, role)
        except DataError:  # the file read, but no usable rows: the message says why
            raise
        except ValueError as e:  # names the file and line; a damaged download is fixed by a new one
            raise refetch_error(e, path, "data.maze.force_download") from None
        if prefix == "test" and inputs.shape[1] != out["train_inputs"].shape[1]:
            raise errors.DataError(f"{path}: mazes of {inputs.shape[1]} cells, but train.csv has mazes of "
                                   f"{out['train_inputs'].shape[1]} cells")
        keep = subsample(np.arange(len(inputs)), subset, seed, prefix, f"{repo_id}/{prefix}.csv")
        out.update({f"{prefix}_inputs": inputs[keep], f"{prefix}_labels": labels[keep],
                    f"{prefix}_ratings": ratings[keep]})
    split_off_validation(out, val_subset, seed, ("inputs", "labels", "ratings"), "data.maze.val_subset")
    return out
