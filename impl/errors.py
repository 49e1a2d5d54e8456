"""Errors a user can cause and fix, and the one place that turns them into one line.

Every script's command line ends a UserError with `error: <message>` on stderr and exit status 1,
without a traceback; anything else is a bug and keeps its traceback. Messages name the culprit:
the file, the dotted config key, the line, or the value.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, TypeVar


class UserError(Exception):
    """A problem the user can fix (a config value, a file, a checkpoint); the message says which."""


class ConfigError(UserError, ValueError):
    """A configuration problem, with the file and dotted key in the message."""


class DataError(UserError, ValueError):
    """A dataset, cache or download that cannot be used, with the file (and line) in the message."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used, with the path in the message."""


class NonFiniteLoss(UserError, FloatingPointError):
    """The loss became NaN or infinite; training stopped before the update."""


class Interrupted(UserError):
    """Stopped by SIGINT or SIGTERM; the message says what was saved. Exit status 128 + signum."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


R = TypeVar("R")


def fail(message: str) -> NoReturn:
    """Exit with status 1 after printing 'error: message' to stderr (SystemExit's own printing)."""
    raise SystemExit(f"error: {message}")


def run_cli(fn: Callable[[], R]) -> R:
    """Call fn; a UserError (or Ctrl-C) ends the process with one line instead of a traceback."""
    try:
        return fn()
    except Interrupted as e:
        print(f"\n{e}", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from None
    except UserError as e:
        fail(str(e))  # from inside the except: no traceback, the context is dropped


class RunFileError(UserError, ValueError):
    """A file of a run folder (log.jsonl, ...) that cannot be used, with the path and line in the message."""


class LostProcess(UserError):
    """Under torchrun, a collective failed because another process ended (killed, crashed, out of
    memory); the message names it if it can, and says where the last checkpoint is."""
