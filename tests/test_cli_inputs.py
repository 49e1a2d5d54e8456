"""Bad command-line values and config values of every tool: each ends in one line `error: ...`
naming the option, key or file, before any work (no traceback, no silent empty result)."""
import json
import re

import pytest

import bench
import compare_jepa
import data_maze
import data_sudoku
import evaluate
import solve
import study
import train_trm
import ttc
from config import load_config, parse_json
from errors import ConfigError


def one_line_exit(main, argv: list[str]) -> str:
    """The message main(argv) exits with: one line starting with 'error: '."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = e.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message


def expect(main, argv: list[str], expected: str) -> None:
    message = one_line_exit(main, argv)
    assert re.search(expected, message), message


@pytest.mark.parametrize("argv, expected", [
    (["--hidden", "abc"], r"^error: --hidden: 'abc' is not a comma-separated list of integers"),
    (["--hidden", ""], r"--hidden: '' is not a comma-separated list of integers"),
    (["--hidden", "128,0"], r"--hidden: '128,0' must hold integers >= 1 only"),
    (["--batch", "0"], r"^error: --batch: 0 must be >= 1$"),
    (["--T", "0"], r"--T: 0 must be >= 1"),
    (["--repeats", "0"], r"--repeats: 0 must be >= 1"),
    (["--steps-per-repeat", "0"], r"--steps-per-repeat: 0 must be >= 1"),
    (["--infer-steps", "-1"], r"--infer-steps: -1 must be >= 1"),
    (["--prefix", "-1"], r"--prefix: -1 must be >= 0"),
    (["--threads", "-2"], r"--threads: -2 must be >= 0"),
    (["--variants", "mlp_t,atention"], r"--variants: 'atention' is not one of mlp_t, attention"),
    (["--dtypes", "int64"], r"--dtypes: 'int64' is not a floating-point dtype"),
    (["--dtypes", "float32,"], r"--dtypes: '' is not a torch dtype"),
    (["--hidden", "130", "--variants", "attention"], r"--hidden: 130 hidden_size / num_heads must be even for rope"),
    (["--json", "{tmp}"], r"--json: '.*' is a folder; give a file name"),
    (["--json", "{tmp}/no/such/rows.json"], r"--json: .* cannot be written: the folder .*/no/such does not exist"),
])
def test_bench_options(tmp_path, argv, expected):
    expect(bench.main, [a.replace("{tmp}", str(tmp_path)) for a in argv], expected)


@pytest.mark.parametrize("argv, expected", [
    (["generate", "--givens", "10", "6"],
     r"^error: data.givens: \[10, 6\] must satisfy 0 <= lo <= hi <= 36 for 6x6 \(option --givens\)$"),
    (["generate", "--givens", "-1", "5"], r"data.givens: \[-1, 5\] must satisfy .*\(option --givens\)"),
    (["generate", "--n-train", "0"], r"^error: data.n_train: 0 must be >= 1 \(option --n-train\)$"),
    (["generate", "--n-test", "0"], r"data.n_test: 0 must be >= 1 \(option --n-test\)"),
    (["generate", "--n-val", "-1"], r"data.n_val: -1 must be >= 0 \(option --n-val\)"),
    (["generate", "--min-rating", "-1"], r"data.min_rating: -1 must be >= 0 \(option --min-rating\)"),
    (["generate", "--min-rating", "5", "--max-rating", "2"],
     r"data.max_rating: 2 must be -1 \(no maximum\) or >= data.min_rating \(5\) \(option --max-rating\)"),
    (["generate", "--seed", "-1"], r"data.seed: -1 must be in 0..4294967295 .*\(option --seed\)"),
    (["generate", "--size", "4", "--givens", "8", "10", "--n-train", "9000000"],
     r"data.n_train: 9000000 training.* cannot be met.*\(option --n-train\)"),
    (["generate", "--data-dir", "{tmp}/file"], r"--data-dir: '.*file' cannot be a folder: .*file is a file"),
    (["bench", "--scale", "0"], r"^error: --scale: 0.0 must be a finite number > 0$"),
    (["bench", "--scale", "nan"], r"--scale: nan must be a finite number > 0"),
    (["bench", "--workers", "-1"], r"--workers: -1 must be >= 0"),
    (["bench", "--seed", "4294967296"], r"--seed: 4294967296 must be in 0..4294967295"),
])
def test_data_sudoku_options(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)  # the default --data-dir is ./data
    (tmp_path / "file").write_text("")
    expect(data_sudoku.main, [a.replace("{tmp}", str(tmp_path)) for a in argv], expected)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("argv, expected", [
    (["generate", "--size", "2"], r"^error: data.maze.size: 2 is not in 4..30 \(option --size\)$"),
    (["generate", "--n-train", "0"], r"data.maze.n_train: 0 must be >= 1 \(option --n-train\)"),
    (["generate", "--n-val", "-1"], r"data.maze.n_val: -1 must be >= 0 \(option --n-val\)"),
    (["generate", "--min-path-len", "0"],
     r"data.maze.min_path_len: 0 must be in 1..143 for 12x12 .*\(option --min-path-len\)"),
    (["generate", "--wall-density", "1"], r"data.maze.wall_density: 1.0 must be in \[0, 1\) \(option --wall-density\)"),
    (["generate", "--seed", "-1"], r"data.seed: -1 must be in 0..4294967295 .*\(option --seed\)"),
    (["generate", "--data-dir", "{tmp}/file"], r"--data-dir: .* is a file"),
    (["bench", "--sizes", "8", "31"], r"^error: --sizes: 31 is not in 4..30$"),
    (["bench", "--scale", "-1"], r"--scale: -1.0 must be a finite number > 0"),
    (["bench", "--workers", "-1"], r"--workers: -1 must be >= 0"),
])
def test_data_maze_options(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)  # the default --data-dir is ./data
    (tmp_path / "file").write_text("")
    expect(data_maze.main, [a.replace("{tmp}", str(tmp_path)) for a in argv], expected)
    assert not (tmp_path / "data").exists()


STUDY = {"name": "x", "budget": {"steps": 2}}


@pytest.mark.parametrize("text, expected", [
    ("[" * 100_000 + "]" * 100_000, r"JSON nested more than 100 levels deep"),
    (b"\x80\x81", r"not a UTF-8 text file \(byte 0"),
    ({**STUDY, "seeds": [-1]}, r"seeds: -1 must be in 0..4294967295"),
    ({**STUDY, "seeds": [1, 1]}, r"seeds: 1 appears twice"),
    ({**STUDY, "seeds": [True]}, r"seeds: expected a non-empty list of integers"),
    ({**STUDY, "budget": {"steps": 2.5}}, r"budget: expected one of .* \(S an integer\), got \{'steps': 2.5\}"),
    ({**STUDY, "budget": {"minutes": True}}, r"budget: expected one of"),
    ({**STUDY, "depth": {"steps": -1}}, r"depth: expected \{\"steps\": K, \"limit\": N\} with integers >= 0"),
    ({**STUDY, "depth": {"step": 3}}, r"depth: expected"),
    ({**STUDY, "grid": [1]}, r"grid: expected a JSON object, got list \[1\]"),
    ({**STUDY, "base": []}, r"base: expected a JSON object, got list"),
    (None, r"cannot read study file \(No such file or directory\)"),
])
def test_study_files(tmp_path, text, expected):
    path = tmp_path / "study.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text if isinstance(text, str) else json.dumps(text))
    expect(study.main, [str(path)], rf"^error: {re.escape(str(path))}: {expected}")


def test_study_out_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    expect(study.main, ["x.json", "--out", str(tmp_path / "out" / "sub")],
           r"--out: .* cannot be a folder: .*out is a file")


@pytest.mark.parametrize("tool, argv, expected", [
    (tool, argv, expected) for tool in (ttc, evaluate, solve) for argv, expected in [
        (["--seed", "-1"], r"^error: --seed: -1 must be in 0..4294967295"),
        (["--sigma", "inf"], r"--sigma: inf must be a finite number"),
    ]] + [(tool, ["--first-round", "-1"], r"--first-round: -1 must be >= 0 \(0: off\)") for tool in (ttc, evaluate)])
def test_sweep_evaluate_and_solve_options(tool, argv, expected):
    expect(tool.main, argv + (["1234"] if tool is solve else []), expected)


@pytest.mark.parametrize("argv, expected", [
    (["--minutes", "0"], r"^error: --minutes: 0.0 must be > 0$"),
    (["--minutes", "nan"], r"--minutes: nan must be a finite number"),
    (["--seeds", "-1"], r"--seeds: -1 must be in 0..4294967295"),
    (["--seeds", "0", "0"], r"--seeds: 0 is given twice"),
    (["--weights", "-1"], r"--weights: -1.0 must be a finite number >= 0"),
    (["--weights", "1", "1"], r"--weights: 1.0 is given twice"),
    (["--nostop-weight", "inf"], r"--nostop-weight: inf must be a finite number"),
    (["--out", "{tmp}/file"], r"--out: .* cannot be a folder: .*file is a file"),
    (["--config", "{tmp}/deep.json"], r"deep.json: JSON nested more than 100 levels deep"),
    (["--config", "{tmp}/latin1.json"], r"latin1.json: not a UTF-8 text file \(byte 1"),
    (["--config", "{tmp}/list.json"], r"list.json: the top level must be a JSON object, got list"),
])
def test_compare_jepa_options(tmp_path, argv, expected):
    (tmp_path / "file").write_text("")
    (tmp_path / "deep.json").write_text("{\"a\": " * 100_000 + "1" + "}" * 100_000)
    (tmp_path / "latin1.json").write_bytes(b"{\xe9}")
    (tmp_path / "list.json").write_text("[1]")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    expect(compare_jepa.main, args + (["--out", str(tmp_path / "out")] if "--out" not in args else []), expected)
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("override, expected", [
    ({"training": {"seed": -1}}, r"training.seed: -1 must be in 0..4294967295 \(numpy's seed range\)"),
    ({"training": {"seed": 2**32}}, r"training.seed: 4294967296 must be in 0..4294967295"),
    ({"data": {"seed": -1}}, r"data.seed: -1 must be in 0..4294967295"),
    ({"training": {"test_time": {"seed": -5}}}, r"training.test_time.seed: -5 must be in 0..4294967295"),
    ({"training": {"beta1": -0.1}}, r"training.beta1: -0.1 must be in \[0, 1\)"),
    ({"training": {"beta2": 1.0}}, r"training.beta2: 1.0 must be in \[0, 1\)"),
    ({"training": {"weight_decay": -1}}, r"training.weight_decay: -1.0 must be >= 0"),
    ({"training": {"halt_loss_weight": -1}}, r"training.halt_loss_weight: -1.0 must be >= 0"),
    ({"training": {"eval_N_sup": -1}}, r"training.eval_N_sup: -1 must be >= 0 \(0: model.N_sup\)"),
    ({"model": {"N_sup": 2**64}}, r"model.N_sup: 18446744073709551616 is out of range \(integers must be within"),
    ({"data": {"sources": [{"seed": -1}]}}, r"data.sources\[0\]: data.seed: -1 must be in 0..4294967295"),
])
def test_config_values_numpy_and_torch_refuse(tmp_path, override, expected):
    path = tmp_path / "over.json"
    path.write_text(json.dumps(override))
    expect(train_trm.cli, ["--config", str(path), "--check"], rf"^error: {re.escape(str(path))}: {expected}")


@pytest.mark.parametrize("text, expected", [
    ("[" * 100_000 + "]" * 100_000, r"over.json: JSON nested more than 100 levels deep"),
    ('{"model": ' * 100_000 + "1" + "}" * 100_000, r"over.json: JSON nested more than 100 levels deep"),
    ('{"data": {"sources": ' + "[" * 101 + "]" * 101 + "}}", r"over.json: JSON nested more than 100 levels deep"),
    ('{"training": {"seed": ' + "9" * 5000 + "}}",
     r"over.json: training.seed: 999999999999\.\.\. \(5000 digits\) is out of range"),
])
def test_config_json_that_python_cannot_hold_is_named(tmp_path, text, expected):
    path = tmp_path / "over.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):  # --config, --resume's file, evaluation --data-config
        load_config(path, train_trm.RUN_CONFIG)
    expect(train_trm.cli, ["--config", str(path), "--check"], expected)


def test_json_within_the_limits_parses():
    assert parse_json("[" * 100 + "]" * 100, "x.json") is not None
    assert parse_json('{"a": 9223372036854775807}', "x.json") == {"a": 2**63 - 1}


@pytest.mark.parametrize("main, argv", [
    (bench.main, ["--batch", "abc"]),
    (data_sudoku.main, ["generate", "--n-train", "x"]),
    (data_maze.main, ["bench", "--scale", "fast"]),
    (compare_jepa.main, ["--seeds", "one"]),
    (ttc.main, ["--steps", "a,b"]),
])
def test_non_numbers_are_argparse_usage_errors(main, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: argument" in err.strip().splitlines()[-1]
