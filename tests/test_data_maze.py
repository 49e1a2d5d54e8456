"""Mazes: the generator (uniqueness checked by an independent breadth-first path counter),
symmetry-disjoint splits, augmentation, the path checker, the Hugging Face loader against a fake
offline hub cache, the dataset folder, config errors, and a tiny training run end to end."""
import copy
from collections import deque
from pathlib import Path

import numpy as np
import pytest

import data_maze as dm
import errors
import evaluate
import maze_gen as gen
import maze_hf as hf
import maze_rules as rules
import puzzle_dataset as pd
import solve
import train_trm
from config import merge_config
from train_cli import check_config
from train_trm import RUN_CONFIG

CHARS = "# SGo"  # token t is CHARS[t - 1], as the official builder writes it


# ----------------------------------------------------------------------------------------------
# An independent reference: shortest paths counted by a plain breadth-first search on a 2-D list
# ----------------------------------------------------------------------------------------------


def count_shortest_paths(tokens: np.ndarray, size: int) -> tuple[int, int]:
    """(moves of a shortest path from S to G, number of distinct shortest paths); (-1, 0) without one."""
    grid = [[int(t) for t in tokens[r * size:(r + 1) * size]] for r in range(size)]
    start = next((r, c) for r in range(size) for c in range(size) if grid[r][c] == 3)
    goal = next((r, c) for r in range(size) for c in range(size) if grid[r][c] == 4)
    dist, ways = {start: 0}, {start: 1}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < size and 0 <= nc < size and grid[nr][nc] != 1:
                if (nr, nc) not in dist:
                    dist[(nr, nc)] = dist[(r, c)] + 1
                    ways[(nr, nc)] = 0
                    queue.append((nr, nc))
                if dist[(nr, nc)] == dist[(r, c)] + 1:
                    ways[(nr, nc)] += ways[(r, c)]
    return (dist[goal], ways[goal]) if goal in dist else (-1, 0)


def label_is_a_route(maze: np.ndarray, label: np.ndarray, size: int) -> bool:
    """The label's 'o' cells, walked from S, lead to G one 4-adjacent step at a time, each used once."""
    cells = {(int(i) // size, int(i) % size) for i in np.flatnonzero(label == 5)}
    at = divmod(int(np.flatnonzero(maze == 3)[0]), size)
    goal = divmod(int(np.flatnonzero(maze == 4)[0]), size)
    while cells:
        nxt = [p for p in cells if abs(p[0] - at[0]) + abs(p[1] - at[1]) == 1]
        if len(nxt) != 1:
            return False
        at = nxt[0]
        cells.remove(at)
    return abs(goal[0] - at[0]) + abs(goal[1] - at[1]) == 1


def symmetry_key(tokens: np.ndarray, size: int) -> bytes:
    """The test's own canonical form: the smallest of the 8 rotations/reflections of the maze and
    of the maze with S and G exchanged."""
    grid = np.asarray(tokens, np.uint8).reshape(size, size)
    swapped = grid.copy()
    swapped[grid == 3], swapped[grid == 4] = 4, 3
    images = []
    for g in (grid, swapped):
        for k in range(4):
            images += [np.rot90(g, k).tobytes(), np.rot90(g, k).T.tobytes()]
    return min(images)


def to_text(tokens: np.ndarray) -> str:
    return "".join(CHARS[int(t) - 1] for t in tokens)


# A hand-made 4x4 maze, its unique shortest path (7 moves), and wrong answers.
MAZE = ("S.#G"
        "#.#."
        "#..."
        "####")
LABEL = ("So#G"
         "#o#o"
         "#ooo"
         "####")


def tokens(text: str) -> np.ndarray:
    return np.array([{"#": 1, ".": 2, " ": 2, "S": 3, "G": 4, "o": 5}[ch] for ch in text], np.uint8)


# ----------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, n, density, min_len", [(6, 150, 0.3, 6), (12, 150, 0.4, 16), (20, 40, 0.35, 40),
                                                        (30, 6, 0.38, 80), (15, 40, 0.0, 20)])
