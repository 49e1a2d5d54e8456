"""Tests of impl/data_sudoku.py: solver, generator, splits, caches, augmentation, HF loader.

Uniqueness is checked with an independent brute-force counter written here, not with the module's
solver. The Hugging Face tests build a fake hub cache in tmp_path and never touch the network.
"""

from __future__ import annotations

import faulthandler
import functools
import itertools
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import data_sudoku as ds
import puzzle_dataset as pd
import sudoku_gen as gen
import sudoku_hf as hf
import sudoku_rules as rules
import sudoku_solver as solver
import workers
from errors import DataError
import errors

IMPL_DIR = Path(__file__).resolve().parent.parent / "impl"
BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
GIVENS = {4: (4, 10), 6: (12, 20), 9: (28, 32)}


# ----------------------------------------------------------------------------------------------
# Independent reference: peers from first principles, plain backtracking (fewest options first)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def peers_of(size: int) -> list[tuple[int, ...]]:
    br, bc = BOXES[size]
    peers = []
    for i in range(size * size):
        r, c = divmod(i, size)
        cells = {r * size + k for k in range(size)} | {k * size + c for k in range(size)}
        r0, c0 = r // br * br, c // bc * bc
        cells |= {(r0 + a) * size + c0 + b for a in range(br) for b in range(bc)}
        cells.discard(i)
        peers.append(tuple(sorted(cells)))
    return peers


def brute_force_count(tokens: np.ndarray, size: int, limit: int = 2) -> int:
    """Count solutions of a token puzzle up to `limit` by simple recursive backtracking."""
    peers = peers_of(size)
    grid = [int(t) - 1 if t > rules.BLANK else 0 for t in tokens]
    for i, d in enumerate(grid):
        if d and any(grid[p] == d for p in peers[i]):
            return 0

    def count() -> int:
        best, best_options = -1, None
        for i, d in enumerate(grid):
            if d == 0:
                used = {grid[p] for p in peers[i]}
                options = [v for v in range(1, size + 1) if v not in used]
                if best_options is None or len(options) < len(best_options):
                    best, best_options = i, options
                    if len(options) <= 1:
                        break
        if best < 0:
            return 1
        total = 0
        for v in best_options:
            grid[best] = v
            total += count()
            if total >= limit:
                break
        grid[best] = 0
        return total

    return count()


def is_sudoku(tokens: np.ndarray, size: int) -> bool:
    """Reference validity check: every row, column and box holds digits 1..size once."""
    digits = [int(t) - 1 for t in tokens]
    peers = peers_of(size)
    return all(1 <= d <= size for d in digits) and all(
        digits[p] != digits[i] for i in range(size * size) for p in peers[i]
    )


@functools.lru_cache(maxsize=None)
def generated(size: int) -> dict[str, np.ndarray]:
    n = {4: 300, 6: 120, 9: 24}[size]
    return gen.generate_puzzles(size, n, GIVENS[size], seed=11, workers=1, progress=False)


def to_string(tokens: np.ndarray) -> str:
    return "".join("." if t == rules.BLANK else str(int(t) - 1) for t in tokens)


@pytest.fixture
def workers_now(monkeypatch):
    """Worker processes start after the first chunk (POOL_AFTER_S = 0). A hang ends the whole test
    run after 60 s with every thread's traceback, so a regression fails CI instead of blocking it."""
    monkeypatch.setattr(gen, "POOL_AFTER_S", 0.0)
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# ----------------------------------------------------------------------------------------------
# Token layout, parsing, printing, solving
# ----------------------------------------------------------------------------------------------


def test_token_layout():
    assert (rules.PAD, rules.BLANK) == (0, 1)
    assert [rules.vocab_size(s) for s in (4, 6, 9)] == [6, 8, 11]
    assert [rules.box_shape(s) for s in (4, 6, 9)] == [(2, 2), (2, 3), (3, 3)]
    with pytest.raises(ValueError, match="unsupported Sudoku size 5"):
        rules.box_shape(5)


def test_parse_puzzle_tokens_and_format():
    tokens = rules.parse_puzzle("1.3. 0... \n .... ...4")
    assert tokens.dtype == np.uint8
    assert tokens.tolist() == [2, 1, 4, 1] + [1] * 11 + [5]
    text = rules.format_grid(tokens, 4)
    assert text.splitlines()[0] == "1 . | 3 ."
    assert text.splitlines()[2] == "----+----"
    grid6 = rules.format_grid(rules.parse_puzzle("." * 36), 6).splitlines()
    assert grid6[0] == ". . . | . . ." and grid6[2] == "------+------" and len(grid6) == 8


@pytest.mark.parametrize(
    "text, message",
    [
        ("1..." + "x" + "." * 11, "bad character 'x' at position 5"),
        ("." * 80, "expected 16, 36 or 81 cells, got 80"),
        ("5...." + "." * 11, "digit 5 at position 1 is out of range for a 4x4"),
        (
            "." * 18 + "5" + "." * 5 + "5" + "." * 56,
            r"contradictory givens: digit 5 appears twice in row 3 \(positions 19 and 25\)",
        ),
        ("2...2" + "." * 11, r"digit 2 appears twice in column 1 \(positions 1 and 5\)"),
    ],
)
def test_parse_puzzle_errors_name_the_position(text, message):
    with pytest.raises(ValueError, match=message):
        rules.parse_puzzle(text)


