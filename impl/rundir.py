"""The run folder <runs_dir>/<run_name>/: a checked name, a lock, and older runs kept whole.

Guarantees (each has a test in tests/test_rundir.py):
- a run writes, moves or replaces only files with a run's own names (is_run_file): config.json,
  log.jsonl, best.pt, last.pt, evaluation and depth outputs, event files, their temporary files;
  anything else in the folder is never touched, and nothing is ever deleted;
- a fresh run in a folder that holds an earlier run moves that run's files into previous-<k>/
  (k = 1, 2, ...: the highest is the newest); earlier previous-* folders are left as they are;
- files with a run's names but no run's config.json next to them may be the user's own: the run
  refuses to start and names them; temporary files of a run's names alone are those of a run
  killed before it wrote config.json, and move to previous-<k> as a run's files do;
- one training at a time per folder: run.lock holds the owner's pid, host and start time; a lock
  whose process is gone is taken over with a note.
"""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path

from errors import ConfigError, UserError

LOCK_NAME = "run.lock"
_OWN_NAMES = {"config.json", "log.jsonl", "best.pt", "last.pt", LOCK_NAME}
_OWN_PATTERNS = re.compile(r"^(eval_\w+\.json|depth_\w+\.(json|csv|png)|events\.out\.tfevents\..+)$")


def check_run_name(name: str, key: str = "training.run_name") -> None:
    """One plain folder name: not empty, '.', '..', no path separator, printable."""
    if name in ("", ".", ".."):
        why = "must be a folder name (not empty, '.' or '..')"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        why = "must be one folder name without '/' or '\\' (put parent folders in training.runs_dir)"
    elif not name.isprintable() or name != name.strip():
        why = "must be printable, without leading or trailing spaces"
    else:
        return
    raise ConfigError(f"{key}: {name!r} {why}")


def make_run_dir(run_dir: Path) -> None:
    """Create the run folder (and its parents); an unwritable place is named before any work."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"training.runs_dir / training.run_name: cannot write to {run_dir} "
                          f"({e.strerror or type(e).__name__})") from None


def is_run_file(name: str) -> bool:
    """A name a run (or evaluate.py) writes in its folder, or a temporary file of one of them."""
    tmp = re.fullmatch(r"(.+?)(\.\w{6,})?\.tmp", name)  # 'last.pt.tmp', 'last.pt.k2j4x8aa.tmp'
    if tmp:
        name = tmp.group(1)
    return name in _OWN_NAMES or bool(_OWN_PATTERNS.match(name))


def is_lock_file(name: str) -> bool:
    """run.lock or one of its temporary files (a lock being taken: never moved)."""
    return name == LOCK_NAME or (name.startswith(LOCK_NAME + ".") and name.endswith(".tmp"))


def holds_a_run(run_dir: Path) -> bool:
    """Whether run_dir/config.json is a run's resolved config (what marks the folder as a run's)."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"model", "data", "training", "versions"} <= set(saved)


def keep_previous_run(run_dir: Path) -> Path | None:
    """Before a fresh run: move an earlier run's files into previous-<k>/; return that folder."""
    own = sorted(p for p in run_dir.iterdir() if p.is_file() or p.is_symlink()
                 if is_run_file(p.name) and not is_lock_file(p.name))
    if not own:
        return None
    if not holds_a_run(run_dir) and not all(p.name.endswith(".tmp") for p in own):
        raise ConfigError(
            f"{run_dir} holds {', '.join(p.name for p in own)} but no run's config.json: they may be your own "
            f"files, so nothing was touched. Choose another training.run_name or training.runs_dir, or move "
            f"them away")
    taken = [int(m.group(1)) for p in run_dir.iterdir() if (m := re.fullmatch(r"previous-(\d+)", p.name))]
    previous = run_dir / f"previous-{max(taken, default=0) + 1}"
    previous.mkdir()
    for path in own:
        os.replace(path, previous / path.name)
    return previous


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return start is None or _process_start(pid) in (None, start)


class RunLock:
    """run.lock in the run folder while a training uses it. Created atomically with its content
    (written to a temporary file, then hard-linked), removed on release if it is still ours."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.note = ""

    def _link(self) -> bool:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=LOCK_NAME + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def acquire(self) -> "RunLock":
        try:
            if self._link():
                return self
            holder = self._holder()
            if holder is None or holder.get("host") != self.owner["host"] or _alive(holder["pid"], holder.get("start")):
                raise UserError(self._busy(holder))
            self.note = (f"{self.path}: taking over the lock of pid {holder['pid']} (started {holder.get('started')}), "
                         f"which is no longer running")
            self.path.unlink(missing_ok=True)
            if not self._link():  # another process took it in between
                raise UserError(self._busy(self._holder()))
            return self
        except OSError as e:
            raise ConfigError(f"training.runs_dir / training.run_name: cannot write to {self.path.parent} "
                              f"({e.strerror or type(e).__name__})") from None

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    def _busy(self, holder: dict | None) -> str:
        if holder is None:
            who = "an unreadable lock file"
        else:
            who = f"pid {holder['pid']} on {holder.get('host')}, started {holder.get('started')}"
        return (f"{self.path.parent} is in use by another training ({who}); wait for it to end or choose another "
                f"training.run_name. If no training uses it, delete {self.path}")

    def release(self) -> None:
        if self._holder() == self.owner:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