def test_generated_mazes_have_one_shortest_path_and_it_is_the_label(size, n, density, min_len):
    data = gen.generate_mazes(size, n, density, min_len, seed=3, workers=1, progress=False)
    assert data["inputs"].shape == (n, size * size) and data["inputs"].dtype == np.uint8
    for maze, label in zip(data["inputs"], data["labels"]):
        assert set(np.unique(maze)) <= {1, 2, 3, 4} and (maze == 3).sum() == 1 and (maze == 4).sum() == 1
        moves, count = count_shortest_paths(maze, size)
        assert count == 1, f"{count} shortest paths"
        assert moves >= min_len and (label == 5).sum() == moves - 1
        assert ((label == maze) | ((label == 5) & (maze == 2))).all()  # the label only marks open cells
        assert label_is_a_route(maze, label, size)
    if density == 0.0:  # an open grid has many shortest paths: ties were broken with walls
        assert (data["inputs"] == 1).any()


def test_generator_is_reproducible_across_workers_and_seeds(monkeypatch):
    monkeypatch.setattr(gen, "POOL_AFTER_S", 0.0)  # the second call runs on two worker processes
    one = gen.generate_mazes(10, 600, 0.4, 12, seed=1, workers=1, progress=False)
    two = gen.generate_mazes(10, 600, 0.4, 12, seed=1, workers=2, progress=False)
    other = gen.generate_mazes(10, 600, 0.4, 12, seed=2, workers=1, progress=False)
    assert np.array_equal(one["inputs"], two["inputs"]) and np.array_equal(one["labels"], two["labels"])
    assert not np.array_equal(one["inputs"], other["inputs"])


def test_generator_difficulty_knobs():
    easy = gen.generate_mazes(15, 200, 0.3, 10, seed=0, workers=1, progress=False)
    hard = gen.generate_mazes(15, 200, 0.3, 30, seed=0, workers=1, progress=False)
    assert rules.path_lengths(hard["labels"]).min() >= 30 > rules.path_lengths(easy["labels"]).mean()
    sparse = gen.generate_mazes(15, 200, 0.2, 10, seed=0, workers=1, progress=False)
    assert (sparse["inputs"] == 1).mean() < (easy["inputs"] == 1).mean() < 0.4


@pytest.mark.parametrize("size, n_train, n_val, n_test", [(4, 200, 30, 70), (8, 300, 40, 60)])
def test_splits_share_no_maze_up_to_symmetry(size, n_train, n_val, n_test):
    data = gen.make_generated_split(size, n_train, n_test, 0.3, 2, seed=0, n_val=n_val, workers=1, progress=False)
    keys = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        assert data[f"{split}_inputs"].shape == (n, size * size)
        keys[split] = [symmetry_key(m, size) for m in data[f"{split}_inputs"]]
        assert len(set(keys[split])) == n  # no maze twice, not even rotated, reflected or with S and G exchanged
    assert not set(keys["train"]) & set(keys["val"])
    assert not set(keys["train"]) & set(keys["test"])
    assert not set(keys["val"]) & set(keys["test"])
    # at 4x4 the stream holds rotations and reflections of earlier mazes: the split had to drop them
    raw = gen.generate_mazes(size, n_train + n_val + n_test, 0.3, 2, seed=0, workers=1, progress=False)
    if size == 4:
        assert len({symmetry_key(m, size) for m in raw["inputs"]}) < len({m.tobytes() for m in raw["inputs"]})


def test_test_split_does_not_change_with_the_training_size():
    small = gen.make_generated_split(8, 50, 30, 0.4, 6, seed=4, workers=1, progress=False)
    large = gen.make_generated_split(8, 200, 30, 0.4, 6, seed=4, workers=1, progress=False)
    assert np.array_equal(small["test_inputs"], large["test_inputs"])


