"""Checkpoints and dataset caches that cannot be written or are not this project's: a full disk, a
read-only folder, a file that holds something else. Each case ends in one line naming the file,
the key or the value and what to do, and leaves what was there before as it was."""
import copy
import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint
import evaluate
import puzzle_dataset as pd
import solve
import train_trm
import ttc
from errors import CheckpointError, DataError
from test_train import tiny_run_config

PUZZLE = "12.4...2....4..1"  # a 4x4 Sudoku for the tiny run below


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny 4x4 run trained for 4 steps: its config and folder (best.pt, last.pt, config.json, log)."""
    tmp = tmp_path_factory.mktemp("inputs")
    config = tiny_run_config(tmp, max_steps=4, eval_every=4, dtype="float32")
    train_trm.main(config, progress=False)
    return {"config": config, "run_dir": tmp / "runs" / "tiny", "tmp": tmp}


def snapshot(folder: Path) -> dict:
    """Every file under folder with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- writing: a full disk, a read-only folder ----------------------------------------------------

class FillsUp:
    """A file whose disk is full after `room` bytes: the write that crosses it raises ENOSPC."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.f.write(bytes(data[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"step": 1, "w": torch.ones(1000)})
    before = path.read_bytes()
    fdopen = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: FillsUp(fdopen(fd, mode), 700))
    with pytest.raises(CheckpointError, match=r"last.pt: cannot write \(RuntimeError: \[enforce fail at inline_container"
                                              r".*\): disk full\? The previous file, if any, is unchanged"):
        checkpoint.save_checkpoint(path, {"step": 2, "w": torch.zeros(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before and checkpoint.load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_training_on_a_full_disk_ends_in_one_line_and_keeps_the_checkpoints(run, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "tiny").mkdir(parents=True)
    for name in ("last.pt", "best.pt", "config.json", "log.jsonl"):
        (runs / "tiny" / name).write_bytes((run["run_dir"] / name).read_bytes())
    config = copy.deepcopy(run["config"])
    config["training"].update(runs_dir=str(runs), max_steps=8)
    path = tmp_path / "more.json"
    path.write_text(json.dumps(config))

    def torch_save(obj, f, *args, **kwargs):  # what torch's zip writer raises when a write falls short
        f.write(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", torch_save)
    with pytest.raises(SystemExit, match=r"^error: .*tiny/(last|best).pt: cannot write \(RuntimeError: \[enforce fail"
                                         r".*unexpected pos 704 vs 598\): disk full\? The previous file, if any, is "
                                         r"unchanged$"):
        train_trm.cli(["--config", str(path), "--resume", "--no-progress"])
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(runs / "tiny" / "last.pt")["step"] == 4
    assert checkpoint.load_checkpoint(runs / "tiny" / "best.pt")["step"] == 4
    assert not [p for p in (runs / "tiny").iterdir() if p.name.endswith(".tmp")]


def tiny_splits(n: int = 6) -> dict:
    arrays = pd.split_arrays(np.ones((n, 4), np.uint8), np.ones((n, 4), np.uint8))
    return {split: (arrays, pd.make_metadata(arrays, vocab_size=3)) for split in ("train", "test")}


@pytest.mark.parametrize("error,shown", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (OSError("48000 requested and 12160 written"), "48000 requested and 12160 written"),  # numpy's short write
])
def test_dataset_on_a_full_disk_leaves_no_half_written_folder(tmp_path, monkeypatch, error, shown):
    root = tmp_path / "data" / "sudoku-x"
    save, calls = np.save, []

    def fills_up(file, arr, *args, **kwargs):
        calls.append(file)
        if len(calls) == 4:
            Path(file).write_bytes(b"\x93NUMPY half")
            raise error
        save(file, arr, *args, **kwargs)

    monkeypatch.setattr(pd.np, "save", fills_up)
    with pytest.raises(DataError, match=rf"^{root}: cannot write the dataset there \({shown}\): free space on that "
                                        r"disk, or set data.data_dir to a folder on another disk; no partial dataset "
                                        r"was left behind$"):
        pd.find_or_build(root, lambda path: (pd.write_dataset(path, tiny_splits()), "tiny")[1])
    monkeypatch.undo()
    assert list((tmp_path / "data").iterdir()) == []
    assert pd.find_or_build(root, lambda path: (pd.write_dataset(path, tiny_splits()), "tiny")[1]) == (root, "tiny")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_dataset_in_a_read_only_folder_is_named(tmp_path, monkeypatch, code):
    """As root (which ignores permissions) the refusal a read-only folder gives is played by mkdtemp."""
    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pd.tempfile, "mkdtemp", refused)
    root = tmp_path / "sudoku-x"
    with pytest.raises(DataError, match=rf"^{root}: cannot write the dataset there \({os.strerror(code)}\): set "
                                        r"data.data_dir to a folder you can write; no partial dataset"):
        pd.write_dataset(root, tiny_splits())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_dataset_in_a_folder_without_write_permission_is_named(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DataError, match=rf"{folder / 'sudoku-x'}: cannot write the dataset there \(Permission "
                                            r"denied\): set data.data_dir to a folder you can write"):
            pd.write_dataset(folder / "sudoku-x", tiny_splits())
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_damaged_dataset_that_cannot_be_removed_is_named(tmp_path, monkeypatch):
    root = pd.write_dataset(tmp_path / "sudoku-x", tiny_splits())
    (root / "train" / "all__inputs.npy").write_bytes(b"garbage")

    def refused(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "unlink", refused)
    with pytest.raises(DataError, match=rf"^{root}: it is damaged \(.*all__inputs.npy: not a readable .npy array.*\), "
                                        r"but it cannot be removed \(Read-only file system\): remove it, or set "
                                        r"data.data_dir to a folder you can write$"):
        pd.find_or_build(root, lambda path: "never built")


def test_training_with_a_read_only_data_dir_ends_in_one_line(tmp_path, monkeypatch):
    config = tiny_run_config(tmp_path)
    path = tmp_path / "ro.json"
    path.write_text(json.dumps(config))

    def refused(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(pd.tempfile, "mkdtemp", refused)
    with pytest.raises(SystemExit, match=rf"^error: {tmp_path / 'data'}/sudoku.*: cannot write the dataset there "
                                         r"\(Read-only file system\): set data.data_dir to a folder you can write"):
        train_trm.cli(["--config", str(path), "--no-progress"])
    assert not list((tmp_path / "data").glob("*"))


# -- reading: files that are not this project's checkpoints ---------------------------------------

def hostile(run: dict, tmp_path: Path, change) -> Path:
    """A copy of the run's last.pt changed by change(ckpt) (which may return a replacement)."""
    ckpt = checkpoint.load_checkpoint(run["run_dir"] / "last.pt")
    changed = change(ckpt)
    ckpt = ckpt if changed is None else changed
    path = tmp_path / "other.pt"
    torch.save(ckpt, path)
    return path


