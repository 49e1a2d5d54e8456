"""Sudoku datasets from the Hugging Face hub in the sudoku-extreme CSV layout
(`sapientinc/sudoku-extreme`: train.csv / test.csv, columns source,question,answer,rating,
81-character strings, '.' or '0' for a blank), downloaded with huggingface_hub.hf_hub_download.
Every row is checked (lengths, characters, the answer a valid grid that keeps the givens); a bad
row stops the load naming the file and line, or is skipped with a count (skip_bad_rows).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from tqdm import tqdm

import errors
from errors import DataError
from hf_csv import check_bad_rows, csv_path as _hf_csv_path, refetch_error, split_off_validation, subsample
from sudoku_rules import BLANK, unit_index

HF_COLUMNS = ("question", "answer", "rating")  # required header columns ("source" is optional)
_ALL_ONES_9 = 0b1111111110  # OR of 1 << d for d in 1..9


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

    check_bad_rows(name, bad, bool(row_ok.any()), skip_bad_rows, "data.skip_bad_rows", role)
    if not n:
        raise errors.DataError(f"{name}: no {role} rows after the header")
    q_digits = q_chars[row_ok].astype(np.int16) - ord("0")
    inputs = np.where(q_blank[row_ok], BLANK, q_digits + 1).astype(np.uint8)
    labels = (a_chars[row_ok] - ord("0") + 1).astype(np.uint8)
    return inputs, labels, np.asarray(ratings, dtype=np.int32)[row_ok]


def load_hf(
    repo_id: str = "sapientinc/sudoku-extreme",
    splits: tuple[str, str] = ("train", "test"),
    train_subset: int = 0,
    test_subset: int = 0,
    min_rating: int = 0,
    force_download: bool = False,
    seed: int = 0,
    skip_bad_rows: bool = False,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    progress: bool = True,
    val_subset: int = 0,
) -> dict[str, np.ndarray]:
    """Load a Sudoku CSV dataset from the Hugging Face hub (9x9, `source,question,answer,rating`).

    splits names the CSV files used as (train, test): `{splits[0]}.csv` and `{splits[1]}.csv`.
    Rows with rating < min_rating are dropped, then a seeded random subset of train_subset /
    test_subset rows is kept (0 = all; file order is preserved). With val_subset, that many of the
    kept training rows (seeded) become a validation split and leave training. The hub keeps the
    downloaded CSV in its own cache; force_download=True downloads it again (offline: re-reads the
    cached CSV). Returns {split}_inputs / _labels / _ratings, as make_generated_split does.
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
        csv_path = _hf_csv_path(repo_id, split, cache_dir, local_files_only, force_download)
        try:
            inputs, labels, ratings = _read_sudoku_csv(csv_path, skip_bad_rows, progress, role)
        except DataError:  # the file read, but no usable rows: the message says why
            raise
        except ValueError as e:  # names the file and line; a damaged download is fixed by a new one
            raise refetch_error(e, csv_path, "data.force_download") from None
        _keep_rows(out, prefix, inputs, labels, ratings, csv_path, role, min_rating, subset, seed, split,
                   f"{repo_id}/{split}.csv")
    split_off_validation(out, val_subset, seed, ("inputs", "labels", "ratings"), "data.val_subset")
    return out


def _keep_rows(out: dict, prefix: str, inputs: np.ndarray, labels: np.ndarray, ratings: np.ndarray, path,
               role: str, min_rating: int, subset: int, seed: int, split: str, what: str) -> None:
    """Rows with rating >= min_rating, then a seeded subset (0: all), into out[{prefix}_*]."""
    keep = np.flatnonzero(ratings >= min_rating)
    if not len(keep):
        raise errors.DataError(f"{path}: none of its {len(ratings)} usable {role} rows has a rating "
                               f">= {min_rating}; lower data.min_rating")
    keep = subsample(keep, subset, seed, split, f"{what} with rating >= {min_rating}")
    for key, value in dict(inputs=inputs[keep], labels=labels[keep], ratings=ratings[keep]).items():
        out[f"{prefix}_{key}"] = value


def load_csv(train_path: str | Path, test_path: str | Path, train_subset: int = 0, test_subset: int = 0,
             min_rating: int = 0, seed: int = 0, skip_bad_rows: bool = False, progress: bool = True,
             val_subset: int = 0) -> dict[str, np.ndarray]:
    """Local CSV files in the sudoku-extreme layout (source,question,answer,rating), checked row by row
    as load_hf does: a bad row stops the load naming the file and line (or is skipped, skip_bad_rows).
    An empty train_path reads test_path for both splits (evaluation only: train = test). Returns
    {split}_inputs / _labels / _ratings, as load_hf does."""
    out = {}
    files = (("train", train_path or test_path, train_subset, "data.csv_train" if train_path else "data.csv_test"),
             ("test", test_path, test_subset, "data.csv_test"))
    for prefix, path, subset, key in files:
        role = "training" if prefix == "train" else "held-out"
        if not Path(path).is_file():
            raise DataError(f"{key}: {path} is not a file (a CSV with columns source,question,answer,rating)")
        try:
            inputs, labels, ratings = _read_sudoku_csv(path, skip_bad_rows, progress, role)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not a UTF-8 text file (byte {e.start}); expected a CSV") from None
        except csv.Error as e:
            raise DataError(f"{path}: not a readable CSV ({e})") from None
        _keep_rows(out, prefix, inputs, labels, ratings, path, role, min_rating, subset, seed, prefix, str(path))
    split_off_validation(out, val_subset, seed, ("inputs", "labels", "ratings"), "data.val_subset")
    return out