def test_request_out_of_reach_fails_fast_naming_the_keys(monkeypatch):
    monkeypatch.setattr(gen, "NO_PROGRESS_CHUNKS", 3)
    with pytest.raises(errors.DataError, match=r"found 0 of 10 test, 0 of 10 train distinct 6x6 mazes with a "
                                               r"shortest path of at least 30 moves after 768 candidates .* "
                                               r"lower data\.maze\.min_path_len, change data\.maze\.wall_density"):
        gen.make_generated_split(6, 10, 10, 0.4, 30, seed=0, workers=1, progress=False)
    with pytest.raises(errors.DataError, match=r"found 100 of 100 test, \d+ of 500 train distinct 4x4 mazes"):
        gen.make_generated_split(4, 500, 100, 0.3, 8, seed=0, workers=1, progress=False)  # 4x4 has too few


# ----------------------------------------------------------------------------------------------
# Rules: parsing, the checker, augmentation
# ----------------------------------------------------------------------------------------------


def test_token_layout_is_the_official_builders():
    text = "# SGo" + "#" * 11
    char2id = np.zeros(256, np.uint8)  # dataset/build_maze_dataset.py: PAD 0, then the charset from 1
    char2id[np.array([ord(c) for c in CHARS])] = np.arange(len(CHARS)) + 1
    official = char2id[np.frombuffer(text.encode(), np.uint8)]
    assert np.array_equal(official, [rules.WALL, rules.OPEN, rules.START, rules.GOAL, rules.PATH] + [1] * 11)
    assert rules.VOCAB_SIZE == 6 and rules.CHARSET == CHARS
    assert np.array_equal(rules.parse_maze(MAZE), tokens(MAZE))
    assert np.array_equal(rules.parse_maze("\n".join(MAZE[i:i + 4] for i in range(0, 16, 4)) + "\n"), tokens(MAZE))
    assert rules.format_maze(tokens(LABEL), 4).splitlines()[0] == "S o # G"


@pytest.mark.parametrize("text, message", [
    ("S.#G#.#.#...###", "expected N x N cells"),
    ("S.#G#.x.#...####", "bad character 'x' at row 2, column 3"),
    ("S.#G#o#.#...####", "bad character 'o' at row 2, column 2"),
    ("S.#G#.#.#.S.####", "the maze has 2 start 'S' cells, expected exactly 1"),
    ("S.#.#.#.#...####", "the maze has 0 goal 'G' cells"),
    ("S.#G\n#.#\n#...\n####", "line 2 has 3"),
])
def test_parse_errors_name_the_place(text, message):
    with pytest.raises(ValueError, match=message):
        rules.parse_maze(text)


def test_checker_accepts_every_label():
    data = gen.generate_mazes(12, 200, 0.4, 14, seed=5, workers=1, progress=False)
    assert rules.valid_paths(data["inputs"], data["labels"], 12).all()
    assert all(rules.path_problem(m, lab, 12) == "" for m, lab in zip(data["inputs"][:20], data["labels"][:20]))
    assert rules.valid_paths(tokens(MAZE)[None], tokens(LABEL)[None], 4).all()
    assert count_shortest_paths(tokens(MAZE), 4) == (7, 1)


def detour_answer(maze: np.ndarray, label: np.ndarray, size: int) -> np.ndarray | None:
    """A route from S to G that avoids one cell of the (unique) shortest path, marked on the maze."""
    for cell in np.flatnonzero(label == 5):
        blocked = maze.copy()
        blocked[cell] = 1
        other = rules.unique_label(blocked, size) if rules.shortest_lengths(blocked[None], size)[0] > 0 else None
        if other is not None:
            answer = maze.copy()
            answer[other == 5] = 5
            return answer
    return None