def without(*keys):
    def change(ckpt):
        for key in keys:
            del ckpt[key]
    return change


def model_config(**values):
    def change(ckpt):
        ckpt["model_config"].update(values)
    return change


EVALUATION_CASES = [
    (lambda ckpt: torch.zeros(3), r"not a TRM training checkpoint \(it holds a Tensor, not the dict of model, config"),
    (without("config"), r"not a TRM training checkpoint \(missing config; evaluation needs the weights, model_config"),
    (without("model", "dataset"), r"not a TRM training checkpoint \(missing model, dataset; evaluation needs"),
    (lambda ckpt: {**ckpt, "config": [1]}, r"not a TRM training checkpoint \(config is a list, not a dict; "),
    (lambda ckpt: {**ckpt, "model_config": "trm"}, r"\(model_config is a str, not a dict; evaluation needs"),
    (lambda ckpt: {**ckpt, "ema": torch.zeros(2)}, r"\(ema is a Tensor, not a dict or NoneType; evaluation"),
    (lambda ckpt: {**ckpt, "ema": {"w": [1]}}, r"the weights are a dict holding other things than tensors"),
    (model_config(hidden_sise=64), r"its model_config does not describe a model this code builds \(model.hidden_sise: "
                                   r"not a key of arch 'trm'\)"),
    (model_config(hidden_size="abc"), r"its model_config does not describe a model this code builds \("
                                      r"model.hidden_size: 'abc' is a str, expected int\)"),
    (model_config(expansion=True), r"\(model.expansion: True is a bool, expected float\)"),
    (model_config(arch=7), r"\(model.arch: 7 is not one of trm"),
    (model_config(hidden_size=10 ** 9), r"its model_config \(hidden_size 1000000000, num_layers 2, vocab_size 6, "
                                        r"seq_len 16\) needs at least [\d,.]+ GiB for the weights alone, more than the "
                                        r"[\d,.]+ GiB of this cpu; it cannot be loaded here"),
]


