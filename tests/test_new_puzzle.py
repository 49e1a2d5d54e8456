"""A puzzle type added as one file, tests/data_sort.py: train_trm.py trains it with data.puzzle
"sort" and its own data.sort defaults (no existing file edited), its section is checked like any
other, and evaluate.py and solve.py work on its checkpoint without any optional hook."""
import copy
import json
import re

import pytest

import evaluate
import puzzles
import solve
import train_trm
from config import merge_config
from train_cli import check_config


def write(path, override: dict) -> str:
    path.write_text(json.dumps(override))
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sort")
    path = write(tmp / "sort.json", {
        "model": {"hidden_size": 32, "T": 1, "n": 2, "N_sup": 2},
        "data": {"puzzle": "sort", "data_dir": str(tmp / "data"), "sort": {"n_train": 1000, "n_test": 128}},
        "training": {"runs_dir": str(tmp / "runs"), "run_name": "sort", "max_steps": 250, "eval_every": 250,
                     "log_every": 50, "warmup_steps": 20, "device": "cpu", "dtype": "float32"}})
    return {"tmp": tmp, "result": train_trm.cli(["--config", path, "--no-progress"]), "run_dir": tmp / "runs" / "sort"}


def test_the_new_puzzle_type_is_learned(trained):
    assert trained["result"]["exact_acc"] > 0.5          # copying the input is right for 2% of sequences


@pytest.mark.parametrize("section,message", [
    ({"lenght": 8}, "unknown key 'data.sort.lenght' (did you mean 'length'?)"),
    ({"length": "8"}, "data.sort.length: expected int, got str '8'"),
    ({"length": 0}, "data.sort.length: 0 must be >= 1"),
])
def test_its_section_is_checked_naming_the_key(tmp_path, section, message):
    path = write(tmp_path / "bad.json", {"data": {"puzzle": "sort", "sort": section}})
    with pytest.raises(SystemExit, match=re.escape(f"error: {path}: {message}")):
        train_trm.cli(["--config", path, "--check"])


def test_an_unknown_puzzle_type_says_which_file_to_write(tmp_path):
    path = write(tmp_path / "x.json", {"data": {"puzzle": "sortt"}})
    with pytest.raises(SystemExit, match=r"data.puzzle: 'sortt' is not a puzzle type .* write impl/data_sortt.py"):
        train_trm.cli(["--config", path, "--check"])


def test_its_defaults_reach_check_config_resume_and_data_sources(trained, tmp_path):
    config = copy.deepcopy(train_trm.RUN_CONFIG)
    config["data"]["puzzle"] = "sort"
    check_config(config)                                                     # no data.sort: its defaults
    base = merge_config(train_trm.RUN_CONFIG, {"training": {"runs_dir": str(trained["tmp"] / "runs"),
                                                            "run_name": "sort"}}, "test")
    resumed = train_trm.cli(["--resume", "--check"], base=base)["config"]      # the config saved in last.pt
    assert resumed["data"]["sort"] == {"length": 6, "digits": 4, "n_train": 1000, "n_test": 128}
    path = write(tmp_path / "mix.json", {"data": {"sources": [{"puzzle": "sort", "sort": {"length": 5}},
                                                              {"puzzle": "sort"}]}})
    data = train_trm.cli(["--config", path, "--check"])["config"]["data"]
    assert data["sort"]["length"] == 6 and data["sources"][0]["sort"] == {"length": 5}  # defaults, then the entry's
    bad = write(tmp_path / "bad.json", {"data": {"sources": [{"puzzle": "sort", "sort": {"digits": 0}}]}})
    with pytest.raises(SystemExit, match=re.escape("data.sources[0]: data.sort.digits: 0 must be >= 1")):
        train_trm.cli(["--config", bad, "--check"])


def test_evaluate_and_solve_work_without_its_optional_hooks(trained, tmp_path, capsys):
    best = str(trained["run_dir"] / "best.pt")
    fewer = write(tmp_path / "fewer.json", {"data": {"sort": {"n_test": 64}}})
    out = evaluate.main(["--checkpoint", best, "--data-config", fewer, "--depth", "3", "--out", str(tmp_path),
                         "--no-progress", "--dtype", "float32"])
    assert out["metrics"]["n"] == 64 and "validity" not in out["metrics"] and len(out["depth"]) == 3
    assert solve.main(["--checkpoint", best, "--dtype", "float32", "3 1 4 1 2 2"]) == 0
    printed = capsys.readouterr().out
    answer = printed.split("halting confidence")[1].splitlines()[1].split()
    assert len(answer) == 6 and all(1 <= int(t) <= 4 for t in answer)
    assert "valid: - (no rule check: the puzzle module has no valid_fn)" in printed
    assert "matches: - (no reference answer: the puzzle module has no reference)" in printed
    with pytest.raises(SystemExit, match=r"puzzle: expected 6 token ids in 0..4, got 2: 3 9"):
        solve.main(["--checkpoint", best, "3 9"])


def test_a_misnamed_hook_is_reported(tmp_path, monkeypatch, capsys):
    (tmp_path / "data_misnamed.py").write_text("def augment(inputs, labels, meta, rng):\n    return inputs, labels\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert puzzles.find_module("misnamed") is not None
    assert "augment is not a name of the puzzle contract, so nothing calls it (did you mean augment_examples?" \
        in capsys.readouterr().err