def test_checker_rejects_gaps_walls_detours_strays_and_empty_answers():
    maze, label = tokens(MAZE), tokens(LABEL)
    cases = {
        "gap": (tokens("So#G" "#o#o" "#.oo" "####"), "the path has a gap"),
        "wall": (tokens("SooG" "#.#." "#..." "####"), "the path goes through a wall at row 1, column 3"),
        "empty": (maze.copy(), "the answer marks no path"),
        "lone": (tokens("S.#G" "#.#." "#..o" "####"), "the path has a gap"),
        "pad": (np.where(np.arange(16) == 0, 0, label).astype(np.uint8), "the answer changes the maze at row 1, column 1"),
    }
    for name, (answer, message) in cases.items():
        assert not rules.valid_paths(maze[None], answer[None], 4)[0], name
        assert message in rules.path_problem(maze, answer, 4), name
    data = gen.generate_mazes(10, 60, 0.35, 10, seed=7, workers=1, progress=False)
    detours = strays = 0
    for m, lab in zip(data["inputs"], data["labels"]):
        longer = detour_answer(m, lab, 10)
        if longer is not None:                  # a real route, but not a shortest one
            assert label_is_a_route(m, longer, 10)
            assert not rules.valid_paths(m[None], longer[None], 10)[0]
            assert "not a shortest path" in rules.path_problem(m, longer, 10)
            detours += 1
        extra = lab.copy()
        far = [c for c in np.flatnonzero(m == 2) if min(abs(c // 10 - p // 10) + abs(c % 10 - p % 10)
                                                         for p in np.flatnonzero(lab >= 3)) > 1]
        if far:                                 # the right path plus a marked cell away from it
            extra[far[0]] = 5
            assert not rules.valid_paths(m[None], extra[None], 10)[0]
            assert "not connected to the path" in rules.path_problem(m, extra, 10)
            strays += 1
    assert detours >= 10 and strays >= 10


def test_checker_counts_a_tied_shortest_path_as_valid():
    maze = tokens("S..." "...." "...." "...G")  # an open 4x4: 20 shortest paths
    assert count_shortest_paths(maze, 4) == (6, 20)
    assert rules.unique_label(maze, 4) is None
    right = tokens("Sooo" "...o" "...o" "...G")
    down = tokens("S..." "o..." "o..." "oooG")
    assert rules.valid_paths(np.stack([maze, maze]), np.stack([right, down]), 4).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_augmentation_keeps_a_valid_maze_with_its_shortest_path(seed):
    data = gen.generate_mazes(9, 120, 0.35, 8, seed=seed, workers=1, progress=False)
    rng = np.random.default_rng(seed)
    inputs, labels = rules.augment(data["inputs"], data["labels"], 9, rng)
    assert inputs.dtype == data["inputs"].dtype and inputs.shape == data["inputs"].shape
    assert rules.valid_paths(inputs, labels, 9).all()
    for maze, label, original in zip(inputs, labels, data["inputs"]):
        moves, count = count_shortest_paths(maze, 9)
        assert count == 1 and (label == 5).sum() == moves - 1 and label_is_a_route(maze, label, 9)
        assert symmetry_key(maze, 9) == symmetry_key(original, 9)  # one of the 8 images of the original
    changed = (inputs != data["inputs"]).any(axis=1).mean()
    assert 0.75 < changed < 1.0  # 7 of 8 transforms move a (non-symmetric) maze
    again = rules.augment(data["inputs"], data["labels"], 9, np.random.default_rng(seed))
    assert np.array_equal(again[0], inputs)  # seeded by the generator passed in


def test_dihedral_numbering_matches_the_official_builder():
    grid = np.arange(16).reshape(4, 4)
    official = [grid, np.rot90(grid, 1), np.rot90(grid, 2), np.rot90(grid, 3), np.fliplr(grid), np.flipud(grid),
                grid.T, np.fliplr(np.rot90(grid, 1))]
    for k, expected in enumerate(official):
        assert np.array_equal(rules.dihedral(grid, k), expected)
    assert sorted(map(tuple, rules.dihedral_index(4))) == sorted({tuple(e.reshape(-1)) for e in official})


# ----------------------------------------------------------------------------------------------
# Hugging Face loader against a fake hub cache
# ----------------------------------------------------------------------------------------------

REPO = "owner/maze-test"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
HEADER = "source,question,answer,rating"


def sample_rows(n: int = 10, size: int = 8) -> list[list[str]]:
    data = gen.generate_mazes(size, n, 0.35, 8, seed=11, workers=1, progress=False)
    return [["gen", to_text(q), to_text(a), str(k)] for k, (q, a) in enumerate(zip(data["inputs"], data["labels"]))]


def csv_line(row: list[str]) -> str:
    return ",".join(f'"{field}"' if " " in field else field for field in row)


def write_hub_cache(root: Path, train_rows: list[list[str]], test_rows: list[list[str]], repo_id: str = REPO) -> Path:
    """Lay files out as huggingface_hub does: refs/main holds the commit, snapshots/<commit>/ the files."""
    owner, name = repo_id.split("/")
    repo = root / f"datasets--{owner}--{name}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for file_name, rows in (("train.csv", train_rows), ("test.csv", test_rows)):
        (snapshot / file_name).write_text("\n".join([HEADER] + [csv_line(r) for r in rows]) + "\n")
    return snapshot


def load(tmp_path: Path, **kwargs) -> dict:
    kwargs.setdefault("progress", False)
    return hf.load_hf(REPO, cache_dir=tmp_path / "hub", local_files_only=True, **kwargs)


def test_hf_loader_reads_the_official_layout(tmp_path):
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:4])
    out = load(tmp_path)
    assert set(out) == {f"{s}_{k}" for s in ("train", "test") for k in ("inputs", "labels", "ratings")}
    assert out["train_inputs"].shape == (10, 64) and out["test_inputs"].shape == (4, 64)
    assert [to_text(q) for q in out["train_inputs"]] == [r[1] for r in rows]  # spaces kept: they are cells
    assert [to_text(a) for a in out["train_labels"]] == [r[2] for r in rows]
    assert out["train_ratings"].tolist() == list(range(10))


