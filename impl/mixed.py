"""Several datasets in one run (data.sources): one dataset folder, one set per source.

    "data": {"sources": [{"puzzle": "sudoku", "grid_size": 6},
                         {"puzzle": "maze", "maze": {"size": 6}}]}

Each entry of data.sources is a data section of its own, merged over the run's data section (so
data_dir, n_val, augment, ... are shared unless an entry sets them; the run's data section has the
data.<name> defaults of every puzzle type an entry names, impl/puzzles.py). Each source is built (or
found) as a dataset of its own, then the sources are written together into
<data_dir>/mixed-<hash>/, in the official layout with one set per source (`sets` in dataset.json,
named after the puzzle types).

The official code trains on several folders (data_paths) only when they agree on seq_len,
vocab_size, pad_id, ignore_label_id and their sets (it asserts), and then simply adds their
puzzle identifier counts. Here the sources may differ, and are reconciled so:
- length: every example is padded at the end to the longest seq_len (PAD in the input, no target
  in the label); a source's puzzles keep their cells where they were.
- vocabulary: PAD (0) is shared; each source's other tokens are shifted past the previous
  sources' tokens, so no token means two things (vocab_size = 1 + the sum of (vocab_size - 1)).
  Every source must use pad_id 0 and ignore_label_id 0 (or none), as the official builders do.
- puzzle identifiers: shifted likewise (num_puzzle_identifiers = the sum), so position 0 of the
  prefix carries each source's own embedding (several identifiers: trained by sign-SGD, as ARC's).

A row's source follows from its tokens (their shifted range), so everything per source works from
the arrays alone: the evaluation's per-source metrics (the "by_source" breakdown), the validity check
and the augmentation map a row back to its source's tokens and length and ask that puzzle's
module. MixedPuzzle offers these under the names of the puzzle contract (impl/puzzles.py). Test-time
symmetries, puzzle reports and solve.py's typed printing are per puzzle type and not offered for a
mixed dataset. impl/puzzles.py calls this module and passes in what it needs of puzzles.py (the
loader of one source, the hooks of a puzzle type), so this module does not import it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import puzzle_dataset as pd
from config import merge_config, type_name
from errors import ConfigError, DataError


def source_configs(cfg: dict) -> list[dict]:
    """The data section of each source: its entry merged over the run's data section."""
    base = {k: v for k, v in cfg.items() if k != "sources"}
    out = []
    for i, entry in enumerate(cfg["sources"]):
        where = f"data.sources[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected an object (a data section), got {type_name(entry)} {entry!r}")
        if "sources" in entry:
            raise ConfigError(f"{where}.sources: a source cannot have sources of its own")
        merged = merge_config(base, entry, where, prefix=f"{where}.")
        out.append({**merged, "sources": []})
    return out


def check_data_config(cfg: dict, check_source: Callable[[dict], None]) -> None:
    """The sources' values, each by check_source (puzzles.check_data_config); errors name the entry."""
    if cfg["path"]:
        raise ConfigError("data.sources: set data.path or data.sources, not both (a source may have its own path)")
    for i, source in enumerate(source_configs(cfg)):
        try:
            check_source(source)
        except ValueError as e:
            raise ConfigError(f"data.sources[{i}]: {e}") from None


@dataclass
class Source:
    """One source of a mixed dataset, as its metadata records it."""
    name: str              # its set name
    meta: pd.Metadata      # its own metadata (its tokens, length, identifiers)
    token_offset: int      # its tokens other than PAD, shifted by this
    id_offset: int         # its puzzle identifiers, shifted by this

    @property
    def last_token(self) -> int:
        return self.token_offset + self.meta.vocab_size - 1

    def to_own(self, arr: np.ndarray) -> np.ndarray:
        """Rows of the mixed dataset -> this source's tokens and length (a token outside its range,
        a model's answer from another source's vocabulary, becomes PAD)."""
        arr = np.asarray(arr)[:, :self.meta.seq_len].astype(np.int64)
        own = (arr > self.token_offset) & (arr <= self.last_token)
        return np.where(own, arr - self.token_offset, 0)

    def to_mixed(self, arr: np.ndarray, seq_len: int) -> np.ndarray:
        """This source's rows -> the mixed dataset's tokens, padded to seq_len."""
        arr = np.asarray(arr).astype(np.int64)
        shifted = np.where(arr > 0, arr + self.token_offset, 0)
        return np.pad(shifted, ((0, 0), (0, seq_len - arr.shape[1])))


def sources_of(meta: pd.Metadata) -> list[Source]:
    return [Source(s["set"], pd.metadata_from_json(s["metadata"], Path(s["set"])), s["token_offset"], s["id_offset"])
            for s in meta.extra["sources"]]


def row_sources(sources: list[Source], inputs: np.ndarray) -> np.ndarray:
    """(N,) index of each row's source, from the range of its largest token."""
    ends = np.array([s.last_token for s in sources])
    return np.minimum(np.searchsorted(ends, np.asarray(inputs).max(axis=1)), len(sources) - 1)


# ----------------------------------------------------------------------------------------------
# Building


