"""Data-parallel training under torchrun (2 CPU processes, gloo) and the compile flag."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import device
import train_trm
from test_train import tiny_run_config

REPO = Path(__file__).resolve().parents[1]


def torchrun(config_path: Path) -> subprocess.CompletedProcess:
    """train_trm.py in two CPU processes under torchrun, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "impl" / "train_trm.py"), "--config", str(config_path), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_match_one_process_with_the_combined_batch(tmp_path):
    steps = 6
    common = dict(max_steps=steps, eval_every=steps, log_every=1, dtype="float32")
    two = tiny_run_config(tmp_path, batch_size=8, run_name="two", **common)
    one = tiny_run_config(tmp_path, batch_size=16, run_name="one", **common)
    train_trm.main(one, progress=False)  # also builds the data cache both runs read

    config_path = tmp_path / "two.json"
    config_path.write_text(json.dumps(two))
    proc = torchrun(config_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "processes: 2" in proc.stdout
    assert proc.stdout.count("done: step") == 1  # only rank 0 reports

    run_two = tmp_path / "runs" / "two"
    assert sorted(p.name for p in run_two.iterdir()) == ["best.pt", "config.json", "last.pt", "log.jsonl"]
    a = torch.load(tmp_path / "runs" / "one" / "last.pt", weights_only=True)
    b = torch.load(run_two / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == steps
    # The first step's loss agrees to float precision; later ones drift by float-order noise ...
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / "runs" / run / "log.jsonl").read_text().splitlines())
               if r["kind"] == "train"] for run in ("one", "two")]
    assert len(losses[0]) == steps
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-6)  # same weights, same puzzles
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
    # ... and so do the weights, up to Adam turning float noise in near-zero gradients into
    # steps of up to lr: a wrong split of the batch moves nearly every weight by about lr per step
    # (an RMS difference near lr * steps), float-order noise moves a few weights by a few percent
    # of that (seen: RMS under 0.5%, largest 9%, on CPUs with different matmul kernels).
    move = one["training"]["lr"] * steps
    for key in a["model"]:
        diff = (b["model"][key] - a["model"][key]).abs()
        assert diff.pow(2).mean().sqrt() < 0.02 * move and diff.max() < 0.5 * move, key
    assert torch.equal(a["slots"]["inputs"], b["slots"]["inputs"])  # same puzzles in the same slots
    # Each process's carry went back into its own slots: per puzzle, the states differ by the
    # same float noise (about 1%), not by swapped or stale slots (about 100%).
    ya, yb = a["slots"]["y"], b["slots"]["y"]                     # (L, global batch, D)
    assert ((ya - yb).norm(dim=(0, 2)) / ya.norm(dim=(0, 2))).max() < 0.05


@pytest.mark.parametrize("arch", ["hrm", "transformer"])
def test_torchrun_trains_the_comparison_archs(tmp_path, arch):
    """Two processes on HRM (its Q-target pass and continue head) and the transformer: DDP runs
    their steps, and rank 0 alone reports."""
    config = tiny_run_config(tmp_path, batch_size=8, max_steps=3, eval_every=3, log_every=1, dtype="float32")
    config["model"].update(arch=arch, **({"depth": 2} if arch == "transformer" else {}))
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = torchrun(config_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "processes: 2" in proc.stdout and proc.stdout.count("done: step 3") == 1
    saved = torch.load(tmp_path / "runs" / "tiny" / "last.pt", weights_only=True)
    assert saved["model_config"]["arch"] == arch and saved["slots"]["inputs"].shape[0] == 16


def test_compile_flag_still_trains(tmp_path):
    blocker = device.compile_blocker(torch.device("cpu"))
    if blocker:  # the run would train uncompiled: nothing compiled to test here
        pytest.skip(f"torch.compile on CPU: {blocker}")
    config = tiny_run_config(tmp_path, max_steps=4, eval_every=4, compile=True)
    result = train_trm.main(config, progress=False)
    assert result["step"] == 4 and 0.0 <= result["token_acc"] <= 1.0
    ckpt = torch.load(tmp_path / "runs" / "tiny" / "last.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in ckpt["model"])  # weights saved from the plain module


def test_compile_without_a_cpu_compiler_trains_uncompiled_and_says_so(tmp_path, monkeypatch, capsys):
    """A recipe that asks for compile still runs on a machine with no C++ compiler: one line says
    why, and the run trains as an uncompiled one would."""
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    assert "no C++ compiler found" in device.compile_blocker(torch.device("cpu"))
    assert device.compile_blocker(torch.device("cuda")) == ""
    result = train_trm.main(tiny_run_config(tmp_path, max_steps=2, eval_every=2, compile=True), progress=False)
    assert result["step"] == 2
    assert "training.compile: no C++ compiler found" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "runs" / "tiny" / "last.pt", weights_only=True)
    plain = train_trm.main(tiny_run_config(tmp_path / "plain", max_steps=2, eval_every=2), progress=False)
    assert plain["step"] == 2
    reference = torch.load(tmp_path / "plain" / "runs" / "tiny" / "last.pt", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], reference["model"][k]) for k in reference["model"])


def test_more_processes_than_gpus_stop_at_start_with_one_line(monkeypatch, tmp_path, capsys):
    """torchrun with 2 processes on a machine with 1 GPU (simulated): rank 0 says what to do in one
    line; the other rank exits quietly with status 1; nothing is started or written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "a simulated GPU")
    config = tiny_run_config(tmp_path, device="auto")
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(train_trm.loop.ConfigError,
                       match=r"training.device: torchrun started 2 processes on this machine, but it has 1 GPU: one "
                             r"GPU per process. Start at most 1 \(--nproc_per_node=1\), or set training.device: \"cpu\""):
        train_trm.main(config, progress=False)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(SystemExit) as e:
        train_trm.main(config, progress=False)
    assert e.value.code == 1 and capsys.readouterr().err == ""
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")  # one process per machine: its GPU is there
    assert train_trm.loop.pick_device("auto", 0, local_processes=1)[0].type == "cuda"


def test_cuda_process_groups_also_take_cpu_tensors(monkeypatch):
    """On CUDA the loop's flags and log scalars are CPU tensors: the process group pairs nccl (GPU
    tensors) with gloo (CPU tensors), which nccl alone refuses; on CPU it is gloo."""
    import distributed
    started = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: started.append(backend))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    placement = distributed.Dist(rank=0, local_rank=0, world_size=2)
    distributed.init(placement, torch.device("cuda", 0))
    distributed.init(placement, torch.device("cpu"))
    distributed.init(distributed.Dist(), torch.device("cuda", 0))    # a single process starts nothing
    assert started == ["cpu:gloo,cuda:nccl", "gloo"]
