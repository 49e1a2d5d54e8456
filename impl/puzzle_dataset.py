"""Puzzle datasets in the official TRM layout: metadata, writer, checked reader, and sampling.

A dataset is a folder that the official builders (dataset/build_*_dataset.py) also write:

    <dir>/train/dataset.json          metadata (below)
    <dir>/train/all__inputs.npy       (examples, seq_len) input tokens
    <dir>/train/all__labels.npy       (examples, seq_len) target tokens (ignore_label_id: no target)
    <dir>/train/all__puzzle_identifiers.npy   (puzzles,)  which puzzle embedding each puzzle uses
    <dir>/train/all__puzzle_indices.npy       (puzzles + 1,) start of each puzzle's examples
    <dir>/train/all__group_indices.npy        (groups + 1,)  start of each group's puzzles
    <dir>/test/...                    the same
    <dir>/identifiers.json            optional: a name per puzzle identifier

Three levels: an *example* is one (input, label) pair; a *puzzle* is a run of examples that share
a puzzle identifier (an ARC task's demonstration pairs, or one Sudoku); a *group* is a run of
puzzles that are versions of one original (a task and its augmentations). "all" is the set name;
a dataset may hold several sets (`sets` in the metadata), read here one after the other.

Training samples as the official PuzzleDataset does: each epoch shuffles the groups, takes one
random puzzle of each group and its examples in random order (without replacement). Test mode
reads every example once, in order. The sandbox adds two optional things the official reader
ignores: a "puzzle" key in dataset.json naming the module that understands the puzzle (its
augmentation, validity check and printing), and extra per-example arrays such as
all__ratings.npy.
"""
from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from errors import DataError

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
IGNORE_LABEL = -100  # what ignore_label_id becomes in training batches: trm.IGNORE_LABEL (this module has no torch)


@dataclass
class Metadata:
    """dataset.json: the official fields, plus any others (kept in extra, written back as they were)."""
    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str]
    extra: dict = field(default_factory=dict)  # e.g. {"puzzle": "sudoku"}

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in OFFICIAL_KEYS}
        return {**out, **self.extra}

    @property
    def puzzle(self) -> str:
        """The module that understands these puzzles ("" for a dataset without one)."""
        return str(self.extra.get("puzzle", ""))


OFFICIAL_KEYS = ("pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
                 "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "total_puzzles", "sets")


def metadata_from_json(data: object, path: Path) -> Metadata:
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of dataset metadata")
    missing = [k for k in OFFICIAL_KEYS if k not in data and k != "total_puzzles"]
    if missing:
        raise DataError(f"{path}: missing metadata field(s) {', '.join(missing)}")
    for key in OFFICIAL_KEYS:
        value = data.get(key)
        ok = {"ignore_label_id": value is None or _is_int(value), "mean_puzzle_examples": _is_number(value),
              "sets": isinstance(value, list) and bool(value) and all(isinstance(s, str) for s in value),
              "total_puzzles": value is None or _is_int(value)}.get(key, _is_int(value))
        if not ok:
            raise DataError(f"{path}: {key}: {value!r} is not a valid value")
    meta = Metadata(**{k: data.get(k) for k in OFFICIAL_KEYS},
                    extra={k: v for k, v in data.items() if k not in OFFICIAL_KEYS})
    if meta.total_puzzles is None:  # older official builds
        meta.total_puzzles = -1
    for key in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
        if getattr(meta, key) < 1:
            raise DataError(f"{path}: {key}: {getattr(meta, key)} must be >= 1")
    return meta


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class PuzzleSplit:
    """One split (train or test) of a dataset, all sets concatenated; inputs/labels may be memory-mapped."""
    path: Path
    meta: Metadata
    inputs: np.ndarray              # (examples, seq_len)
    labels: np.ndarray              # (examples, seq_len)
    puzzle_identifiers: np.ndarray  # (puzzles,)
    puzzle_indices: np.ndarray      # (puzzles + 1,)
    group_indices: np.ndarray       # (groups + 1,)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # other per-example arrays (ratings)

    @property
    def n_examples(self) -> int:
        return len(self.inputs)

    @property
    def n_puzzles(self) -> int:
        return len(self.puzzle_indices) - 1

    @property
    def n_groups(self) -> int:
        return len(self.group_indices) - 1

    def example_puzzles(self) -> np.ndarray:
        """The puzzle of every example, (examples,)."""
        return np.repeat(np.arange(self.n_puzzles), np.diff(self.puzzle_indices))

    def example_identifiers(self) -> np.ndarray:
        """The puzzle identifier of every example (its puzzle embedding), (examples,)."""
        return np.asarray(self.puzzle_identifiers)[self.example_puzzles()]

    def labels_for_training(self, idx: np.ndarray) -> np.ndarray:
        """labels[idx] as int64 with ignore_label_id replaced by IGNORE_LABEL."""
        return training_labels(self.labels[idx], self.meta)


def training_labels(labels: np.ndarray, meta: Metadata) -> np.ndarray:
    """labels as int64 with the dataset's ignore_label_id replaced by IGNORE_LABEL (no target)."""
    labels = np.array(labels, dtype=np.int64)
    if meta.ignore_label_id is not None:
        labels[labels == meta.ignore_label_id] = IGNORE_LABEL
    return labels


# ----------------------------------------------------------------------------------------------
# Reading, with checks


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: missing (a dataset split needs {', '.join(f'<set>__{f}.npy' for f in FIELDS)})")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({e})") from None