def build_dataset(cfg: dict, load_source: Callable, progress: bool = True) -> tuple[Path, str]:
    """The mixed dataset of data.sources, each source read by load_source(cfg, progress) -> puzzles.Data."""
    configs = source_configs(cfg)
    parts = [load_source(c, progress) for c in configs]
    for i, part in enumerate(parts):
        meta = part.train.meta
        if meta.pad_id != 0 or meta.ignore_label_id not in (0, None):
            raise DataError(f"data.sources[{i}] ({part.path}): pad_id {meta.pad_id}, ignore_label_id "
                            f"{meta.ignore_label_id}; a source of a mixed dataset needs pad_id 0 and "
                            f"ignore_label_id 0 or none (as the official builders write)")
    names = []
    for part in parts:
        name = part.train.meta.puzzle or "data"
        names.append(name if name not in names else f"{name}{sum(n.startswith(name) for n in names) + 1}")
    key = hashlib.sha1(json.dumps([_fingerprint(p.path) for p in parts]).encode()).hexdigest()[:12]
    root = Path(cfg["data_dir"]) / f"mixed-{key}"

    def build(path: Path) -> str:
        description = "mixed: " + " + ".join(f"{n} ({p.description})" for n, p in zip(names, parts))
        _write(path, parts, names, description)
        return description

    return pd.find_or_build(root, build)


def _fingerprint(path: Path) -> list:
    """What identifies a source's dataset: its folder, metadata and file sizes."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    return [str(path)] + [[str(p.relative_to(path)), p.stat().st_size] for p in files] + \
        [p.read_text() for p in files if p.name == "dataset.json"]


def _write(root: Path, parts: list, names: list[str], description: str) -> None:
    metas = [p.train.meta for p in parts]
    seq_len = max(m.seq_len for m in metas)
    token_offsets = np.cumsum([0] + [m.vocab_size - 1 for m in metas]).tolist()
    id_offsets = np.cumsum([0] + [m.num_puzzle_identifiers for m in metas]).tolist()
    vocab_size, num_ids = token_offsets[-1] + 1, id_offsets[-1]
    sources = [Source(n, m, int(t), int(i)) for n, m, t, i in zip(names, metas, token_offsets, id_offsets)]
    token_dtype = np.uint8 if vocab_size <= 256 else np.int32
    split_names = ["train", "test"] + (["val"] if all(p.val is not None for p in parts) else [])
    splits = {}
    for split_name in split_names:
        sets, examples, puzzles_n, groups = {}, 0, 0, 0
        for source, part in zip(sources, parts):
            split = getattr(part, split_name)
            sets[source.name] = {
                "inputs": source.to_mixed(split.inputs, seq_len).astype(token_dtype),
                "labels": source.to_mixed(split.labels, seq_len).astype(token_dtype),
                "puzzle_identifiers": (np.asarray(split.puzzle_identifiers) + source.id_offset).astype(np.int32),
                "puzzle_indices": np.asarray(split.puzzle_indices),
                "group_indices": np.asarray(split.group_indices)}
            examples, puzzles_n, groups = examples + split.n_examples, puzzles_n + split.n_puzzles, groups + split.n_groups
        meta = pd.Metadata(
            pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab_size, seq_len=seq_len,
            num_puzzle_identifiers=num_ids, total_groups=groups, mean_puzzle_examples=examples / max(1, puzzles_n),
            total_puzzles=puzzles_n, sets=list(names),
            extra={"puzzle": "mixed", "description": description,
                   "sources": [{"set": s.name, "token_offset": s.token_offset, "id_offset": s.id_offset,
                                "metadata": getattr(p, split_name).meta.to_json()} for s, p in zip(sources, parts)]})
        splits[split_name] = (sets, meta)
    pd.write_dataset(root, splits)


# ----------------------------------------------------------------------------------------------
# What the trainer and evaluator ask: each row answered by its source's module


class MixedPuzzle:
    """The hooks of the puzzle contract (impl/puzzles.py) for a mixed dataset, under the contract's
    names; hooks_for(meta) gives each source's own hooks (puzzles.hooks_for)."""
    VALIDITY = "the rules of each row's puzzle"

    def __init__(self, meta: pd.Metadata, hooks_for: Callable) -> None:
        self.sources = sources_of(meta)
        self.seq_len = meta.seq_len
        self.own = [hooks_for(s.meta) for s in self.sources]
        if any(h is not None and h.augment is not None for h in self.own):
            self.augment_examples = self._augment

    def _by_source(self, inputs: np.ndarray):
        """(rows, k) for each source k that has rows among inputs."""
        index = row_sources(self.sources, inputs)
        for k in range(len(self.sources)):
            rows = np.flatnonzero(index == k)
            if len(rows):
                yield rows, k

    def _augment(self, inputs, labels, meta, rng):
        inputs, labels = np.array(inputs), np.array(labels)
        for rows, k in self._by_source(inputs):
            source, hooks = self.sources[k], self.own[k]
            if hooks is not None and hooks.augment is not None:
                a, b = hooks.augment(source.to_own(inputs[rows]), source.to_own(labels[rows]), source.meta, rng)
                inputs[rows], labels[rows] = source.to_mixed(a, self.seq_len), source.to_mixed(b, self.seq_len)
        return inputs, labels

    def valid_fn(self, meta: pd.Metadata):
        """Every source's rule check, each on its own rows; None when a source has none."""
        checks = [h.valid_fn(s.meta) if h is not None else None for s, h in zip(self.sources, self.own)]
        if any(c is None for c in checks):
            return None

        def valid(inputs, answers):
            out = np.zeros(len(inputs), dtype=bool)
            for rows, k in self._by_source(inputs):
                source = self.sources[k]
                out[rows] = checks[k](source.to_own(inputs[rows]), source.to_own(np.asarray(answers)[rows]))
            return out
        return valid

    def groups(self, inputs: np.ndarray) -> dict:
        """The evaluation's per-source breakdown: each row's source name."""
        return {"by_source": np.array([s.name for s in self.sources])[row_sources(self.sources, inputs)]}

    def breakdowns(self, split: pd.PuzzleSplit) -> dict:
        return self.groups(np.asarray(split.inputs))