def test_hf_subsets_are_seeded_and_val_comes_out_of_train(tmp_path):
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:4])
    a = load(tmp_path, train_subset=6, seed=0)
    assert a["train_ratings"].tolist() == load(tmp_path, train_subset=6, seed=0)["train_ratings"].tolist()
    assert a["train_ratings"].tolist() == sorted(a["train_ratings"].tolist())  # file order kept
    assert any(load(tmp_path, train_subset=6, seed=s)["train_ratings"].tolist() != a["train_ratings"].tolist()
               for s in range(1, 4))
    v = load(tmp_path, train_subset=6, val_subset=2, seed=0)
    assert len(v["train_ratings"]) == 4 and len(v["val_ratings"]) == 2
    assert sorted(v["train_ratings"].tolist() + v["val_ratings"].tolist()) == a["train_ratings"].tolist()
    with pytest.raises(errors.ConfigError, match="data.maze.val_subset: 6 leaves no training rows"):
        load(tmp_path, train_subset=6, val_subset=6)


def bad_row(kind: str) -> list[str]:
    source, question, answer, rating = sample_rows()[0]
    if kind == "wrong length":
        question = question[:63]
    elif kind == "bad character":
        question = question[:11] + "x" + question[12:]
    elif kind == "two starts":
        j = question.index(" ")
        question, answer = question[:j] + "S" + question[j + 1:], answer[:j] + "S" + answer[j + 1:]
    elif kind == "gap":
        j = answer.index("o")
        answer = answer[:j] + " " + answer[j + 1:]
    elif kind == "rating":
        rating = "hard"
    return [source, question, answer, rating]


@pytest.mark.parametrize("kind, message", [
    ("wrong length", "question has 63 characters, expected 64"),
    ("bad character", "bad character 'x' at position 12 of the question"),
    ("two starts", "the question has 2 start 'S' cells, expected 1"),
    ("gap", "the answer is not a shortest path from S to G: the path has a gap"),
    ("rating", "rating 'hard' is not an integer"),
])
def test_hf_bad_rows_are_named_with_file_and_line_or_skipped(tmp_path, capsys, kind, message):
    rows = sample_rows()
    train = rows[:3] + [bad_row(kind)] + rows[3:]  # the bad row is on line 5 (the header is line 1)
    write_hub_cache(tmp_path / "hub", train, rows[:2])
    with pytest.raises(errors.DataError, match=rf"train\.csv line 5: {message}.*data\.maze\.skip_bad_rows"):
        load(tmp_path)
    out = load(tmp_path, skip_bad_rows=True)
    assert len(out["train_inputs"]) == len(rows)
    assert "skipped 1 bad rows (first: line 5" in capsys.readouterr().err


