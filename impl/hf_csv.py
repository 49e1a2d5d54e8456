"""CSV datasets on the Hugging Face hub, whatever the puzzle: the local path of a CSV file (downloaded
into the hub's cache with huggingface_hub.hf_hub_download, or found there offline), the CSV's
header, seeded subsets, and a validation split carved out of training. sudoku_hf.py and
maze_hf.py read their rows with these.
"""
from __future__ import annotations

import csv
import sys
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from errors import ConfigError, DataError

# How to fetch a Hugging Face dataset into the hub cache (shown when it is missing offline).
HF_DOWNLOAD_HINT = "hf download {repo_id} --repo-type dataset"


def csv_path(repo_id: str, split: str, cache_dir: str | Path | None, local_files_only: bool,
             force_download: bool) -> str:
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


def refetch_error(e: ValueError, path: str, force_key: str) -> DataError:
    """A CSV that could not be read (the message names the file and line), with how to download it
    again: force_key is the dotted config key, e.g. data.force_download."""
    if isinstance(e, UnicodeDecodeError):
        e = f"{path}: not UTF-8 text ({e.reason})"
    *sections, key = force_key.split(".")
    snippet = "{" + "".join(f'"{s}": {{' for s in sections) + f'"{key}": true' + "}" * (len(sections) + 1)
    return DataError(f"{e}. If the download is damaged, fetch it again with {snippet} in your config")


def csv_rows(path: str | Path, columns: tuple[str, ...], progress: bool) -> Iterator[tuple[int, list[str] | None]]:
    """(line number, [the named columns' fields]) per non-empty data row of a CSV with a header;
    (line number, None) for a row with too few fields. A header without one of the columns raises
    DataError naming the file and line 1. Fields are not stripped (a maze's spaces are cells)."""
    from tqdm import tqdm

    name = str(path)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not a column name
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{name}: empty file, expected a header with columns {', '.join(columns)}")
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{name} line 1: header {header} lacks column(s) {missing}; expected "
                            f"source,question,answer,rating")
        index = [header.index(c) for c in columns]
        for row in tqdm(reader, disable=not progress, desc=f"reading {Path(name).name}", unit="row"):
            if not row:
                continue
            yield reader.line_num, ([row[i] for i in index] if len(row) > max(index) else None)


def check_bad_rows(name: str, bad: list[tuple[int, str]], any_good: bool, skip_bad_rows: bool, key: str,
                   role: str) -> None:
    """bad holds (line, reason) of a file's bad rows: without skip_bad_rows the first one stops the
    load, naming the file, the line and the config key that skips them; with it they are counted in
    a warning, unless no good row is left."""
    if not bad:
        return
    first_line, first_reason = min(bad)
    if not skip_bad_rows:
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise DataError(f"{name} line {first_line}: {first_reason}{more}; pass skip_bad_rows=True "
                        f"({key}) to skip bad rows")
    if not any_good:
        raise DataError(f"{name}: no usable {role} row: all {len(bad)} data rows are bad "
                        f"(first: line {first_line}: {first_reason})")
    print(f"warning: {name}: skipped {len(bad)} bad rows (first: line {first_line}: {first_reason})", file=sys.stderr)


def subsample(keep: np.ndarray, subset: int, seed: int, split: str, what: str) -> np.ndarray:
    """A seeded random subset of `subset` of the row indices keep (0: all), in file order; the seed
    stream depends on the split's name. `what` names the rows in the message when there are fewer."""
    if not subset:
        return keep
    if subset > len(keep):
        print(f"load_hf: {what} has {len(keep)} rows, fewer than the {subset} asked for; using all of them",
              file=sys.stderr)
        return keep
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode())]))
    return np.sort(rng.choice(keep, size=subset, replace=False))


def split_off_validation(out: dict[str, np.ndarray], val_subset: int, seed: int, keys: tuple[str, ...],
                         key_name: str) -> None:
    """Move a seeded random `val_subset` of the train_* rows of out into val_* (in place)."""
    if not val_subset:
        return
    n = len(out["train_inputs"])
    if val_subset >= n:
        raise ConfigError(f"{key_name}: {val_subset} leaves no training rows of the {n} kept")
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"val")]))
    is_val = np.zeros(n, dtype=bool)
    is_val[rng.choice(n, size=val_subset, replace=False)] = True
    for key in keys:
        out[f"val_{key}"], out[f"train_{key}"] = out[f"train_{key}"][is_val], out[f"train_{key}"][~is_val]