def test_solver_counts_all_4x4_grids_and_rates():
    empty = np.full(16, rules.BLANK, np.uint8)
    assert solver.count_solutions(empty, 4, limit=1000) == 288  # the known number of 4x4 grids
    sample = ds.builtin_sample()
    easy, easy_rating = solver.solve(sample["inputs"][0], 9)  # Wikipedia's: propagation alone
    assert easy_rating == 0 and (easy[0] == sample["labels"][0]).all()
    hard, hard_rating = solver.solve(sample["inputs"][4], 9)  # Inkala's needs guesses
    assert hard_rating > 0 and len(hard) == 1 and (hard[0] == sample["labels"][4]).all()
    clash = rules.parse_puzzle("1" + "." * 15)
    clash[1] = 2  # a second 1 in row 1
    assert solver.solve(clash, 4) == ([], 0)
    rng_solutions, _ = solver.solve(empty, 4, limit=3, rng=np.random.default_rng(0))
    assert len(rng_solutions) == 3 and all(rules.is_valid_solution(empty, s) for s in rng_solutions)


def test_is_valid_solution_checks_givens_and_units():
    sample = ds.builtin_sample()
    puzzle, grid = sample["inputs"][0], sample["labels"][0]
    assert rules.is_valid_solution(puzzle, grid)
    other = ds.builtin_sample()["labels"][1]
    assert not rules.is_valid_solution(puzzle, other)  # valid grid, but givens not kept
    broken = grid.copy()
    broken[[0, 1]] = broken[[1, 0]]  # swap two cells of a row: columns now repeat
    assert not rules.is_valid_solution(np.full(81, rules.BLANK, np.uint8), broken)


def test_builtin_sample_valid_and_unique():
    sample = ds.builtin_sample()
    assert len(sample["inputs"]) >= 8
    assert sample["inputs"].shape == sample["labels"].shape and sample["inputs"].shape[1] == 81
    for puzzle, solution in zip(sample["inputs"], sample["labels"]):
        assert is_sudoku(solution, 9)
        assert rules.is_valid_solution(puzzle, solution, 9)
        assert brute_force_count(puzzle, 9) == 1, to_string(puzzle)


# ----------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, checked", [(4, None), (6, 40), (9, 8)])
def test_generated_puzzles_have_exactly_one_solution(size, checked):
    data = generated(size)
    lo, hi = GIVENS[size]
    assert data["inputs"].dtype == np.uint8 and data["labels"].dtype == np.uint8
    assert data["ratings"].dtype == np.int32
    givens = (data["inputs"] > rules.BLANK).sum(axis=1)
    assert givens.min() >= lo and givens.max() <= hi
    for puzzle, label, rating in list(zip(data["inputs"], data["labels"], data["ratings"]))[:checked]:
        assert is_sudoku(label, size)
        assert rules.is_valid_solution(puzzle, label, size)
        assert brute_force_count(puzzle, size) == 1, to_string(puzzle)
        assert solver.solve(puzzle, size)[1] == rating


def test_generator_is_reproducible_across_workers_and_seeds(workers_now):
    n = gen.GEN_CHUNK * 2 + 10  # several chunks
    a = gen.generate_puzzles(6, n, (12, 20), seed=3, workers=1, progress=False)
    b = gen.generate_puzzles(6, n, (12, 20), seed=3, workers=2, progress=False)
    c = gen.generate_puzzles(6, n, (12, 20), seed=4, workers=1, progress=False)
    for key in ("inputs", "labels", "ratings"):
        assert a[key].tobytes() == b[key].tobytes()
    assert not np.array_equal(a["labels"], c["labels"])
    assert len({g.tobytes() for g in a["labels"]}) > n * 0.9  # genuinely different grids
    prefix = gen.generate_puzzles(6, 20, (12, 20), seed=3, workers=1, progress=False)
    assert (prefix["inputs"] == a["inputs"][:20]).all()


def test_generator_rating_filter():
    hard = gen.generate_puzzles(6, 6, (9, 11), min_rating=1, seed=0, workers=1, progress=False)
    assert (hard["ratings"] >= 1).all()
    assert all(solver.solve(p, 6)[1] >= 1 for p in hard["inputs"])
    easy = gen.generate_puzzles(6, 20, (9, 11), max_rating=0, seed=0, workers=1, progress=False)
    assert (easy["ratings"] == 0).all()


def test_generator_impossible_request_raises(monkeypatch):
    with pytest.raises(errors.ConfigError, match=r"givens: \[2, 3\] allows no 4x4 puzzle .* at least 4 givens"):
        gen.generate_puzzles(4, 1, (2, 3), seed=0, workers=1, progress=False)
    with pytest.raises(ValueError, match="givens"):
        gen.generate_puzzles(4, 1, (5, 17), workers=1, progress=False)
    # Possible in principle, out of the generator's reach: a chunk gives up after _HOPELESS_AFTER.
    monkeypatch.setattr(gen, "_HOPELESS_AFTER", 30)
    with pytest.raises(errors.DataError, match="only 0 of 1 6x6 puzzles with 5-7 givens .* after 30 attempts"):
        gen.generate_puzzles(6, 1, (5, 7), seed=0, workers=1, progress=False)