@pytest.mark.parametrize("change,message", EVALUATION_CASES)
def test_evaluate_solve_and_ttc_name_a_checkpoint_that_is_not_this_projects(run, tmp_path, change, message):
    path = hostile(run, tmp_path, change)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match=rf"^error: {path}: .*{message}"):
        evaluate.main(["--checkpoint", str(path), "--dtype", "float32", "--no-progress", "--limit", "4"])
    with pytest.raises(SystemExit, match=rf"^error: {path}: .*{message}"):
        solve.main(["--checkpoint", str(path), "--dtype", "float32", PUZZLE])
    with pytest.raises(SystemExit, match=rf"^error: {path}: .*{message}"):
        ttc.main(["--checkpoint", str(path), "--dtype", "float32", "--no-progress", "--steps", "2", "--members", "1"])
    assert snapshot(tmp_path) == before


def test_evaluation_error_is_one_line(run, tmp_path):
    path = hostile(run, tmp_path, model_config(hidden_size=10 ** 9))
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(path), "--no-progress"])
    assert len(str(e.value.code).splitlines()) == 1


def test_a_good_checkpoint_still_evaluates_the_same(run):
    model, ckpt, weights = checkpoint.load_trained(run["run_dir"] / "last.pt", torch.device("cpu"))
    raw = checkpoint.load_checkpoint(run["run_dir"] / "last.pt")
    assert weights == "EMA" and ckpt["step"] == raw["step"] == 4
    assert all(torch.equal(v, raw["ema"][k]) for k, v in model.state_dict().items())


RESUME_CASES = [
    (lambda ckpt: torch.zeros(3), r"not a TRM training checkpoint \(it holds a Tensor"),
    (lambda ckpt: [ckpt], r"not a TRM training checkpoint \(it holds a list"),
    (without("config"), r"\(missing config; --resume reads everything last.pt holds\)"),
    (without("optimizer", "slots", "rng"), r"\(missing optimizer, rng, slots; --resume reads everything"),
    (lambda ckpt: {**ckpt, "config": "tiny"}, r"\(config is a str, not a dict[;)]"),
    (lambda ckpt: {**ckpt, "config": {k: v for k, v in ckpt["config"].items() if k != "training"}},
     r"\(missing config.training; --resume"),
    (lambda ckpt: {**ckpt, "slots": {k: v for k, v in ckpt["slots"].items() if k != "z"}}, r"\(missing slots.z; "),
    (lambda ckpt: {**ckpt, "sampler": {**ckpt["sampler"], "order": [3, 1]}}, r"\(sampler.order is a list, not a Tensor"),
    (lambda ckpt: {**ckpt, "step": "4"}, r"\(step is a str, not a int[;)]"),
    (lambda ckpt: {**ckpt, "model_config": None}, r"\(model_config is a NoneType, not a dict[;)]"),
    (lambda ckpt: {**ckpt, "model": torch.zeros(2)}, r"\(model is a Tensor, not a dict[;)]"),
]


@pytest.mark.parametrize("change,message", RESUME_CASES)
@pytest.mark.parametrize("with_config", [True, False])
def test_resume_names_a_checkpoint_that_is_not_this_projects(run, tmp_path, change, message, with_config):
    """With --config, and without it (train_cli then reads the config saved in last.pt first,
    through the same checked loader as resume_from)."""
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    for name in ("config.json", "log.jsonl", "best.pt"):
        (run_dir / name).write_bytes((run["run_dir"] / name).read_bytes())
    ckpt = checkpoint.load_checkpoint(run["run_dir"] / "last.pt")
    ckpt["config"]["training"].update(runs_dir=str(tmp_path / "runs"), max_steps=8)
    config = copy.deepcopy(ckpt["config"])
    changed = change(ckpt)
    torch.save(ckpt if changed is None else changed, run_dir / "last.pt")
    before = snapshot(run_dir)
    if with_config:
        path = tmp_path / "more.json"
        path.write_text(json.dumps(config))
        args, base = ["--config", str(path), "--resume", "--no-progress"], train_trm.RUN_CONFIG
    else:
        args, base = ["--resume", "--no-progress"], copy.deepcopy(train_trm.RUN_CONFIG)
        base["training"].update(runs_dir=config["training"]["runs_dir"], run_name="tiny")
    with pytest.raises(SystemExit) as e:
        train_trm.cli(args, base=base)
    line = str(e.value.code)
    assert line.startswith(f"error: {run_dir / 'last.pt'}: ") and len(line.splitlines()) == 1, line
    assert re.search(message, line), line
    assert snapshot(run_dir) == before
