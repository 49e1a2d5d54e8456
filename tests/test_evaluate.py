"""Evaluation and solving: metrics on hand-made answers, the depth benchmark, the evaluate and
solve command lines on a tiny model trained once for this module."""
import copy
import csv
import importlib.util
import json

import numpy as np
import pytest
import torch

import checkpoint
import evaluate
import metrics
import puzzles
import solve
import sudoku_gen
import sudoku_rules
import sudoku_solver
import train_trm
from trm import IGNORE_LABEL
from train_trm import RUN_CONFIG

# -- metrics on hand-made answers -----------------------------------------------------------------

SOLUTION = "1234341221434321"     # a valid 4x4 grid
SWAPPED = "2134342112434312"      # the same with digits 1 and 2 exchanged: also valid
ROW_SWAP = "1234431221434321"     # SOLUTION with cells 4 and 5 exchanged: rows fine, columns broken


def tokens(text: str) -> np.ndarray:
    return np.array([1 if ch == "." else int(ch) + 1 for ch in text], dtype=np.uint8)


def hand_made():
    first_row = "1234" + "." * 12
    inputs = np.stack([tokens(first_row), tokens("." * 16), tokens(first_row), tokens(first_row)])
    labels = np.stack([tokens(SOLUTION)] * 4)
    answers = np.stack([
        tokens(SOLUTION),    # A: exact
        tokens(SWAPPED),     # B: valid (no givens to keep) but not the label: 8 cells differ, all blank
        tokens(ROW_SWAP),    # C: keeps the givens, breaks columns 1 and 2: 2 blank cells wrong
        tokens(SWAPPED),     # D: a valid grid that changes givens 1 and 2: 8 cells differ, 6 of them blank
    ])
    confidence = np.array([0.9, 0.8, 0.2, 0.6])   # halting right for A (yes, exact) and C (no, not exact)
    steps = np.array([1, 2, 3, 4])
    ratings = np.array([0, 0, 1, 1])
    return inputs, labels, answers, confidence, steps, ratings


def valid4(inputs, answers):
    return sudoku_rules.valid_grids(inputs, answers, 4)


def test_metrics_on_hand_made_answers():
    inputs, labels, answers, confidence, steps, ratings = hand_made()
    by = {"by_rating": ratings, "by_givens": (inputs > sudoku_rules.BLANK).sum(axis=1)}
    m = metrics.puzzle_metrics(inputs, labels, answers, confidence, steps, valid_fn=valid4, breakdowns=by)
    assert m["token_acc"] == (16 + 8 + 14 + 8) / 64
    assert m["blank_acc"] == (12 + 8 + 10 + 6) / (12 + 16 + 12 + 12)
    assert m["exact_acc"] == 0.25
    assert m["validity"] == 0.5                     # A and B (D changes givens, C breaks columns)
    assert m["halt_acc"] == 0.5
    assert m["avg_steps"] == 2.5
    assert m["n"] == 4
    assert m["by_rating"] == {"0": {"n": 2, "exact_acc": 0.5, "blank_acc": 20 / 28, "validity": 1.0},
                              "1": {"n": 2, "exact_acc": 0.0, "blank_acc": 16 / 24, "validity": 0.0}}
    assert m["by_givens"]["0"] == {"n": 1, "exact_acc": 0.0, "blank_acc": 0.5, "validity": 1.0}
    assert m["by_givens"]["4"]["n"] == 3 and m["by_givens"]["4"]["exact_acc"] == pytest.approx(1 / 3)
    as_torch = metrics.puzzle_metrics(*(torch.from_numpy(a) for a in (inputs, labels, answers, confidence, steps)),
                                      valid_fn=valid4)
    assert as_torch == {k: v for k, v in m.items() if not k.startswith("by_")}
    assert all(type(v) in (float, int) for v in as_torch.values())
    json.dumps(m)                                   # plain numbers and string keys only