# ----------------------------------------------------------------------------------------------
# Train/test split and its cache
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, n_train, n_test", [(4, 300, 100), (6, 300, 100)])
def test_split_disjoint_classes_no_duplicates(tmp_path, size, n_train, n_test):
    data = gen.make_generated_split(size, n_train, n_test, GIVENS[size], 0, -1, 0, workers=2, progress=False)
    assert data["train_inputs"].shape == (n_train, size * size)
    assert data["test_labels"].shape == (n_test, size * size)
    assert data["train_ratings"].shape == (n_train,) and data["test_ratings"].dtype == np.int32
    train_keys = {rules.split_key(g, size) for g in data["train_labels"]}
    test_keys = {rules.split_key(g, size) for g in data["test_labels"]}
    assert train_keys and test_keys and not train_keys & test_keys
    assert not {g.tobytes() for g in data["train_labels"]} & {g.tobytes() for g in data["test_labels"]}
    puzzles = [p.tobytes() for p in np.concatenate([data["train_inputs"], data["test_inputs"]])]
    assert len(set(puzzles)) == len(puzzles)
    for split in ("train", "test"):
        for puzzle, label in zip(data[f"{split}_inputs"][:30], data[f"{split}_labels"][:30]):
            assert rules.is_valid_solution(puzzle, label, size) and brute_force_count(puzzle, size) == 1


def test_dataset_folder_is_built_once_and_named_by_parameters(tmp_path, monkeypatch):
    cfg = base_cfg(tmp_path, grid_size=6, n_train=60, n_test=20, givens=[12, 20], seed=5)
    path, description = ds.build_dataset(cfg, progress=False)
    assert path == tmp_path / "data" / "sudoku6_tr60_te20_g12-20_r0-any_s5"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [path.name]  # no temporary folder left
    assert sorted(p.name for p in (path / "train").iterdir()) == [
        "all__group_indices.npy", "all__inputs.npy", "all__labels.npy", "all__puzzle_identifiers.npy",
        "all__puzzle_indices.npy", "all__ratings.npy", "dataset.json"]
    first = pd.read_dataset(path)

    def no_generation(*_args, **_kwargs):
        raise AssertionError("generator called although the dataset exists")

    monkeypatch.setattr(ds, "make_generated_split", no_generation)
    again, again_description = ds.build_dataset(cfg, progress=False)
    assert again == path and again_description == description == "generated 6x6, 60 train / 20 test, 12-20 givens"
    for a, b in zip(first, pd.read_dataset(path)):
        assert np.array_equal(np.asarray(a.inputs), np.asarray(b.inputs))


def test_split_same_seed_same_result_across_workers(tmp_path, workers_now):
    a = gen.make_generated_split(6, 80, 30, (12, 20), 0, -1, 1, workers=1, progress=False)
    b = gen.make_generated_split(6, 80, 30, (12, 20), 0, -1, 1, workers=2, progress=False)
    for key in SPLIT_KEYS:
        assert a[key].tobytes() == b[key].tobytes()


def test_damaged_dataset_folder_is_rebuilt_and_named(tmp_path, capsys):
    cfg = base_cfg(tmp_path, n_train=10, n_test=5)
    path, _ = ds.build_dataset(cfg, progress=False)
    fresh = {name: np.load(path / "train" / name) for name in ("all__inputs.npy", "all__labels.npy")}
    damages = [("train/all__inputs.npy", b"not an array"), ("test/dataset.json", b'{"pad_id": 0'),
               ("train/all__labels.npy", (path / "train" / "all__labels.npy").read_bytes()[:100])]
    for name, damaged in damages:
        (path / name).write_bytes(damaged)
        again, _ = ds.build_dataset(cfg, progress=False)
        err = capsys.readouterr().err
        assert f"{path}: building it again, it is damaged" in err and name.split("/")[-1] in err
        for key, value in fresh.items():
            assert np.array_equal(np.load(again / "train" / key), value)
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [path.name]  # nothing else left
        ds.build_dataset(cfg, progress=False)
        assert "damaged" not in capsys.readouterr().err  # the rebuilt folder is whole
    (path / "notes.txt").write_text("mine")  # a foreign file inside: the folder is moved aside, not deleted
    (path / "train" / "all__inputs.npy").write_bytes(b"broken")
    ds.build_dataset(cfg, progress=False)
    assert "holds other files too, so it was moved to" in capsys.readouterr().err
    (old,) = [p for p in (tmp_path / "data").iterdir() if ".old-" in p.name]
    assert (old / "notes.txt").read_text() == "mine"


def test_split_that_cannot_be_filled_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "SPLIT_MAX_TRIES", 1)
    # 25,728 4-given 4x4 puzzles exist: enough by count, so the request passes split_supply_problem,
    # but one try per puzzle asked for cannot find 16,000 distinct ones.
    with pytest.raises(errors.DataError, match=r"found \d+ of 4000 test, \d+ of 12000 train distinct 4x4 "
                                               r"puzzles .* after \d+ tries; lower n_train / n_test or widen givens"):
        gen.make_generated_split(4, 12000, 4000, (4, 4), 0, -1, 0, workers=1, progress=False)
    assert not list(tmp_path.iterdir())