def _check_indices(arr: np.ndarray, path: Path, end: int, what: str, strict: bool) -> None:
    """arr: 1-D, arr[0] == 0, increasing (strictly: every puzzle/group non-empty), arr[-1] == end."""
    if arr.ndim != 1 or len(arr) < 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{path}: expected a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}")
    if arr[0] != 0:
        raise DataError(f"{path}: index 0 is {int(arr[0])}, must be 0")
    steps = np.diff(arr)
    bad = np.flatnonzero(steps <= 0) if strict else np.flatnonzero(steps < 0)
    if len(bad):
        i = int(bad[0]) + 1
        raise DataError(f"{path}: index {i} is {int(arr[i])}, not above index {i - 1} ({int(arr[i - 1])}): "
                        f"must be increasing (every {what} non-empty)")
    if arr[-1] != end:
        raise DataError(f"{path}: last index is {int(arr[-1])}, must be {end} (the number of {what}s' items)")


def _check_tokens(arr: np.ndarray, path: Path, meta: Metadata, labels: bool) -> None:
    if arr.ndim != 2 or arr.shape[1] != meta.seq_len:
        raise DataError(f"{path}: shape {arr.shape}, expected (examples, seq_len={meta.seq_len})")
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{path}: dtype {arr.dtype}, expected integer tokens")
    for start in range(0, len(arr), 1 << 16):  # chunks: a memory-mapped file is read once, in pieces
        chunk = np.asarray(arr[start:start + (1 << 16)])
        bad = (chunk < 0) | (chunk >= meta.vocab_size)
        if labels and meta.ignore_label_id is not None:
            bad &= chunk != meta.ignore_label_id
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"{path}: token {int(chunk[row, col])} at example {start + row}, position {col} is "
                            f"outside 0..{meta.vocab_size - 1} (vocab_size {meta.vocab_size})")