def test_hf_damaged_download_and_missing_repo_say_what_to_do(tmp_path):
    rows = sample_rows()
    snapshot = write_hub_cache(tmp_path / "hub", rows, rows[:3])
    (snapshot / "test.csv").write_bytes((snapshot / "test.csv").read_bytes()[:150] + b"\xff\xfe garbage")
    with pytest.raises(errors.DataError, match=r'test\.csv: not UTF-8 text.*"maze": \{"force_download": true\}'):
        load(tmp_path)
    with pytest.raises(errors.DataError, match="hf download nobody/missing --repo-type dataset"):
        hf.load_hf("nobody/missing", cache_dir=tmp_path / "hub", local_files_only=True, progress=False)


# ----------------------------------------------------------------------------------------------
# The data section, the dataset folder, a tiny run
# ----------------------------------------------------------------------------------------------


def maze_cfg(tmp_path: Path, **maze) -> dict:
    cfg = copy.deepcopy(RUN_CONFIG["data"])
    cfg.update(puzzle="maze", data_dir=str(tmp_path / "data"))
    cfg["maze"].update(size=6, n_train=40, n_test=10, min_path_len=5, wall_density=0.3)
    cfg["maze"].update(maze)
    return cfg


def test_dataset_folder_official_layout_built_once(tmp_path, capsys):
    cfg = maze_cfg(tmp_path, n_val=5)
    path, description = dm.build_dataset(cfg, progress=False)
    assert path.name == "maze6_tr40_va5_te10_p5_w0.3_s0"
    assert description == ("generated mazes 6x6, 40 train / 5 val / 10 test, shortest path >= 5 moves, "
                           "wall density 0.3")
    train, test = pd.read_dataset(path)
    val = pd.read_split(path, "val")
    meta = train.meta.to_json()
    assert {k: meta[k] for k in ("pad_id", "ignore_label_id", "vocab_size", "seq_len", "puzzle")} == \
        {"pad_id": 0, "ignore_label_id": 0, "vocab_size": 6, "seq_len": 36, "puzzle": "maze"}
    assert (train.n_examples, val.n_examples, test.n_examples) == (40, 5, 10)
    assert dm.valid_fn(train.meta)(np.asarray(test.inputs), np.asarray(test.labels)).all()
    assert set(dm.breakdowns(test)) == {"by_path_len"} and dm.breakdowns(test)["by_path_len"].min() >= 5
    assert dm.build_dataset(cfg, progress=False) == (path, description)  # found, not built again
    first = np.array(train.labels)  # a copy: the split's arrays are memory-mapped
    (path / "train" / "all__labels.npy").write_bytes(b"broken")
    again, _ = dm.build_dataset(cfg, progress=False)
    assert "building it again, it is damaged" in capsys.readouterr().err
    assert np.array_equal(np.load(again / "train" / "all__labels.npy"), first)


def test_hf_dataset_folder_through_the_fake_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at call time: no network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:4])
    cfg = maze_cfg(tmp_path, source="hf", repo_id=REPO, train_subset=0, test_subset=0, val_subset=2)
    path, description = dm.build_dataset(cfg, progress=False)
    assert path.name == "hf_owner--maze-test_sub0-0_va2_s0"
    assert description == f"{REPO} (train/test.csv), 8x8 mazes, 8 train / 2 val / 4 test"
    train, test = pd.read_dataset(path)
    assert train.meta.puzzle == "maze" and sorted(train.extras["ratings"].tolist() +
                                                  pd.read_split(path, "val").extras["ratings"].tolist()) == list(range(10))