def test_vectorised_validity_matches_the_one_grid_checker():
    rng = np.random.default_rng(0)
    generated = sudoku_gen.generate_puzzles(6, 40, (14, 20), seed=1, workers=1, progress=False)
    puzzles, answers = generated["inputs"], generated["labels"].copy()
    for i in range(0, 40, 2):                       # break half of them: one cell, or a given
        answers[i, rng.integers(36)] = rng.integers(2, 8)
    for i in range(1, 40, 4):                       # relabel some digits: valid, but givens change
        answers[i] = np.array([0, 1, 3, 2, 4, 5, 6, 7], dtype=np.uint8)[answers[i]]
    expected = [sudoku_rules.is_valid_solution(p, a, 6) for p, a in zip(puzzles, answers)]
    assert sudoku_rules.valid_grids(puzzles, answers, 6).tolist() == expected
    assert 0 < sum(expected) < 40


def test_breakdown_bins_many_values():
    inputs, labels, answers, confidence, steps, _ = hand_made()
    n = 30
    pick = np.arange(n) % 4
    m = metrics.puzzle_metrics(inputs[pick], labels[pick], answers[pick], breakdowns={"by_rating": np.arange(n)})
    assert len(m["by_rating"]) == metrics.MAX_GROUPS
    assert sum(g["n"] for g in m["by_rating"].values()) == n and "0-2" in m["by_rating"]


def test_positions_without_a_target_count_nowhere():
    """IGNORE_LABEL positions (padding) are left out of every accuracy: answers that differ only
    there score as exact; the same answers with those positions as real targets do not."""
    inputs, labels, answers, *_ = hand_made()
    ignored = labels.astype(np.int64).copy()
    ignored[:, 8:] = IGNORE_LABEL                   # only the first two rows have targets
    wrong_late = np.where(np.arange(16) >= 8, 0, labels[0])[None].repeat(4, axis=0)  # right, then garbage
    m = metrics.puzzle_metrics(inputs, ignored, wrong_late)
    assert m["exact_acc"] == 1.0 and m["token_acc"] == 1.0 and m["blank_acc"] == 1.0
    full = metrics.puzzle_metrics(inputs, labels, wrong_late)
    assert full["exact_acc"] == 0.0 and full["token_acc"] == 0.5


# -- a tiny trained model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train once (4x4, D=32, N_sup=4), with one torch thread: these tiny ops only lose from a
    second thread, by a lot when the other core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("evaluate")
    config = copy.deepcopy(RUN_CONFIG)
    config["model"].update(hidden_size=32, T=2, n=2, N_sup=4)
    config["data"].update(grid_size=4, n_train=300, n_val=0, n_test=64, givens=[8, 10], data_dir=str(tmp / "data"))
    config["training"].update(runs_dir=str(tmp / "runs"), run_name="tiny", batch_size=16, max_steps=40,
                              eval_every=20, log_every=10, warmup_steps=5, lr=3e-3, eval_batch_size=64,
                              dtype="float32")
    result = train_trm.main(config, progress=False)
    yield {"tmp": tmp, "config": config, "result": result, "run_dir": tmp / "runs" / "tiny"}
    torch.set_num_threads(threads)


def test_training_log_keeps_its_eval_keys(trained):
    lines = (trained["run_dir"] / "log.jsonl").read_text().splitlines()
    evals = [r for r in map(json.loads, lines) if r["kind"] == "eval"]
    assert len(evals) == 2
    assert {"token_acc", "blank_acc", "exact_acc", "halt_acc", "n", "validity"} <= set(evals[-1])
    assert evals[-1]["n"] == 64 and evals[-1]["token_acc"] == trained["result"]["token_acc"]


