"""Run configuration: JSON override files deep-merged over a script's RUN_CONFIG, and checked.

    config = load_config("tiny.json", base=RUN_CONFIG)   # ConfigError names the file and dotted key
    config = load_config("x.json", RUN_CONFIG, expand=train_cli.expand_base)  # + the sections x.json's choices bring

Types come from the defaults (an int where the default is a float is accepted); unknown keys get
the nearest known one, or the official code's name pointed to ours. JSON that would silently do
something else is refused: duplicate keys, NaN/Infinity literals, text that is not UTF-8; so is
JSON nested deeper than MAX_DEPTH and an integer outside the 64-bit range numpy and torch take.
"""
from __future__ import annotations

import copy
import difflib
import json
import math
import os
from pathlib import Path
from typing import Callable

from errors import ConfigError

Expand = Callable[[dict, dict], dict]  # (base, override) -> base with the sections the override's choices bring

# Names used by the official TRM code, pointed to ours in error messages.
OFFICIAL_NAMES = {"H_cycles": "T", "L_cycles": "n", "halt_max_steps": "N_sup", "L_layers": "num_layers",
                  "pos_encodings": "pos_encoding", "puzzle_emb_len": "n_prefix", "global_batch_size": "batch_size"}


MAX_DEPTH = 100        # JSON nesting levels a config or study file may have (they need about five)
INT_LIMIT = 2 ** 63    # integers in a config are below this in magnitude: numpy's and torch's int64
SEED_MAX = 2 ** 32 - 1  # seeds are in 0..SEED_MAX: numpy's seed range (np.random.seed refuses others)


def type_name(value) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "object"}.get(
        type(value), type(value).__name__)


class _NonFinite(str):
    """A NaN / Infinity literal from a JSON file: kept as a marker so the error can name its key."""


class _HugeInt(str):
    """An integer literal of INT_LIMIT or more in magnitude: kept as a marker so the error can name its key."""


def _check_value(default, value, where: str) -> object:
    """Return value if it has the default's type (ints are accepted for floats), else raise."""
    if isinstance(value, _NonFinite):
        raise ConfigError(f"{where}: {value} is not a finite number (JSON has no NaN or Infinity)")
    if isinstance(value, _HugeInt):
        shown = value if len(value) <= 24 else f"{value[:12]}... ({len(value.lstrip('-'))} digits)"
        raise ConfigError(f"{where}: {shown} is out of range (integers must be within +-(2**63 - 1), "
                          f"the 64-bit range numpy and torch take)")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list)
        if ok and default:
            value = [_check_value(default[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        for i, v in enumerate(value if ok and not default else []):  # no type to check, but no marker either
            if isinstance(v, (_NonFinite, _HugeInt)):
                _check_value(v, v, f"{where}[{i}]")
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {type_name(default)}, got {type_name(value)} {value!r}")
    return value


def merge_config(base: dict, override: dict, source: str, prefix: str = "") -> dict:
    """Deep-merge override into a copy of base; unknown keys and wrong types raise ConfigError."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            close = difflib.get_close_matches(key, list(base), n=1)
            if OFFICIAL_NAMES.get(key) in base:
                hint = f" (the official code's name for '{OFFICIAL_NAMES[key]}')"
            elif close:
                hint = f" (did you mean '{close[0]}'?)"
            else:
                hint = f" (known keys: {', '.join(base)})"
            raise ConfigError(f"{source}: unknown key '{path}'{hint}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {path}: expected object, got {type_name(value)} {value!r}")
            merged[key] = merge_config(base[key], value, source, f"{path}.")
        else:
            try:
                merged[key] = _check_value(base[key], value, path)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    return merged


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(f"duplicate key {key!r} (JSON keeps only the last one; remove the other)")
        seen[key] = value
    return seen


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)  # 1e999 would be inf


def _parse_int(text: str) -> int | _HugeInt:
    if len(text.lstrip("-")) > 19 or abs(int(text)) >= INT_LIMIT:  # also below Python's 4300-digit limit
        return _HugeInt(text)
    return int(text)


def json_depth(value: object) -> int:
    """Levels of nested lists and objects (0 for a number or string), counted without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            todo += [(child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def parse_json(text: str, source: str) -> object:
    """json.loads, but duplicate keys, NaN/Infinity and nesting deeper than MAX_DEPTH are errors;
    an integer beyond the 64-bit range is named where its key is checked; messages start with source."""
    too_deep = ConfigError(f"{source}: JSON nested more than {MAX_DEPTH} levels deep (a config is a few levels "
                           f"deep; look for unclosed or repeated brackets)")
    try:
        value = json.loads(text, object_pairs_hook=_object_without_duplicates, parse_constant=_NonFinite,
                           parse_float=_parse_float, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except RecursionError:
        raise too_deep from None
    if json_depth(value) > MAX_DEPTH:
        raise too_deep
    return value


def read_json_object(path: str | os.PathLike, kind: str = "config file") -> dict:
    """A JSON file whose top level is an object (a config, study or override file); errors name
    the file and say what `kind` of file it should be."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {kind} ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); "
                          f"a {kind} is JSON text") from None
    value = parse_json(text, str(path))
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object, got {type_name(value)}")
    return value


def load_config(path: str | os.PathLike, base: dict, expand: Expand | None = None) -> dict:
    """Read a JSON override file and merge it over base, or over expand(base, override) when given
    (this module knows no puzzle or model: the caller's expand adds the sections they bring)."""
    path = Path(path)
    override = read_json_object(path)
    if expand is not None:
        try:
            base = expand(base, override)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return merge_config(base, override, str(path))


def check_rules(config: dict, rules: list[tuple[str, bool, str]], source: str) -> None:
    """rules: (dotted key, ok, why); the first that fails raises 'source: key: value why'."""
    for key, ok, why in rules:
        if not ok:
            value = config
            for part in key.split("."):
                value = value[part]
            raise ConfigError(f"{source}: {key}: {value!r} {why}")


def config_changes(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """Dotted keys whose values differ between two configs, with both values."""
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append((f"{prefix}{key}", a, b))
    return changes


def check_resume_config(saved: dict, config: dict, path: Path, resumable: tuple[str, ...],
                        absent_means: dict[str, object] | None = None) -> list[str]:
    """Raise if the config changed in a way a resumed run cannot honour; return the allowed changes.

    A key absent from the saved config was added to the program after the checkpoint was written:
    the run was made with its old behaviour, which is `absent_means[key]` where that differs from
    today's default (the value must then be that), else whatever value the key has now."""
    absent_means = absent_means or {}
    bad, notes = [], []
    for k, a, b in config_changes(saved, config):
        if a == "<absent>" and b != "<absent>":
            if k in absent_means and b != absent_means[k]:
                bad.append(f"{k} (absent from the checkpoint, which was written before it existed and computed "
                           f"{absent_means[k]!r}; {b!r} now: set it to {absent_means[k]!r} to resume)")
            else:
                notes.append(f"{k}: absent from the checkpoint (written before it existed), {b!r} now")
        elif k in resumable:
            notes.append(f"{k}: {a!r} -> {b!r}")
        else:
            bad.append(f"{k} ({a!r} in the checkpoint, {b!r} now)")
    if bad:
        raise ConfigError(f"{path}: cannot resume, the config differs in: {'; '.join(bad)}. Only these may "
                          f"change when resuming: {', '.join(resumable)}")
    return notes
