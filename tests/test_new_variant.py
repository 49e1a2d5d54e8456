"""A model variant added as one file, tests/model_damped.py: model.arch "damped" finds it by name,
its own key model.damping is set and checked like any other (no existing file edited), it trains,
and evaluate.py and solve.py build it from its checkpoint. With damping 1 it is TRM, bit for bit."""
import json
import re

import pytest
import torch

import evaluate
import solve
import train_trm
from arch import build_model, model_config
from checkpoint import load_trained
from model_damped import DampedTRM
from trm import TRM


def write(path, override: dict) -> str:
    path.write_text(json.dumps(override))
    return str(path)


def test_damping_one_is_trm_bit_for_bit():
    shape = dict(vocab_size=6, seq_len=16, hidden_size=32, T=2, n=2, N_sup=2)
    torch.manual_seed(0)
    plain = TRM(model_config(shape))
    torch.manual_seed(0)
    damped = build_model(model_config({**shape, "arch": "damped", "damping": 1.0}))
    assert type(damped) is DampedTRM
    inputs = torch.randint(1, 6, (3, 16), generator=torch.Generator().manual_seed(1))
    a, b = plain(inputs, plain.initial_carry(3)), damped(inputs, damped.initial_carry(3))
    assert torch.equal(a[1], b[1]) and torch.equal(a[0].y, b[0].y)
    damped.config.damping = 0.5
    assert not torch.equal(a[1], damped(inputs, damped.initial_carry(3))[1])


def test_the_variant_trains_and_its_checkpoint_is_evaluated_and_solved(tmp_path, capsys):
    path = write(tmp_path / "damped.json", {
        "model": {"arch": "damped", "damping": 0.5, "hidden_size": 32, "T": 2, "n": 2, "N_sup": 2},
        "data": {"grid_size": 4, "n_train": 300, "n_val": 0, "n_test": 32, "givens": [8, 10],
                 "data_dir": str(tmp_path / "data")},
        "training": {"runs_dir": str(tmp_path / "runs"), "run_name": "damped", "max_steps": 120, "eval_every": 120,
                     "log_every": 20, "warmup_steps": 10, "batch_size": 32, "device": "cpu", "dtype": "float32"}})
    result = train_trm.cli(["--config", path, "--no-progress"])
    log = [json.loads(line) for line in (tmp_path / "runs" / "damped" / "log.jsonl").read_text().splitlines()]
    losses = [r["ce_loss"] for r in log if r["kind"] == "train"]
    assert losses[-1] < 0.8 * losses[0] and result["token_acc"] > 0.5
    best = tmp_path / "runs" / "damped" / "best.pt"
    model, ckpt, _ = load_trained(best, torch.device("cpu"))
    assert type(model) is DampedTRM and model.config.damping == 0.5 and ckpt["config"]["model"]["damping"] == 0.5
    out = evaluate.main(["--checkpoint", str(best), "--depth", "2", "--out", str(tmp_path / "eval"), "--no-progress"])
    assert out["metrics"]["n"] == 32
    assert solve.main(["--checkpoint", str(best), "12.4...2....4..1"]) == 0


@pytest.mark.parametrize("model,message", [
    ({"arch": "damped", "damping": 0.0}, "model.damping: 0.0 must be in (0, 1]"),
    ({"arch": "damped", "damping": "half"}, "model.damping: expected float, got str 'half'"),
    ({"damping": 0.5}, "unknown key 'model.damping'"),                     # a key of arch damped, not of trm
    ({"arch": "dampd"}, "model.arch: 'dampd' is not one of trm, separate_nets, single_z, z_slots, hrm, "
                        "transformer, and there is no model_dampd.py"),
])
def test_its_key_is_checked_naming_the_file_and_key(tmp_path, model, message):
    path = write(tmp_path / "bad.json", {"model": model})
    with pytest.raises(SystemExit, match=re.escape(f"error: {path}: {message}")):
        train_trm.cli(["--config", path, "--check"])
