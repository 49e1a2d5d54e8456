"""Checks of command-line values that the tools share, made right after parsing: a value that
cannot give a result ends the tool with one line `error: --option: value why` (exit status 1)
before any work, as errors.run_cli ends a UserError.

    check_options([("--batch", args.batch, args.batch >= 1, "must be >= 1")])
    hidden = int_list(args.hidden, "--hidden")                        # "128,256" -> [128, 256]
"""
from __future__ import annotations

import math
from pathlib import Path

from config import SEED_MAX
from errors import fail

Rule = tuple[str, object, bool, str]  # (option, value, ok, why)


def check_options(rules: list[Rule]) -> None:
    """The first rule that fails ends the tool: 'error: <option>: <value> <why>'."""
    for option, value, ok, why in rules:
        if not ok:
            fail(f"{option}: {value!r} {why}")


def seed_rule(option: str, seed: int) -> Rule:
    return option, seed, 0 <= seed <= SEED_MAX, f"must be in 0..{SEED_MAX} (numpy's seed range)"


def finite(x: float) -> bool:
    return math.isfinite(x)


def int_list(text: str, option: str, low: int = 1) -> list[int]:
    """A comma-separated list of integers >= low, e.g. --hidden 128,256."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        fail(f"{option}: {text!r} is not a comma-separated list of integers (e.g. 128,256)")
    check_options([(option, text, min(values) >= low, f"must hold integers >= {low} only")])
    return values


def name_list(text: str, option: str, allowed: tuple[str, ...] | list[str]) -> list[str]:
    """A comma-separated list of names, each one of allowed."""
    values = [part.strip() for part in text.split(",")]
    for value in values:
        check_options([(option, value, value in allowed, f"is not one of {', '.join(allowed)}")])
    return values


def output_file_rule(option: str, path: str | None) -> Rule:
    """A file to be written at the end: not a folder, and its folder exists (checked before the work)."""
    target = Path(path) if path else None
    if target is not None and target.is_dir():
        return option, path, False, "is a folder; give a file name"
    if target is not None and not target.parent.is_dir():
        return option, path, False, f"cannot be written: the folder {target.parent} does not exist"
    return option, path, True, ""


def folder_rule(option: str, path: str | None) -> Rule:
    """A folder to be written into (made if missing): not an existing file, nor under one."""
    target = Path(path) if path else None
    blocked = next((p for p in ([target, *target.parents] if target else []) if p.exists() and not p.is_dir()), None)
    return option, path, blocked is None, f"cannot be a folder: {blocked} is a file"


def with_option(message: str, options: dict[str, str]) -> str:
    """A config check's message with the option that sets its key added, for a tool that builds a
    config from its options ('data.n_train: 0 must be >= 1' -> '... >= 1 (option --n-train)')."""
    key = message.split(":", 1)[0]
    return f"{message} (option {options[key]})" if key in options else message
