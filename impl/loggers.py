"""Where a run's records go: log.jsonl always; TensorBoard and Weights & Biases when asked for.

    training.tensorboard: true          event files in the run folder (torch.utils.tensorboard)
    training.wandb_project: "trm"       a wandb run in that project (training.wandb_mode "offline":
                                        no account needed; sync later with `wandb sync`)

A resumed run reads log.jsonl back (read_log): a torn last line, what a crash during an append
leaves, is dropped; a damaged line elsewhere stops the run with the line named, the file unchanged.

Both are optional extras: nothing is imported unless they are turned on, and a missing package
stops the run before any work with the command that installs it. TensorBoard and wandb get the
same numbers as log.jsonl, as scalars named <kind>/<key> (train/loss, eval/exact_acc, ...).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from errors import ConfigError, RunFileError

WANDB_MODES = ("offline", "online")
END_KINDS = ("early_stop", "test", "timing")  # records a run writes after its last checkpoint


def check_packages(t: dict) -> None:
    """Before any work: the packages the logging options need are installed."""
    if t["tensorboard"] and importlib.util.find_spec("tensorboard") is None:  # torch.utils.tensorboard needs it
        raise ConfigError("training.tensorboard: true needs the tensorboard package: python -m pip install tensorboard")
    if t["wandb_project"] and importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"training.wandb_project: {t['wandb_project']!r} needs the wandb package: "
                          f"python -m pip install wandb")


class RunLog:
    """Appends records to <run_dir>/log.jsonl and mirrors their numbers to the extras turned on."""

    def __init__(self, run_dir: Path, config: dict, resume: bool) -> None:
        t = config["training"]
        self.path = Path(run_dir) / "log.jsonl"
        self.tb = self.wandb = None
        if t["tensorboard"]:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(log_dir=str(run_dir))
        if t["wandb_project"]:
            import wandb
            self.wandb = wandb.init(project=t["wandb_project"], name=t["run_name"], dir=str(run_dir),
                                    mode=t["wandb_mode"], config=config, resume="allow" if resume else None)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {f"{record['kind']}/{k}": float(v) for k, v in record.items()
                   if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tb is not None:
            for name, value in scalars.items():
                self.tb.add_scalar(name, value, record["step"])
            self.tb.flush()
        if self.wandb is not None:
            if record["kind"] == "test":  # end-of-run figures (one holds an earlier step): the run's summary
                self.wandb.summary.update(scalars)
            else:
                self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def parse_record(raw: bytes) -> tuple[dict | None, str]:
    """A log line as a record (a JSON object with a kind and an integer step), or None and why not."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text at byte {e.start + 1}"
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg} at column {e.colno}"
    if not (isinstance(record, dict) and isinstance(record.get("kind"), str) and type(record.get("step")) is int):
        return None, "not a record with a kind and an integer step"
    return record, ""


def read_log(path: Path) -> tuple[list[tuple[str, dict]], bool]:
    """The records of a log.jsonl with their lines, and whether its last line was torn (cut short
    by an interrupted write: not a whole record; left out here). Any other line that is not a record
    is damage, not an interrupted write: RunFileError names it, and nothing is changed."""
    lines = Path(path).read_bytes().split(b"\n")
    if lines[-1] == b"":  # the file ends with a newline (or is empty)
        lines.pop()
    records = []
    for number, raw in enumerate(lines, start=1):
        record, why = parse_record(raw)
        if record is None and number == len(lines):
            return records, True
        if record is None:
            raise RunFileError(
                f"{path}: line {number} is {why}, and {len(lines) - number} line(s) follow it: the file is "
                f"damaged (an interrupted write tears only the last line); nothing was changed. Delete or "
                f"repair line {number}, or move {path} away to start a new log, then resume again")
        records.append((raw.decode("utf-8"), record))
    return records, False


def records_before(records: list[tuple[str, dict]], step: int) -> list[tuple[str, dict]]:
    """The records a run had written when it saved its checkpoint of `step`: those of steps up to
    it, without the end-of-run records that follow them (early_stop, test, timing: written after
    the last checkpoint). A run resumed from that checkpoint writes the others again."""
    kept = [(line, r) for line, r in records if r["step"] <= step]
    while kept and kept[-1][1]["kind"] in END_KINDS:
        kept.pop()
    return kept