def test_depth_benchmark_rows_and_files(trained, tmp_path):
    model, ckpt, weights = checkpoint.load_trained(trained["run_dir"] / "last.pt", torch.device("cpu"))
    assert weights == "EMA"
    data = puzzles.load(trained["config"]["data"], progress=False)
    inputs = np.asarray(data.test.inputs)
    labels = data.test.labels_for_training(np.arange(data.test.n_examples))
    K = 6                                            # beyond the trained N_sup of 4
    rows = metrics.depth_benchmark(model, inputs, labels, K, 32, torch.device("cpu"), torch.float32, valid_fn=valid4)
    assert [r["step"] for r in rows] == list(range(1, K + 1))
    halted = [r["halted_frac"] for r in rows]
    assert halted == sorted(halted) and all(0.0 <= h <= 1.0 for h in halted)
    assert all(r["halt_avg_steps"] <= r["step"] for r in rows)
    plain = metrics.evaluate(model, inputs, labels, 4, 64, torch.device("cpu"), torch.float32)
    assert rows[3]["exact_acc"] == plain["exact_acc"] and rows[3]["token_acc"] == plain["token_acc"]
    halting = metrics.evaluate(model, inputs, labels, 4, 64, torch.device("cpu"), torch.float32, halt=True)
    assert rows[3]["halt_exact_acc"] == halting["exact_acc"] and rows[3]["halt_avg_steps"] == halting["avg_steps"]
    json_path, csv_path = evaluate.save_depth(rows, tmp_path, "test")
    assert json.loads(json_path.read_text()) == rows
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == list(range(1, K + 1))
    assert float(table[-1]["exact_acc"]) == rows[-1]["exact_acc"]
    assert "trained N_sup" in evaluate.format_depth_table(rows, 4).splitlines()[4]


def test_evaluate_cli_matches_the_training_eval(trained, tmp_path, capsys):
    out = tmp_path / "out"
    evaluate.main(["--checkpoint", str(trained["run_dir"] / "last.pt"), "--out", str(out), "--dtype", "float32",
                   "--depth", "5", "--no-progress"])
    printed = capsys.readouterr().out
    saved = json.loads((out / "eval_test.json").read_text())
    assert saved["exact_acc"] == trained["result"]["exact_acc"]      # the training run's final evaluation
    assert saved["token_acc"] == trained["result"]["token_acc"] and saved["n"] == 64
    assert "by_givens" in saved and "by_rating" in saved
    assert len(json.loads((out / "depth_test.json").read_text())) == 5
    assert (out / "depth_test.csv").read_text().count("\n") == 6
    assert "generated 4x4, 300 train / 64 test" in printed and "by givens" in printed
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "depth_test.png").stat().st_size > 0
    else:
        assert "plot skipped: matplotlib is not installed" in printed


def test_evaluate_cli_missing_checkpoint_names_path_and_command(tmp_path):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(tmp_path / "nope.pt"), "--no-progress"])
    assert "nope.pt" in str(e.value.code) and "python impl/train_trm.py" in str(e.value.code)


def test_evaluate_cli_data_config_size_mismatch(trained, tmp_path):
    path = tmp_path / "six.json"
    path.write_text('{"data": {"grid_size": 6, "n_train": 20, "n_test": 5, "givens": [20, 24],'
                    f' "data_dir": "{tmp_path / "data"}"}}}}')
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(trained["run_dir"] / "last.pt"), "--data-config", str(path),
                       "--no-progress", "--depth", "0"])
    assert "the data has seq_len 36 but" in str(e.value.code) and "was trained on seq_len 16" in str(e.value.code)
    path.write_text('{"data": {"grid_sise": 6}}')
    with pytest.raises(SystemExit, match="six.json: unknown key 'data.grid_sise'"):
        evaluate.main(["--checkpoint", str(trained["run_dir"] / "last.pt"), "--data-config", str(path)])


# -- solve.py -----------------------------------------------------------------------------------------

def solve_cli(trained, *args) -> list[str]:
    return ["--checkpoint", str(trained["run_dir"] / "last.pt"), "--dtype", "float32", *args]


PUZZLE = "12.4...2....4..1"      # 6 givens of SOLUTION; its only solution (checked below)


