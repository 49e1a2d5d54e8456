"""The run folder never loses a file that is not the run's own; one training per folder; names checked."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import rundir
import train_trm
from errors import ConfigError, UserError
from test_train import tiny_run_config
from train_cli import check_config


def snapshot(folder):
    """Every file under folder (recursively) with its bytes, symlinks as their target."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(folder))] = ("link", os.readlink(path))
        elif path.is_file():
            out[str(path.relative_to(folder))] = path.read_bytes()
    return out


def test_fresh_runs_in_a_folder_of_foreign_files_leave_every_one_untouched(tmp_path):
    home = tmp_path / "home"
    (home / "notes" / "sub").mkdir(parents=True)
    foreign = {"README.md": b"mine", "tiny.json": b"{}", ".gitignore": b"*", "sub/paper.pdf": b"%PDF",
               "model.pt": b"my own weights", "notes.tmp": b"draft", "previous": b"a file called previous"}
    for name, data in foreign.items():
        (home / "notes" / name).write_bytes(data)
    config = tiny_run_config(tmp_path, max_steps=2, eval_every=2)
    config["training"].update(runs_dir=str(home), run_name="notes")
    for _ in range(3):
        train_trm.main(config, progress=False)
        after = snapshot(home / "notes")
        for name, data in foreign.items():
            assert after[name] == data, name
    names = sorted(p.name for p in (home / "notes").iterdir())
    assert names == sorted([*{n.split("/")[0] for n in foreign}, "previous-1", "previous-2",
                            "best.pt", "config.json", "last.pt", "log.jsonl"])


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x", "a\\b", "tab\there", " padded", "bell\a"])
def test_run_name_must_be_one_plain_folder_name(name):
    config = tiny_run_config(__import__("pathlib").Path("/nonexistent"))
    config["training"]["run_name"] = name
    with pytest.raises(ConfigError, match=r"x.json: training.run_name: .* must be"):
        check_config(config, "x.json")


def test_files_with_run_names_but_no_run_are_refused_untouched(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text('{"my": "own config"}')
    (run_dir / "log.jsonl").write_text("my log\n")
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"holds config.json, log.jsonl but no run's config.json.*nothing was touched"):
        train_trm.main(tiny_run_config(tmp_path), progress=False)
    assert snapshot(run_dir) == before
    assert not (tmp_path / "data").exists()  # refused before any work


def test_symlinked_checkpoint_target_is_never_written(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=2, eval_every=2)
    train_trm.main(config, progress=False)
    run_dir = tmp_path / "runs" / "tiny"
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"not a checkpoint, not yours")
    real_last = run_dir / "last.pt"
    kept = tmp_path / "kept_last.pt"
    os.replace(real_last, kept)
    (run_dir / "best.pt").unlink()
    (run_dir / "best.pt").symlink_to(precious)  # a fresh run moves the link, not its target
    train_trm.main(config, progress=False)
    assert precious.read_bytes() == b"not a checkpoint, not yours"
    assert os.readlink(run_dir / "previous-1" / "best.pt") == str(precious)
    # resume through a symlinked last.pt: the new checkpoint replaces the link, the target stays
    os.replace(kept, tmp_path / "target_last.pt")
    (run_dir / "last.pt").unlink()
    (run_dir / "last.pt").symlink_to(tmp_path / "target_last.pt")
    target = (tmp_path / "target_last.pt").read_bytes()
    train_trm.main(tiny_run_config(tmp_path, max_steps=4, eval_every=2), resume=True, progress=False)
    assert (tmp_path / "target_last.pt").read_bytes() == target
    assert not (run_dir / "last.pt").is_symlink() and torch.load(run_dir / "last.pt", weights_only=True)["step"] == 4


def test_a_second_training_on_the_same_folder_stops_with_the_holder_named(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "start": rundir._process_start(holder.pid),
                "started": "2026-01-01 00:00:00"}
        (run_dir / "run.lock").write_text(json.dumps(lock))
        with pytest.raises(UserError, match=rf"in use by another training \(pid {holder.pid} .*delete .*run.lock"):
            train_trm.main(tiny_run_config(tmp_path, max_steps=2, eval_every=2), progress=False)
        assert json.loads((run_dir / "run.lock").read_text()) == lock  # the holder's lock is kept
    finally:
        holder.communicate(b"")
    # the holder has ended: its lock is stale and taken over; the run removes its own lock at the end
    train_trm.main(tiny_run_config(tmp_path, max_steps=2, eval_every=2), progress=False)
    assert not (run_dir / "run.lock").exists()
    assert (run_dir / "last.pt").exists()


def test_a_lock_from_another_host_is_not_taken_over(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(UserError, match="pid 1 on elsewhere"):
        train_trm.main(tiny_run_config(tmp_path), progress=False)


def test_lock_is_released_when_the_run_fails(tmp_path):
    def broken_step(model, slots, cfg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_trm.main(tiny_run_config(tmp_path, max_steps=3), progress=False, step_fn=broken_step)
    assert not (tmp_path / "runs" / "tiny" / "run.lock").exists()


def test_run_file_names():
    for name in ("last.pt", "best.pt", "config.json", "log.jsonl", "eval_test.json", "depth_test.png",
                 "last.pt.tmp", "last.pt.k2j4x8aa.tmp", "events.out.tfevents.1.host"):
        assert rundir.is_run_file(name), name
    for name in ("README.md", "model.pt", "notes.tmp", "config.yaml", "previous", "lastpt"):
        assert not rundir.is_run_file(name), name
