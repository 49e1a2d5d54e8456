"""The paper recipe files: they load, name the paper's setup, and run on a CPU with small overrides."""
from pathlib import Path

import pytest

import train_trm
from config import load_config, merge_config
from test_data_sudoku import REPO as HF_REPO, sample_rows, write_hub_cache
from train_cli import check_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, mlp_t", [("paper_sudoku_mlp.json", True), ("paper_sudoku_att.json", False)])
def test_paper_recipe_runs_two_steps_on_cpu(name, mlp_t, tmp_path, monkeypatch):
    config = load_config(ROOT / name, train_trm.RUN_CONFIG)
    check_config(config, name)
    m, d, t = config["model"], config["data"], config["training"]
    assert (m["hidden_size"], m["T"], m["n"], m["N_sup"], m["n_prefix"], m["mlp_t"]) == (512, 3, 6, 16, 16, mlp_t)
    assert m["prefix_learned"] == "first" and (mlp_t or (m["num_heads"], m["pos_encoding"]) == (8, "rope"))
    assert (t["batch_size"], t["lr"], t["warmup_steps"], t["weight_decay"], t["grad_clip"]) == (768, 1e-4, 2000, 1.0, 0.0)
    assert (t["optimizer"], t["decay_all"], t["loss"], t["ema_decay"], t["max_steps"]) == \
        ("adam_atan2", True, "stablemax", 0.999, 65000)
    assert d["source"] == "hf" and d["train_subset"] - d["val_subset"] == 1000 and d["test_subset"] == 0

    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a fake hub, no network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:3])
    small = merge_config(config, {
        "data": {"repo_id": HF_REPO, "train_subset": 8, "val_subset": 2, "data_dir": str(tmp_path / "data")},
        "training": {"batch_size": 4, "max_steps": 2, "eval_every": 2, "eval_batch_size": 8, "compile": False,
                     "device": "cpu", "runs_dir": str(tmp_path / "runs")}}, "small overrides")
    result = train_trm.main(small, progress=False)
    assert result["step"] == 2 and result["n"] == 3