def read_split(root: str | os.PathLike, split: str, mmap: bool = True) -> PuzzleSplit:
    """Load <root>/<split>/ and check it; a broken dataset raises DataError naming the file and index."""
    folder = Path(root) / split
    meta_path = folder / "dataset.json"
    if not meta_path.exists():
        raise DataError(f"{meta_path}: missing; a dataset folder holds train/ and test/, each with dataset.json "
                        f"and all__*.npy (see impl/puzzle_dataset.py)")
    try:
        meta = metadata_from_json(json.loads(meta_path.read_text()), meta_path)
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{meta_path}: not readable JSON ({e})") from None
    parts: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
    extras: dict[str, list[np.ndarray]] = {}
    n_examples = n_puzzles = 0
    for set_name in meta.sets:
        arrays = {f: _load_array(folder / f"{set_name}__{f}.npy", mmap and f in ("inputs", "labels")) for f in FIELDS}
        name = {f: folder / f"{set_name}__{f}.npy" for f in FIELDS}
        _check_tokens(arrays["inputs"], name["inputs"], meta, labels=False)
        _check_tokens(arrays["labels"], name["labels"], meta, labels=True)
        if arrays["labels"].shape != arrays["inputs"].shape:
            raise DataError(f"{name['labels']}: shape {arrays['labels'].shape} differs from the inputs' "
                            f"{arrays['inputs'].shape}")
        _check_indices(arrays["puzzle_indices"], name["puzzle_indices"], len(arrays["inputs"]), "puzzle", strict=True)
        puzzles = len(arrays["puzzle_indices"]) - 1
        _check_indices(arrays["group_indices"], name["group_indices"], puzzles, "group", strict=True)
        ids = arrays["puzzle_identifiers"]
        if ids.shape != (puzzles,):
            raise DataError(f"{name['puzzle_identifiers']}: shape {ids.shape}, expected ({puzzles},): one per puzzle")
        bad = np.flatnonzero((ids < 0) | (ids >= meta.num_puzzle_identifiers))
        if len(bad):
            raise DataError(f"{name['puzzle_identifiers']}: identifier {int(ids[bad[0]])} of puzzle {int(bad[0])} is "
                            f"outside 0..{meta.num_puzzle_identifiers - 1} (num_puzzle_identifiers)")
        for f in FIELDS:
            offset = {"puzzle_indices": n_examples, "group_indices": n_puzzles}.get(f, 0)
            arr = arrays[f] if not offset else np.asarray(arrays[f]) + offset
            parts[f].append(arr if not parts[f] or f not in ("puzzle_indices", "group_indices") else arr[1:])
        for extra in sorted(folder.glob(f"{set_name}__*.npy")):
            key = extra.name[len(set_name) + 2:-4]
            if key not in FIELDS:
                arr = _load_array(extra, mmap=False)
                if len(arr) != len(arrays["inputs"]):
                    raise DataError(f"{extra}: {len(arr)} rows, expected one per example ({len(arrays['inputs'])})")
                extras.setdefault(key, []).append(arr)
        n_examples += len(arrays["inputs"])
        n_puzzles += puzzles
    joined = {f: v[0] if len(v) == 1 else np.concatenate(v) for f, v in parts.items()}
    return PuzzleSplit(path=folder, meta=meta, extras={k: np.concatenate(v) for k, v in extras.items()
                                                       if len(v) == len(meta.sets)}, **joined)


def read_dataset(root: str | os.PathLike, mmap: bool = True) -> tuple[PuzzleSplit, PuzzleSplit]:
    """(train, test) of a dataset folder; both must agree on seq_len, vocab_size and ids."""
    train, test = read_split(root, "train", mmap), read_split(root, "test", mmap)
    for key in ("seq_len", "vocab_size", "pad_id", "ignore_label_id"):
        if getattr(train.meta, key) != getattr(test.meta, key):
            raise DataError(f"{root}: train and test disagree on {key} ({getattr(train.meta, key)} vs "
                            f"{getattr(test.meta, key)})")
    return train, test


# ----------------------------------------------------------------------------------------------
# Writing


