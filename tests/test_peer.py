"""A torchrun process that dies: the others end with one line naming it and the last checkpoint,
not with gloo's "Connection reset by peer" traceback."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distributed
import loop
from errors import LostProcess
from test_train import tiny_run_config

IMPL = Path(__file__).resolve().parents[1] / "impl"

# Test-only: train_trm.py's command line, where rank 1 kills itself (SIGKILL: no exception, no
# clean-up, as the kernel's out-of-memory killer or a crash) as it starts step DIE_AT + 1.
LAUNCHER = r'''
import os, signal, sys
sys.path.insert(0, os.environ["IMPL"])
import loop, train_trm

real_train_step = loop.train_step


def train_step(state, training, last_path):
    if os.environ["RANK"] == "1" and state.step == int(os.environ["DIE_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_train_step(state, training, last_path)


loop.train_step = train_step
train_trm.cli(sys.argv[1:])
'''


def test_a_lost_process_ends_the_others_with_one_line_naming_it_and_the_last_checkpoint(tmp_path):
    config = tiny_run_config(tmp_path, batch_size=8, max_steps=10, eval_every=10, ckpt_every=2, log_every=1,
                             dtype="float32")
    config_path, launcher = tmp_path / "config.json", tmp_path / "launcher.py"
    config_path.write_text(json.dumps(config))
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IMPL": str(IMPL), "DIE_AT": "3"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(launcher), "--config", str(config_path), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)
    run_dir = tmp_path / "runs" / "tiny"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.fullmatch(
        re.escape("error: lost contact with rank 1 after step 3 (gloo: Connection ") + "(reset|closed)" +
        re.escape(f" by peer); the last checkpoint is {run_dir}/last.pt (step 2): resume with torchrun --standalone "
                  f"--nproc_per_node=2 {launcher} --config {config_path} --no-progress --resume"), lines[0]), \
        proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "[rank0]" not in proc.stderr and "GLHF" not in proc.stderr  # no worker traceback, no raw gloo message
    assert "step      3 |" in proc.stdout and "step      4 |" not in proc.stdout
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 2
    assert not (run_dir / "run.lock").exists()  # rank 0 let go of the run folder


GLOO = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:48877: Connection reset "
        "by peer. This is typically caused by a remote worker hanging or bugs in the application. GLHF!")


def test_the_line_of_a_lost_process_while_starting_or_resuming(monkeypatch):
    """Four processes: the lost one cannot be named; two: it is the other one. Other errors, and
    any error of a single process, keep their traceback."""
    monkeypatch.setattr(sys, "argv", ["impl/train_trm.py", "--config", "x.json", "--resume"])
    last = Path("runs/x/last.pt")
    cases = [(distributed.Dist(0, 0, 4, 4), False, "lost contact with another process while starting (gloo: Connection "
              "reset by peer); no checkpoint was written: start again with torchrun --standalone --nproc_per_node=4 "
              "impl/train_trm.py --config x.json"),
             (distributed.Dist(1, 0, 2, 1), True, "lost contact with rank 0 while starting (gloo: Connection reset "
              "by peer); runs/x/last.pt is as it was: resume with torchrun --nnodes=2 ... --nproc_per_node=1 "
              "impl/train_trm.py --config x.json --resume")]
    for d, resume, expected in cases:
        with pytest.raises(LostProcess) as e, loop.lost_process_named(d, last, resume):
            raise RuntimeError(GLOO)
        assert str(e.value) == expected
    for d, error in ((distributed.Dist(0, 0, 2, 2), RuntimeError("CUDA out of memory")),
                     (distributed.Dist(), RuntimeError(GLOO))):
        with pytest.raises(RuntimeError) as e, loop.lost_process_named(d, last, False):
            raise error
        assert e.value is error