@pytest.mark.parametrize("maze, message", [
    ({"size": 3}, "data.maze.size: 3 is not in 4..30"),
    ({"size": 31}, "data.maze.size: 31 is not in 4..30"),
    ({"wall_density": 1.0}, r"data.maze.wall_density: 1.0 must be in \[0, 1\)"),
    ({"min_path_len": 36}, "data.maze.min_path_len: 36 must be in 1..35 for 6x6"),
    ({"n_train": 0}, "data.maze.n_train: 0 must be >= 1"),
    ({"source": "kaggle"}, "data.maze.source: 'kaggle' is not one of generated, hf"),
    ({"source": "hf", "test_subset": -1}, "data.maze.test_subset: -1 must be >= 0"),
])
def test_bad_maze_values_are_named_before_any_work(tmp_path, maze, message):
    config = merge_config(RUN_CONFIG, {"data": {"puzzle": "maze", "data_dir": str(tmp_path / "data"),
                                                "maze": {"size": 6, "min_path_len": 5, **maze}}}, "m.json")
    with pytest.raises(errors.ConfigError, match=rf"m.json: {message}"):
        check_config(config, "m.json")
    assert not (tmp_path / "data").exists()


def test_unknown_maze_key_is_named_with_the_nearest(tmp_path):
    with pytest.raises(errors.ConfigError, match=r"m.json: unknown key 'data.maze.min_path_length' "
                                                 r"\(did you mean 'min_path_len'\?\)"):
        merge_config(RUN_CONFIG, {"data": {"maze": {"min_path_length": 3}}}, "m.json")
    with pytest.raises(errors.ConfigError, match=r"m.json: data.maze: expected object, got int 3"):
        merge_config(RUN_CONFIG, {"data": {"maze": 3}}, "m.json")


@pytest.fixture(scope="module")
def trained_maze(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("maze")
    config = merge_config(RUN_CONFIG, {
        "model": {"hidden_size": 32, "T": 2, "n": 2, "N_sup": 4, "mlp_t": False, "pos_encoding": "rope"},
        "data": {"puzzle": "maze", "data_dir": str(tmp / "data"),
                 "maze": {"size": 6, "n_train": 200, "n_val": 20, "n_test": 30, "min_path_len": 5}},
        "training": {"runs_dir": str(tmp / "runs"), "run_name": "maze", "batch_size": 16, "max_steps": 30,
                     "eval_every": 15, "log_every": 10, "warmup_steps": 5, "device": "cpu", "dtype": "float32"}},
        "tiny maze")
    result = train_trm.main(config, progress=False)
    return {"tmp": tmp, "result": result, "run_dir": tmp / "runs" / "maze"}


def test_tiny_maze_run_end_to_end(trained_maze, capsys):
    result = trained_maze["result"]
    assert result["step"] == 30 and result["n"] == 30
    assert result["exact_acc"] <= result["validity"]  # an exact answer is the label: a shortest path
    assert result["token_acc"] > 0.5  # walls and open cells are copied early
    report = evaluate.main(["--checkpoint", str(trained_maze["run_dir"] / "best.pt"), "--depth", "3",
                            "--no-progress", "--dtype", "float32", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "validity" in report["metrics"] and "by_path_len" in report["metrics"]
    assert "exact_acc" in out and "validity" in out and "by path len" in out


def test_solve_draws_a_maze_and_the_path_step_by_step(trained_maze, capsys):
    data = pd.read_split(next((trained_maze["tmp"] / "data").iterdir()), "test")
    maze = np.asarray(data.inputs[0])
    text = "\n".join(to_text(maze[r * 6:(r + 1) * 6]).replace(" ", ".") for r in range(6))  # 6 lines of 6 cells
    args = ["--checkpoint", str(trained_maze["run_dir"] / "last.pt"), "--dtype", "float32", "--device", "cpu"]
    assert solve.main(args + ["--steps", "--max-steps", "3", text]) == 0
    out = capsys.readouterr().out
    assert rules.format_maze(maze, 6) in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("step ")] == ["step 1", "step 2", "step 3"]
    assert "valid (a shortest path from S to G): " in out and "matches the unique shortest path: " in out
    with pytest.raises(SystemExit, match=r"error: puzzle: the maze is 4x4 but the checkpoint was trained on 6x6"):
        solve.main(args + [MAZE])
    walled_in = "S#...." "##...." "......" "......" "......" ".....G"
    with pytest.raises(SystemExit, match="error: puzzle: the maze has no path from S to G; not answered"):
        solve.main(args + [walled_in])