def split_arrays(inputs: np.ndarray, labels: np.ndarray, puzzle_sizes: np.ndarray | None = None,
                 group_sizes: np.ndarray | None = None, puzzle_identifiers: np.ndarray | None = None) -> dict:
    """The five arrays from examples and the number of examples per puzzle and puzzles per group
    (default: one example per puzzle, one puzzle per group, identifier 0)."""
    n = len(inputs)
    puzzle_sizes = np.ones(n, np.int64) if puzzle_sizes is None else np.asarray(puzzle_sizes)
    group_sizes = np.ones(len(puzzle_sizes), np.int64) if group_sizes is None else np.asarray(group_sizes)
    ids = np.zeros(len(puzzle_sizes), np.int32) if puzzle_identifiers is None else np.asarray(puzzle_identifiers)
    return {"inputs": inputs, "labels": labels, "puzzle_identifiers": ids.astype(np.int32),
            "puzzle_indices": np.concatenate([[0], np.cumsum(puzzle_sizes)]).astype(np.int32),
            "group_indices": np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32)}


def make_metadata(arrays: dict, vocab_size: int, num_puzzle_identifiers: int = 1, pad_id: int = 0,
                  ignore_label_id: int | None = 0, **extra) -> Metadata:
    puzzles = len(arrays["puzzle_indices"]) - 1
    return Metadata(pad_id=pad_id, ignore_label_id=ignore_label_id, blank_identifier_id=0, vocab_size=vocab_size,
                    seq_len=int(arrays["inputs"].shape[1]), num_puzzle_identifiers=num_puzzle_identifiers,
                    total_groups=len(arrays["group_indices"]) - 1,
                    mean_puzzle_examples=float(len(arrays["inputs"]) / max(1, puzzles)),
                    total_puzzles=puzzles, sets=["all"], extra=extra)


def write_dataset(root: str | os.PathLike, splits: dict[str, tuple[dict, Metadata]],
                  identifiers: list[str] | None = None) -> Path:
    """Write {"train": (arrays, meta), "test": ...} to root, atomically: everything goes to a
    temporary folder beside root, which is then renamed to root. arrays is {field: array} for the
    one set "all", or {set name: {field: array}} for the sets meta.sets names. An existing root is never
    overwritten: a damaged one must be discarded first (discard). A write that fails (a full disk,
    a read-only folder) removes what it wrote and raises DataError naming the folder."""
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root}: a dataset is there already; it is never overwritten")
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=root.name + ".", suffix=".tmp"))
    except OSError as e:
        raise cannot_write(root, e) from None
    try:
        _write_files(tmp, splits, identifiers)
        try:
            os.rename(tmp, root)  # fails if root appeared meanwhile (not empty): never replaces a dataset
        except OSError as e:
            raise FileExistsError(f"{root}: a dataset appeared there while this one was written ({e.strerror})") from None
    except BaseException as e:
        for path in sorted(tmp.rglob("*"), reverse=True):  # only what this call wrote
            path.rmdir() if path.is_dir() else path.unlink()
        tmp.rmdir()
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise cannot_write(root, e) from None
        raise
    return root


def _write_files(tmp: Path, splits: dict[str, tuple[dict, Metadata]], identifiers: list[str] | None) -> None:
    for split, (arrays, meta) in splits.items():
        folder = tmp / split
        folder.mkdir()
        (folder / "dataset.json").write_text(json.dumps(meta.to_json()) + "\n")
        sets = arrays if meta.sets != ["all"] else {"all": arrays}
        for set_name, fields in sets.items():
            for key, arr in fields.items():
                np.save(folder / f"{set_name}__{key}.npy", np.ascontiguousarray(arr))
    if identifiers is not None:
        (tmp / "identifiers.json").write_text(json.dumps(identifiers) + "\n")


def cannot_write(root: Path, e: OSError) -> DataError:
    """The one-line error of a dataset folder that cannot be written or removed, with what to do."""
    locked = e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)  # numpy reports a full disk without an errno
    todo = ("set data.data_dir to a folder you can write" if locked else
            "free space on that disk, or set data.data_dir to a folder on another disk")
    return DataError(f"{root}: cannot write the dataset there ({e.strerror or e}): {todo}; "
                     f"no partial dataset was left behind")


