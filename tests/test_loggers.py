"""TensorBoard and wandb logging: optional extras, off by default, clear when missing."""
import importlib.util

import pytest

import loggers
import train_trm
from errors import ConfigError
from test_train import tiny_run_config
from train_cli import check_config


def test_missing_logging_packages_are_named_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    config = tiny_run_config(tmp_path, tensorboard=True)
    with pytest.raises(ConfigError, match=r"x.json: training.tensorboard: true needs the tensorboard package: "
                                          r"python -m pip install tensorboard"):
        check_config(config, "x.json")
    config = tiny_run_config(tmp_path, wandb_project="trm")
    with pytest.raises(ConfigError, match=r"training.wandb_project: 'trm' needs the wandb package: python -m pip"):
        check_config(config, "x.json")
    check_config(tiny_run_config(tmp_path), "x.json")  # off by default: nothing is needed


def test_tensorboard_event_file_holds_the_log_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (an optional extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train_trm.main(tiny_run_config(tmp_path, max_steps=10, eval_every=5, log_every=5, tensorboard=True),
                   progress=False)
    run_dir = tmp_path / "runs" / "tiny"
    assert list(run_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/ce_loss", "eval/exact_acc", "test/exact_acc"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [5, 10]


def test_wandb_offline_writes_its_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (an optional extra)")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train_trm.main(tiny_run_config(tmp_path, max_steps=4, eval_every=4, log_every=2, wandb_project="trm-test"),
                   progress=False)
    runs = list((tmp_path / "runs" / "tiny" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_logging_extras_are_not_imported_when_off(tmp_path):
    import subprocess
    import sys
    code = ("import sys; sys.path.insert(0, 'impl'); import train_trm, loop, loggers; "
            "print('wandb' in sys.modules, 'torch.utils.tensorboard' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert loggers.WANDB_MODES == ("offline", "online")