def test_solve_prints_puzzle_answer_and_checks(trained, capsys):
    solutions, _ = sudoku_solver.solve(sudoku_rules.parse_puzzle(PUZZLE), 4)
    assert len(solutions) == 1 and np.array_equal(solutions[0], tokens(SOLUTION))
    assert solve.main(solve_cli(trained, PUZZLE)) == 0
    out = capsys.readouterr().out
    assert sudoku_rules.format_grid(sudoku_rules.parse_puzzle(PUZZLE), 4) in out
    assert "valid (rules and givens): " in out and "matches the unique solution: " in out
    assert "halting confidence" in out and "answer after" in out
    assert out.count("-+-") == 2                                          # two 4x4 grids: puzzle and answer


def test_solve_steps_prints_one_grid_per_step(trained, capsys):
    solve.main(solve_cli(trained, "--steps", "--max-steps", "5", PUZZLE))
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("step ")] == \
        [f"step {k}" for k in range(1, 6)]
    assert "*" in out and "answer after 5 supervision steps (all steps)" in out


@pytest.mark.parametrize("puzzle,expected", [
    ("12.4...2....4.x1", "bad character 'x' at position 15"),
    ("12.4...2....4..", "expected 16, 36 or 81 cells, got 15"),
    ("12.4...2....4.51", "digit 5 at position 15 is out of range"),
    ("11..............", "contradictory givens: digit 1 appears twice in row 1 (positions 1 and 2)"),
    ("1...............", "more than one solution (not unique)"),
    ("." * 81, "the puzzle is 9x9 (81 cells) but the checkpoint was trained on 4x4 grids"),
])
def test_solve_rejects_bad_puzzles(trained, puzzle, expected, capsys):
    with pytest.raises(SystemExit) as e:
        solve.main(solve_cli(trained, puzzle))
    assert str(e.value.code).startswith("error: ") and expected in str(e.value.code)


def test_solve_file_errors_name_the_line(trained, tmp_path, capsys):
    path = tmp_path / "puzzles.txt"
    path.write_text(f"# two puzzles\n{PUZZLE}\n\n12.4...2....4.?1\n")
    with pytest.raises(SystemExit, match=r"puzzles.txt:4: bad character '\?' at position 15"):
        solve.main(solve_cli(trained, "--file", str(path)))
    path.write_text(f"{PUZZLE}\n1...............\n")
    with pytest.raises(SystemExit, match="1 of 2 puzzles not answered"):
        solve.main(solve_cli(trained, "--file", str(path)))
    captured = capsys.readouterr()
    assert "puzzles.txt:2: the puzzle has more than one solution" in captured.err
    assert "matches the unique solution" in captured.out                 # line 1 was still answered


def test_solve_missing_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="nope.pt.*python impl/train_trm.py"):
        solve.main(["--checkpoint", str(tmp_path / "nope.pt"), PUZZLE])


def test_solve_with_halting_reports_the_halting_step(trained, capsys):
    solve.main(solve_cli(trained, "--halt", "--max-steps", "4", PUZZLE))
    out = capsys.readouterr().out
    steps = int(out.split("answer after ")[1].split(" supervision step")[0])
    assert 1 <= steps <= 4
    assert "(halted)" in out or "(no halt before the last step)" in out


def test_checkpoint_from_before_the_norm_option_keeps_its_per_token_norm(trained, tmp_path):
    """A checkpoint whose model_config lacks mlp_t_norm / prefix_learned (written before they
    existed) loads as it was trained: per-token mlp_t norm, every prefix position learned."""
    ckpt = checkpoint.load_checkpoint(trained["run_dir"] / "best.pt")
    for key in ("mlp_t_norm", "prefix_learned"):
        del ckpt["model_config"][key]
    path = tmp_path / "old.pt"
    checkpoint.save_checkpoint(path, ckpt)
    model, _, _ = checkpoint.load_trained(path, torch.device("cpu"))
    assert model.config.mlp_t_norm == "hidden" and model.config.prefix_learned == "all"
    current, _, _ = checkpoint.load_trained(trained["run_dir"] / "best.pt", torch.device("cpu"))
    assert current.config.mlp_t_norm == "sequence" and current.config.prefix_learned == "first"