def discard(root: Path) -> str:
    """Remove a dataset folder that this program built, deleting only dataset files (dataset.json,
    <set>__<field>.npy, identifiers.json, temporary files of them) and then the emptied folders.
    If anything else is inside, nothing is deleted: the folder is renamed <root>.old-<time>.
    Returns what was done, for the message."""
    root = Path(root)
    files = [p for p in root.rglob("*") if not p.is_dir()]
    ours = [p for p in files if p.name in ("dataset.json", "identifiers.json") or
            (p.suffix == ".npy" and "__" in p.name)]
    folders = [p for p in root.rglob("*") if p.is_dir()]
    if len(ours) != len(files) or any(p.parent.parent not in (root, root.parent) for p in folders):
        target = root.with_name(f"{root.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(root, target)
        return f"it holds other files too, so it was moved to {target}"
    for path in ours:
        path.unlink()
    for folder in sorted(folders, reverse=True):
        folder.rmdir()
    root.rmdir()
    return "the old one was removed"


def find_or_build(root: str | os.PathLike, build: Callable[[Path], str], rebuild: str = "") -> tuple[Path, str]:
    """The dataset folder at root and its one-line description: found and checked, or made by
    build(root), which writes it (write_dataset) and returns the description. A damaged folder, or
    any folder when `rebuild` gives a reason (e.g. "data.force_download is set"), is discarded
    first, saying so on stderr. If another process writes the same folder meanwhile, theirs is
    read, checked and used."""
    root = Path(root)
    if root.exists():
        problem = rebuild
        if not problem:
            try:
                return root, _description(root)
            except DataError as e:
                problem = f"it is damaged ({e})"
        try:
            done = discard(root)
        except OSError as e:
            raise DataError(f"{root}: {problem}, but it cannot be removed ({e.strerror or e}): remove it, or set "
                            f"data.data_dir to a folder you can write") from None
        print(f"{root}: building it again, {problem}: {done}", file=sys.stderr)
    try:
        return root, build(root)
    except FileExistsError:
        return root, _description(root)


def _description(root: Path) -> str:
    train, _ = read_dataset(root)
    return str(train.meta.extra.get("description", root.name))


# ----------------------------------------------------------------------------------------------
# Sampling


class TrainSampler:
    """Training examples in the official order, as a resumable stream: each epoch a seeded
    permutation of the groups; from each group one random puzzle; its examples in random order.
    next(k) hands out the next k example indices (continuing into the next epoch as needed);
    state_dict() holds everything, so a resumed run draws exactly what an uninterrupted one would."""

    def __init__(self, split: PuzzleSplit, seed: int) -> None:
        self.puzzle_indices = np.asarray(split.puzzle_indices, dtype=np.int64)
        self.group_indices = np.asarray(split.group_indices, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.order = self.rng.permutation(len(self.group_indices) - 1)
        self.pos = 0                               # next group in order
        self.pending = np.zeros(0, dtype=np.int64)  # examples of the current puzzle not yet handed out

    def next(self, k: int) -> np.ndarray:
        out, taken = [], 0
        while taken < k:
            if not len(self.pending):
                if self.pos == len(self.order):
                    self.epoch += 1
                    self.order = self.rng.permutation(len(self.order))
                    self.pos = 0
                group = self.order[self.pos]
                self.pos += 1
                puzzle = self.rng.integers(self.group_indices[group], self.group_indices[group + 1])
                start, end = self.puzzle_indices[puzzle], self.puzzle_indices[puzzle + 1]
                self.pending = start + self.rng.permutation(end - start)
            take = self.pending[:k - taken]
            self.pending = self.pending[len(take):]
            out.append(take)
            taken += len(take)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def state_dict(self) -> dict:
        import torch  # checkpoints hold tensors (weights_only loading); this module stays numpy-only otherwise
        return {"rng": self.rng.bit_generator.state, "epoch": self.epoch, "pos": self.pos,
                "order": torch.from_numpy(self.order.astype(np.int64)),
                "pending": torch.from_numpy(self.pending.astype(np.int64))}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.pos = state["epoch"], state["pos"]
        self.order, self.pending = state["order"].numpy(), state["pending"].numpy()
