"""The CUDA path: a short run in bf16 and compiled, evaluation, solve, and a GPU checkpoint used on
the CPU (loaded, evaluated, resumed). Skipped, with the reason shown, where there is no CUDA."""
import json

import numpy as np
import pytest
import torch

import checkpoint
import evaluate
import puzzles
import solve
import train_trm
from metrics import evaluate as evaluate_model
from test_train import tiny_run_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none found here)")


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu")
    config = tiny_run_config(tmp, max_steps=20, eval_every=10, device="cuda", dtype="bfloat16")
    result = train_trm.main(config, progress=False)
    return {"tmp": tmp, "config": config, "result": result, "run_dir": tmp / "runs" / "tiny"}


def test_a_short_bf16_run_on_the_gpu_learns_and_saves(gpu_run):
    run_dir = gpu_run["run_dir"]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["training"]["device"] == "cuda"
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train[-1]["ce_loss"] < train[0]["ce_loss"]
    assert gpu_run["result"]["token_acc"] > 0.3
    ckpt = torch.load(run_dir / "last.pt", weights_only=True, map_location="cpu")
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())  # saved as CPU tensors


def test_compiled_run_on_the_gpu(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=4, eval_every=4, device="cuda", compile=True)
    result = train_trm.main(config, progress=False)
    assert result["step"] == 4 and 0.0 <= result["token_acc"] <= 1.0
    ckpt = torch.load(tmp_path / "runs" / "tiny" / "last.pt", weights_only=True)
    assert not any("_orig_mod" in key for key in ckpt["model"])


def test_gpu_checkpoint_evaluates_on_cpu_as_on_gpu(gpu_run, tmp_path):
    """The same weights give the same answers on both devices up to bf16/fp32 rounding: compared in
    fp32 on both, where the answers (argmax) agree on nearly every position."""
    data = puzzles.load(gpu_run["config"]["data"], progress=False)
    inputs = np.array(data.test.inputs)
    labels = data.test.labels_for_training(np.arange(data.test.n_examples))
    scores = []
    for device in (torch.device("cuda"), torch.device("cpu")):
        model, _, _ = checkpoint.load_trained(gpu_run["run_dir"] / "last.pt", device)
        scores.append(evaluate_model(model, inputs, labels, 4, 64, device, torch.float32))
    assert abs(scores[0]["token_acc"] - scores[1]["token_acc"]) < 0.01


def test_evaluate_and_solve_on_the_gpu(gpu_run, tmp_path, capsys):
    out = evaluate.main(["--checkpoint", str(gpu_run["run_dir"] / "last.pt"), "--out", str(tmp_path), "--device",
                         "cuda", "--depth", "5", "--no-progress"])
    assert out["metrics"]["n"] == 64 and len(out["depth"]) == 5
    assert solve.main(["--checkpoint", str(gpu_run["run_dir"] / "last.pt"), "--device", "cuda",
                       "12.4...2....4..1"]) == 0
    assert "answer after" in capsys.readouterr().out


def test_a_gpu_run_resumes_on_the_cpu(gpu_run):
    config = json.loads(json.dumps(gpu_run["config"]))
    config["training"].update(device="cpu", max_steps=24)
    result = train_trm.main(config, resume=True, progress=False)
    assert result["step"] == 24
    assert torch.load(gpu_run["run_dir"] / "last.pt", weights_only=True)["step"] == 24
