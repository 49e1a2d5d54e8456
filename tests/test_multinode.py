"""torchrun across machines: two torchrun agents on this host as two "nodes" (one CPU process each,
gloo), meeting through a c10d rendezvous on localhost, as two machines would; then the run goes on
after one node is lost, on the other alone."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import train_trm
from test_train import tiny_run_config

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)
    return env


def agent(config_path: Path, port: int, host: bool, *extra: str) -> subprocess.Popen:
    """One node's torchrun agent: --nnodes 2, one process, the c10d store on localhost:port (kept by
    the node that hosts it, as the first machine of a cluster would)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes",
           "--rdzv-conf", f"is_host={int(host)}", "--max-restarts", "0",
           str(REPO / "impl" / "train_trm.py"), "--config", str(config_path), "--no-progress", *extra]
    return subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_nodes_match_one_process_with_the_combined_batch_and_resume_on_one_node(tmp_path):
    steps = 6
    common = dict(max_steps=steps, eval_every=steps, log_every=1, dtype="float32")
    one = tiny_run_config(tmp_path, batch_size=16, run_name="one", **common)
    two = tiny_run_config(tmp_path, batch_size=8, run_name="two", **common)
    train_trm.main(one, progress=False)                             # also builds the data both runs read
    config_path = tmp_path / "two.json"
    config_path.write_text(json.dumps(two))

    port = free_port()
    nodes = [agent(config_path, port, host=True), agent(config_path, port, host=False)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "processes: 2" in "".join(outputs) and "".join(outputs).count("done: step") == 1  # rank 0 alone reports

    a = torch.load(tmp_path / "runs" / "one" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "runs" / "two" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == steps
    assert torch.equal(a["slots"]["inputs"], b["slots"]["inputs"])  # the same puzzles in the same slots
    # as tests/test_distributed.py's standalone run: equal up to float-order noise (see there)
    move = one["training"]["lr"] * steps
    for key in a["model"]:
        diff = (b["model"][key] - a["model"][key]).abs()
        assert diff.pow(2).mean().sqrt() < 0.02 * move and diff.max() < 0.5 * move, key

    # One node is lost: the run goes on from its last.pt on the other, with both processes there
    # (the global batch, and so the checkpoint's slots, stay the same).
    more = {**two, "training": {**two["training"], "max_steps": steps + 2}}
    config_path.write_text(json.dumps(more))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "impl" / "train_trm.py"), "--config", str(config_path), "--no-progress",
                           "--resume"], env=clean_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resumed from {tmp_path / 'runs' / 'two' / 'last.pt'} at step {steps}" in proc.stdout
    assert torch.load(tmp_path / "runs" / "two" / "last.pt", weights_only=True)["step"] == steps + 2