def test_impossible_4x4_split_fails_before_generating(tmp_path, monkeypatch):
    def no_generation(*_args, **_kwargs):
        raise AssertionError("generation started for a request that cannot be met")

    monkeypatch.setattr(gen, "_iter_chunks", no_generation)
    total, smallest = 3323520 + 8293248, 3323520 // 4  # puzzles with 4-10 givens; the smallest of the 12 classes
    cases = [
        (12_000_000, 50, r"n_train: 12000000 training, 0 validation and 50 held-out puzzles cannot be met: there "
                         r"are only 11616768 distinct 4x4 puzzles with 4-10 givens, in 12 grid classes"),
        (50, total, r"n_train: 50 training, 0 validation and 11616768 held-out puzzles cannot be met"),
        (6_000_000, 6_000_000, r"6000000 training, 0 validation and 6000000 held-out puzzles cannot be met"),
    ]
    for n_train, n_test, message in cases:
        with pytest.raises(errors.ConfigError, match=message):
            gen.make_generated_split(4, n_train, n_test, (4, 10), 0, -1, 0, progress=False)
    assert gen.split_supply_problem(4, total - smallest, smallest, (4, 10)) == ""  # exactly what the classes hold
    assert gen.split_supply_problem(4, total - smallest + 1, smallest, (4, 10)) != ""
    assert not list(tmp_path.iterdir())
    # On the command line: one line and exit status 1, at once.
    result = subprocess.run(
        [sys.executable, str(IMPL_DIR / "data_sudoku.py"), "generate", "--size", "4", "--n-train", "12000000",
         "--n-test", "50", "--givens", "4", "10", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: data.n_train: 12000000 training, 0 validation and 50 held-out puzzles cannot")
    assert result.stderr.count("\n") == 1


def four_by_four_grids() -> list[tuple[int, ...]]:
    """Every 4x4 grid, row by row from the 24 orders of 1..4, by the reference peers (not solver.solve)."""
    peers = peers_of(4)
    grids: list[tuple[int, ...]] = []

    def extend(cells: tuple[int, ...]) -> None:
        if len(cells) == 16:
            grids.append(cells)
            return
        for row in itertools.permutations(range(1, 5)):
            grid = cells + row
            if all(grid[p] != grid[i] for i in range(len(cells), len(grid)) for p in peers[i] if p < i):
                extend(grid)

    extend(())
    return grids


def test_4x4_puzzle_counts_are_exact():
    """gen._PUZZLES_4X4 by exhaustion: (grid, set of given cells) is a puzzle with one solution when
    no other grid agrees with the grid on every given cell."""
    grids = np.array(four_by_four_grids())  # [288, 16] digits
    assert len(grids) == 288
    bit = 1 << np.arange(16)
    agree = ((grids[:, None, :] == grids[None, :, :]) * bit).sum(axis=2)  # [288, 288] cell masks
    ambiguous = np.zeros((288, 1 << 16), dtype=bool)  # [grid, given-cell mask]
    others = ~np.eye(288, dtype=bool)
    ambiguous[np.nonzero(others)[0], agree[others]] = True
    masks = np.arange(1 << 16)
    for b in range(16):  # every subset of an ambiguous mask is ambiguous too
        without = masks[(masks >> b) & 1 == 0]
        ambiguous[:, without] |= ambiguous[:, without | (1 << b)]
    givens = np.array([bin(m).count("1") for m in masks])
    tokens = (grids + 1).astype(np.uint8)
    classes: dict[bytes, list[int]] = {}
    for g in range(288):
        classes.setdefault(rules.canonical_key(tokens[g], 4), []).append(g)
    counted = sorted(
        (len(members), tuple(int(c) for c in np.bincount(givens, (~ambiguous[members]).sum(axis=0), minlength=17)))
        for members in classes.values()
    )
    assert [size for size, _ in counted] == [96, 192]
    assert tuple(c for _, c in counted) == gen._PUZZLES_4X4
    assert sum(c[4] for c in gen._PUZZLES_4X4) == 25728  # the known number of 4-clue 4x4 puzzles
    assert gen.MIN_GIVENS[4] == min(k for k in range(17) if any(c[k] for c in gen._PUZZLES_4X4))
    rng = np.random.default_rng(0)  # spot checks against the reference solver
    for g, mask in zip(rng.integers(0, 288, 40), rng.integers(0, 1 << 16, 40)):
        puzzle = np.where((mask >> np.arange(16)) & 1 == 1, tokens[g], rules.BLANK).astype(np.uint8)
        assert (brute_force_count(puzzle, 4) == 1) == (not ambiguous[g, mask])


# ----------------------------------------------------------------------------------------------
# Worker processes: early stops, deaths, Ctrl-C
# ----------------------------------------------------------------------------------------------


def test_stopping_early_never_hangs_and_keeps_the_output(tmp_path, monkeypatch, workers_now):
    """The issue-21 hang (stopping with chunks in flight) needed hundreds of starts to show: tiny
    chunks make hundreds of early stops cheap. Bounded by workers_now's 60 s watchdog."""
    monkeypatch.setattr(gen, "GEN_CHUNK", 2)
    tasks = [(4, 2, c, 0, 4, 10, 0, -1, False) for c in range(40)]
    expected = [gen._generate_chunk(task)[0].tobytes() for task in tasks]
    rng = random.Random(0)
    with workers.Workers(2) as pool:
        for _ in range(300):
            start, stop = rng.randrange(20), rng.randrange(12)
            got = []
            for inputs, *_ in pool.run(gen._generate_chunk, tasks[start:]):
                if len(got) == stop:
                    break  # calls still running: their results are dropped by the next run
                got.append(inputs.tobytes())
            assert got == expected[start : start + stop]
    # Whole splits: each stops with chunks in flight and kills its workers; same bytes as 1 worker.
    reference = gen.make_generated_split(4, 30, 10, (4, 10), 0, -1, 0, workers=1, progress=False)
    for k in range(5):
        data = gen.make_generated_split(4, 30, 10, (4, 10), 0, -1, 0, workers=2, progress=False)
        for key in SPLIT_KEYS:
            assert data[key].tobytes() == reference[key].tobytes()


@pytest.mark.parametrize(
    "fn, arg, message",
    [
        (signal.raise_signal, signal.SIGKILL, r"worker process \d+ was killed by SIGKILL \(out of memory\?"),
        (os._exit, 3, r"worker process \d+ exited with status 3"),
    ],
)
def test_a_dying_worker_is_reported(workers_now, fn, arg, message):
    with workers.Workers(2) as pool:
        with pytest.raises(errors.DataError, match=message):
            list(pool.run(fn, [arg]))
    with workers.Workers(1) as pool:  # dead before it gets a call: the call cannot be sent
        pool._procs[0].kill()
        pool._procs[0].wait()
        with pytest.raises(errors.DataError, match=r"worker process \d+ was killed by SIGKILL"):
            list(pool.run(gen._generate_chunk, [(4, 2, 0, 0, 4, 10, 0, -1, False)]))


def test_worker_errors_come_back_in_order(workers_now):
    ok = (4, 2, 0, 0, 4, 10, 0, -1, False)
    impossible = (4, 1, 0, 0, 2, 3, 0, -1, False)  # no 4x4 puzzle has 2-3 givens: the chunk gives up
    with workers.Workers(2) as pool:
        results = pool.run(gen._generate_chunk, [ok, impossible, ok])
        assert next(results)[0].shape == (2, 16)
        with pytest.raises(errors.DataError, match="only 0 of 1 4x4 puzzles with 2-3 givens"):
            next(results)
        with pytest.raises(RuntimeError, match=r"(?s)in a puzzle generation worker:\n.*ValueError: invalid literal"):
            list(pool.run(int, ["not a number"]))  # a bug in a worker keeps its traceback


def test_command_line_generates_on_workers(tmp_path):
    """`python impl/data_sudoku.py ...` runs as __main__; its workers must still find _generate_chunk
    (bench starts workers with the first chunk)."""
    script = textwrap.dedent(
        f"""
        import runpy, sys
        sys.path.insert(0, {str(IMPL_DIR)!r})
        import workers
        run = workers.Workers.run

        def announce(self, fn, args):  # shows that worker processes did the work
            print("workers at work", flush=True)
            yield from run(self, fn, args)

        workers.Workers.run = announce
        sys.argv = ["data_sudoku.py", "bench", "--sizes", "4", "--scale", "0.05", "--workers", "2"]
        runpy.run_path({str(IMPL_DIR / "data_sudoku.py")!r}, run_name="__main__")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "workers at work" in result.stdout and "4x4: 400 unique puzzles" in result.stdout

def test_ctrl_c_during_generation_stops_workers_and_leaves_no_cache(tmp_path):
    data_dir = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import signal, sys
        # Python leaves Ctrl-C ignored when it starts with SIGINT ignored (a background job of a
        # script): a terminal's Ctrl-C is what this test stands for, so restore it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.path.insert(0, {str(IMPL_DIR)!r})
        import data_sudoku as ds, errors, sudoku_gen as gen, workers
        gen.POOL_AFTER_S = 0.0
        run = workers.Workers.run

        def announce(self, fn, args):  # says when the workers are at work, with their ids
            print("workers", *[proc.pid for proc in self._procs], flush=True)
            yield from run(self, fn, args)

        workers.Workers.run = announce
        errors.run_cli(lambda: ds.main(["generate", "--size", "6", "--n-train", "20000", "--n-test", "2000",
                                         "--data-dir", {str(data_dir)!r}]))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([proc.stdout], [], [], 60)[0], "the workers did not start"
        pids = [int(pid) for pid in proc.stdout.readline().split()[1:]]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.rstrip("\n").splitlines()[-1] == "interrupted (Ctrl-C)" and "Traceback" not in err
    assert not data_dir.exists() or not list(data_dir.iterdir())  # no cache, no temporary file
    assert len(pids) == 2
    for pid in pids:  # killed and reaped before the process ended
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# ----------------------------------------------------------------------------------------------
# Augmentation and canonical keys
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, 6, 9])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_augment_keeps_validity_and_changes_grids(size, seed):
    data = generated(size)
    inputs, labels = data["inputs"], data["labels"]
    aug_in, aug_lab = rules.augment(inputs, labels, size, np.random.default_rng(seed))
    assert aug_in.shape == inputs.shape and aug_in.dtype == inputs.dtype
    for puzzle, label in zip(aug_in, aug_lab):
        assert is_sudoku(label, size)
        assert rules.is_valid_solution(puzzle, label, size)
    assert ((aug_in == rules.BLANK).sum(axis=1) == (inputs == rules.BLANK).sum(axis=1)).all()
    changed = (aug_lab != labels).any(axis=1).mean()
    assert changed > 0.8
    again = rules.augment(inputs, labels, size, np.random.default_rng(seed))
    assert (again[0] == aug_in).all() and (again[1] == aug_lab).all()


def test_augment_keeps_pad_and_rejects_bad_shapes():
    data = generated(4)
    inputs = data["inputs"][:8].copy()
    inputs[:, 0] = rules.PAD
    out, _ = rules.augment(inputs, data["labels"][:8], 4, np.random.default_rng(0))
    assert ((out == rules.PAD).sum(axis=1) == 1).all()
    with pytest.raises(ValueError, match=r"shape \[B, 36\]"):
        rules.augment(inputs, data["labels"][:8], 6, np.random.default_rng(0))


@pytest.mark.parametrize("size, transposes", [(4, True), (6, False), (9, True)])
def test_augment_transposes_only_square_boxes(size, transposes):
    # Give only row 1 (blanks are never relabelled): afterwards the givens fill a row or a column.
    labels = np.repeat(generated(size)["labels"][:1], 200, axis=0)
    inputs = labels.copy()
    inputs[:, size:] = rules.BLANK
    out, _ = rules.augment(inputs, labels, size, np.random.default_rng(2))
    given = (out > rules.BLANK).reshape(-1, size, size)
    as_row = (given.sum(axis=2) == size).any(axis=1)
    as_col = (given.sum(axis=1) == size).any(axis=1)
    assert (as_row ^ as_col).all()
    assert as_col.any() == transposes
    if transposes:
        assert 0.3 < as_col.mean() < 0.7


@pytest.mark.parametrize("size", [4, 6])
def test_canonical_key_invariant_under_augment(size):
    labels = generated(size)["labels"][:20]
    keys = [rules.canonical_key(g, size) for g in labels]
    for seed in range(3):
        _, aug = rules.augment(labels, labels, size, np.random.default_rng(seed))
        assert [rules.canonical_key(g, size) for g in aug] == keys


def test_canonical_key_9x9_relabelling_and_4x4_classes():
    grid = ds.builtin_sample()["labels"][0]
    relabel = np.array([0, 1] + list(np.random.default_rng(0).permutation(9) + 2), dtype=np.uint8)
    assert rules.canonical_key(relabel[grid], 9) == rules.canonical_key(grid, 9)
    assert rules.canonical_key(grid, 9) != rules.canonical_key(ds.builtin_sample()["labels"][1], 9)
    empty = np.full(16, rules.BLANK, np.uint8)
    all_grids, _ = solver.solve(empty, 4, limit=1000)
    assert len(all_grids) == 288
    assert len({rules.canonical_key(g, 4) for g in all_grids}) == 2  # 4x4 has 2 essentially different grids
    with pytest.raises(ValueError, match="not a complete valid 4x4 grid"):
        rules.canonical_key(empty, 4)


# ----------------------------------------------------------------------------------------------
# Hugging Face loader against a fake hub cache
# ----------------------------------------------------------------------------------------------

SPLIT_KEYS = [f"{split}_{key}" for split in ("train", "test") for key in ("inputs", "labels", "ratings")]
REPO = "owner/sudoku-test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HEADER = "source,question,answer,rating"


def sample_rows() -> list[list[str]]:
    sample = ds.builtin_sample()
    return [
        ["builtin", to_string(p), to_string(s), str(k)]
        for k, (p, s) in enumerate(zip(sample["inputs"], sample["labels"]))
    ]


def write_hub_cache(root: Path, train_rows: list[list[str]], test_rows: list[list[str]], header: str = HEADER,
                    repo_id: str = REPO) -> Path:
    """Lay files out as huggingface_hub does: refs/main holds the commit, snapshots/<commit>/ the files."""
    owner, name = repo_id.split("/")
    repo = root / f"datasets--{owner}--{name}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)  # no trailing newline, like the hub writes it
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name_, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        (snapshot / name_).write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    return snapshot


def load(tmp_path: Path, **kwargs) -> dict:
    kwargs.setdefault("progress", False)
    return hf.load_hf(REPO, cache_dir=tmp_path / "hub", local_files_only=True, **kwargs)


def test_hf_loader_parses_rows(tmp_path):
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:4])
    out = load(tmp_path)
    sample = ds.builtin_sample()
    assert set(out) == set(SPLIT_KEYS)
    assert out["train_inputs"].dtype == np.uint8 and out["train_ratings"].dtype == np.int32
    assert (out["train_inputs"] == sample["inputs"]).all() and (out["train_labels"] == sample["labels"]).all()
    assert out["train_ratings"].tolist() == list(range(len(rows)))
    assert (out["test_inputs"] == sample["inputs"][:4]).all()


def test_hf_subset_is_seeded(tmp_path):
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:4])
    a = load(tmp_path, train_subset=4, seed=0)
    b = load(tmp_path, train_subset=4, seed=0)
    assert a["train_ratings"].tolist() == b["train_ratings"].tolist()
    assert len(a["train_ratings"]) == 4 and len(a["test_ratings"]) == 4
    assert a["train_ratings"].tolist() == sorted(a["train_ratings"].tolist())  # file order kept
    others = [load(tmp_path, train_subset=4, seed=s)["train_ratings"].tolist() for s in range(1, 4)]
    assert any(o != a["train_ratings"].tolist() for o in others)
    sample = ds.builtin_sample()
    assert (a["train_labels"] == sample["labels"][a["train_ratings"]]).all()  # rating = row index here


def test_hf_dataset_folder_is_reused_and_force_download_rebuilds(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at call time: no network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    rows = sample_rows()
    snapshot = write_hub_cache(tmp_path / "hub", rows, rows[:4])
    cfg = base_cfg(tmp_path, source="hf", repo_id=REPO, train_subset=0, test_subset=0, val_subset=2)
    path, description = ds.build_dataset(cfg, progress=False)
    assert path.name == "hf_owner--sudoku-test_train-test_sub0-0_va2_r0_s0"
    assert description == f"{REPO} (train/test.csv), 8 train / 2 val / 4 test"
    train, test = pd.read_dataset(path)
    val = pd.read_split(path, "val")
    assert (train.n_examples, val.n_examples, test.n_examples) == (8, 2, 4)
    assert sorted(np.concatenate([train.extras["ratings"], val.extras["ratings"]]).tolist()) == list(range(10))
    (snapshot / "train.csv").write_text("\n".join([HEADER] + [",".join(r) for r in rows[:5]]) + "\n")
    assert ds.build_dataset(cfg, progress=False)[1] == description  # the folder, not the changed CSV
    _, rebuilt = ds.build_dataset({**cfg, "force_download": True}, progress=False)  # offline: re-reads the CSV
    assert rebuilt == f"{REPO} (train/test.csv), 3 train / 2 val / 4 test"
    for csv_file in snapshot.iterdir():
        csv_file.unlink()
    assert ds.build_dataset(cfg, progress=False)[1] == rebuilt  # no CSV at all: the folder alone suffices


def test_hf_min_rating_filters(tmp_path):
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows)
    out = load(tmp_path, min_rating=6)
    assert out["train_ratings"].tolist() == list(range(6, len(rows)))
    assert (out["train_inputs"] == ds.builtin_sample()["inputs"][6:]).all()


def bad_row(kind: str) -> list[str]:
    source, question, answer, rating = sample_rows()[0]
    if kind == "wrong length":
        question = question[:80]
    elif kind == "bad character":
        question = question[:11] + "x" + question[12:]
    elif kind == "contradicts givens":
        answer = sample_rows()[1][2]  # a valid grid, but not this puzzle's: cell 1 (given 5) differs
    elif kind == "invalid answer":
        j = question.index(".")  # change a non-given cell: givens kept, grid broken
        answer = answer[:j] + str(int(answer[j]) % 9 + 1) + answer[j + 1 :]
    return [source, question, answer, rating]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("wrong length", "question has 80 characters"),
        ("bad character", "bad character 'x' at position 12"),
        ("contradicts givens", "answer contradicts its givens: position 1"),
        ("invalid answer", "answer is not a valid Sudoku grid"),
    ],
)
def test_hf_bad_rows_raise_or_skip(tmp_path, capsys, kind, message):
    rows = sample_rows()
    train = rows[:3] + [bad_row(kind)] + rows[3:]  # the bad row is on line 5 (header is line 1)
    write_hub_cache(tmp_path / "hub", train, rows[:2])
    with pytest.raises(ValueError, match=rf"train\.csv line 5: {message}"):
        load(tmp_path)
    out = load(tmp_path, skip_bad_rows=True)
    assert len(out["train_inputs"]) == len(rows)
    assert "skipped 1 bad rows" in capsys.readouterr().err


def test_hf_missing_column_always_raises(tmp_path):
    rows = [r[:3] for r in sample_rows()]
    write_hub_cache(tmp_path / "hub", rows, rows, header="source,question,answer")
    for skip in (False, True):
        with pytest.raises(ValueError, match=r"train\.csv line 1: .*lacks column\(s\) \['rating'\]"):
            load(tmp_path, skip_bad_rows=skip)



@pytest.mark.parametrize(
    "train, test, min_rating, failing, message",
    [
        ("bad", "all", 0, "train",
         r"train\.csv: no usable training row: all 10 data rows are bad \(first: line 2: question has 80 characters"),
        ("all", "bad", 0, "test", r"test\.csv: no usable held-out row: all 10 data rows are bad"),
        ("all", "none", 0, "test", r"test\.csv: no held-out rows after the header"),
        ("all", "first four", 6, "test",
         r"test\.csv: none of its 4 usable held-out rows has a rating >= 6; lower data\.min_rating"),
    ],
)
def test_hf_unusable_split_is_a_clear_error(tmp_path, train, test, min_rating, failing, message):
    rows = sample_rows()  # ratings 0..9
    kinds = {"all": rows, "bad": [bad_row("wrong length")] * len(rows), "none": [], "first four": rows[:4]}
    write_hub_cache(tmp_path / "hub", kinds[train], kinds[test])
    with pytest.raises(errors.DataError, match=message):
        load(tmp_path, skip_bad_rows=True, min_rating=min_rating)


def test_hf_missing_repo_offline_says_how_to_download(tmp_path):
    (tmp_path / "hub").mkdir()
    with pytest.raises(DataError, match="hf download nobody/missing --repo-type dataset"):
        hf.load_hf("nobody/missing", cache_dir=tmp_path / "hub", local_files_only=True, progress=False)


def test_hf_offline_env_in_subprocess(tmp_path):
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:4])
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(IMPL_DIR)!r})
        import data_sudoku as ds, puzzle_dataset as pd, sudoku_hf as hf
        from errors import DataError
        out = hf.load_hf({REPO!r}, progress=False)
        print("shapes", out["train_inputs"].shape, out["test_inputs"].shape)
        cfg = dict(source="hf", use_builtin_sample=False, grid_size=6, n_train=1, n_val=0, n_test=1, givens=[1, 2],
                   min_rating=2, max_rating=-1, repo_id={REPO!r}, splits=["train", "test"], train_subset=3,
                   test_subset=0, val_subset=0, force_download=False, skip_bad_rows=False,
                   data_dir={str(tmp_path / "d2")!r}, augment=True, seed=0)
        path, description = ds.build_dataset(cfg, progress=False)
        train, test = pd.read_dataset(path)
        print("dispatch", train.meta.seq_len, train.inputs.shape, test.inputs.shape, description)
        try:
            hf.load_hf("nobody/missing", progress=False)
        except DataError as e:
            print("missing", e)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "shapes (10, 81) (4, 81)" in result.stdout
    assert "dispatch 81 (3, 81) (2, 81)" in result.stdout  # test rows 0..3 with rating >= 2
    assert "hf download nobody/missing --repo-type dataset" in result.stdout


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------


def base_cfg(tmp_path: Path, **changes) -> dict:
    cfg = {
        "puzzle": "sudoku", "path": "", "source": "generated", "use_builtin_sample": False, "grid_size": 4,
        "n_train": 40, "n_val": 0, "n_test": 10, "givens": [4, 10], "min_rating": 0, "max_rating": -1,
        "repo_id": "sapientinc/sudoku-extreme", "splits": ["train", "test"], "train_subset": 1000,
        "test_subset": 1000, "val_subset": 0, "force_download": False, "skip_bad_rows": False,
        "data_dir": str(tmp_path / "data"), "augment": True, "seed": 0,
    }
    cfg.update(changes)
    return cfg


def test_build_dataset_generated_and_builtin(tmp_path):
    path, description = ds.build_dataset(base_cfg(tmp_path, n_val=6), progress=False)
    train, test = pd.read_dataset(path)
    val = pd.read_split(path, "val")
    assert train.meta.puzzle == "sudoku" and train.meta.seq_len == 16 and train.meta.vocab_size == 6
    assert train.inputs.shape == (40, 16) and test.labels.shape == (10, 16) and val.inputs.shape == (6, 16)
    assert description == "generated 4x4, 40 train / 6 val / 10 test, 4-10 givens"
    keys = {name: {rules.split_key(g, 4) for g in np.asarray(split.labels)} for name, split in
            (("train", train), ("val", val), ("test", test))}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    path, description = ds.build_dataset(base_cfg(tmp_path, source="hf", use_builtin_sample=True), progress=False)
    train, test = pd.read_dataset(path)
    assert train.meta.seq_len == 81 and train.n_examples == test.n_examples >= 8
    assert "not held-out" in description


def test_a_harder_set_held_out_from_another_datasets_training_grids(tmp_path):
    first, _ = ds.build_dataset(base_cfg(tmp_path, grid_size=6, n_train=200, n_test=20, givens=[14, 20]), progress=False)
    train_keys = {rules.split_key(g, 6) for g in np.asarray(pd.read_split(first, "train").labels)}
    harder = base_cfg(tmp_path, grid_size=6, n_train=1, n_test=100, givens=[9, 11], seed=1, held_out_from=str(first))
    path, description = ds.build_dataset(harder, progress=False)
    assert path.name.startswith("sudoku6_tr1_te100_g9-11_r0-any_s1_ho") and f"no grid of {first}" in description
    test = pd.read_split(path, "test")
    assert test.n_examples == 100 and not {rules.split_key(g, 6) for g in np.asarray(test.labels)} & train_keys
    unrestricted = gen.make_generated_split(6, 1, 100, (9, 11), 0, -1, 1, workers=1, progress=False)
    assert {rules.split_key(g, 6) for g in unrestricted["test_labels"]} & train_keys  # without it they would meet
    with pytest.raises(errors.ConfigError, match=r"data.held_out_from: '.*nowhere' holds no training split"):
        ds.build_dataset(base_cfg(tmp_path, held_out_from=str(tmp_path / "nowhere")), progress=False)
    with pytest.raises(errors.ConfigError, match="holds puzzles of 36 cells, not 4x4"):
        ds.build_dataset(base_cfg(tmp_path, held_out_from=str(first)), progress=False)
    with pytest.raises(ValueError, match="data.held_out_from: only for data.source 'generated', not 'csv'"):
        ds.check_data_config(base_cfg(tmp_path, source="csv", csv_test="x.csv", csv_train="", held_out_from=str(first)))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid_size": 5}, "data.grid_size: 5 is not one of 4, 6, 9"),
        ({"givens": [10, 5]}, "data.givens"),
        ({"givens": [4, 17]}, "data.givens"),
        ({"source": "kaggle"}, "data.source: 'kaggle' is not one of builtin, generated, hf"),
        ({"max_rating": 0, "min_rating": 2}, "data.max_rating"),
        ({"source": "hf", "splits": ["train"]}, "data.splits"),
        ({"n_train": 12_000_000}, "data.n_train: 12000000 training, 0 validation and 10 held-out puzzles cannot be met"),
        ({"grid_size": 9, "givens": [12, 16]}, r"data.givens: \[12, 16\] allows no 9x9 puzzle"),
        ({"n_val": -1}, "data.n_val: -1 must be >= 0"),
    ],
)
def test_build_dataset_rejects_bad_values(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        ds.build_dataset(base_cfg(tmp_path, **changes), progress=False)
    assert not (tmp_path / "data").exists()
