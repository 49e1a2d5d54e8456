"""Where a run's records go: log.jsonl always; TensorBoard and Weights & Biases when asked for.

    training.tensorboard: true          event files in the run folder (torch.utils.tensorboard)
    training.wandb_project: "trm"       a wandb run in that project (training.wandb_mode "offline":
                                        no account needed; sync later with `wandb sync`)

Both are optional extras: nothing is imported unless they are turned on, and a missing package
stops the run before any work with the command that installs it. TensorBoard and wandb get the
same numbers as log.jsonl, as scalars named <kind>/<key> (train/loss, eval/exact_acc, ...).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from errors import ConfigError

WANDB_MODES = ("offline", "online")


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
