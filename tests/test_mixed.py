"""Several datasets in one run (data.sources, impl/mixed.py): the combined dataset, each row mapped
back to its own puzzle, per-source metrics from a run, and config errors that name the entry."""
import copy
import json

import numpy as np
import pytest

import mixed
import puzzles
import train_trm
from errors import ConfigError
from train_cli import check_config

SUDOKU = {"puzzle": "sudoku", "grid_size": 4, "n_train": 64, "n_val": 8, "n_test": 16, "givens": [8, 10]}
MAZE = {"puzzle": "maze", "maze": {"size": 5, "n_train": 64, "n_val": 8, "n_test": 16, "min_path_len": 3}}


def data_section(data_dir, sources=(SUDOKU, MAZE)) -> dict:
    cfg = copy.deepcopy(train_trm.RUN_CONFIG["data"])
    cfg.update(data_dir=str(data_dir), sources=copy.deepcopy(list(sources)))
    return cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def loaded(data_dir):
    """The mixed dataset and its two sources, each loaded on its own."""
    cfg = data_section(data_dir)
    own = [puzzles.load(c, progress=False) for c in mixed.source_configs(cfg)]
    return puzzles.load(cfg, progress=False), own


def test_the_mixed_dataset_pads_shifts_and_keeps_each_source(loaded):
    data, (sudoku, maze) = loaded
    meta = data.train.meta
    assert meta.sets == ["sudoku", "maze"] and meta.puzzle == "mixed"
    assert meta.seq_len == max(sudoku.train.meta.seq_len, maze.train.meta.seq_len) == 25
    assert meta.vocab_size == 1 + (sudoku.train.meta.vocab_size - 1) + (maze.train.meta.vocab_size - 1)
    assert meta.num_puzzle_identifiers == 2 and data.val is not None
    n = sudoku.train.n_examples
    assert data.train.n_examples == n + maze.train.n_examples
    assert set(data.train.example_identifiers()[:n]) == {0} and set(data.train.example_identifiers()[n:]) == {1}
    sources = mixed.sources_of(meta)
    for k, (source, own) in enumerate(zip(sources, (sudoku, maze))):
        rows = slice(0, n) if k == 0 else slice(n, None)
        inputs, labels = np.asarray(data.train.inputs[rows]), np.asarray(data.train.labels[rows])
        assert (mixed.row_sources(sources, inputs) == k).all()
        assert np.array_equal(source.to_own(inputs), np.asarray(own.train.inputs))   # back to its own tokens
        assert np.array_equal(source.to_own(labels), np.asarray(own.train.labels))
        assert (inputs[:, source.meta.seq_len:] == 0).all()                           # padded with PAD
    assert np.asarray(data.train.inputs[:n]).max() <= sources[1].token_offset < np.asarray(data.train.inputs[n:]).min()


def test_validity_and_augmentation_answer_each_row_by_its_own_puzzle(loaded):
    data, _ = loaded
    hooks, meta = data.hooks, data.test.meta
    inputs, labels = np.asarray(data.test.inputs), np.asarray(data.test.labels)
    valid = hooks.valid_fn(meta)
    assert valid(inputs, labels).all()                                  # the solutions obey each puzzle's rules
    wrong = np.full_like(labels, inputs.max() + 1)                      # tokens of no source: invalid everywhere
    assert not valid(inputs, wrong).any()
    rng = np.random.default_rng(0)
    new_inputs, new_labels = hooks.augment(inputs, labels, meta, rng)
    assert not np.array_equal(new_inputs, inputs)
    sources = mixed.sources_of(meta)
    assert np.array_equal(mixed.row_sources(sources, new_inputs), mixed.row_sources(sources, inputs))
    assert valid(new_inputs, new_labels).all()
    groups = hooks.groups(inputs)["by_source"]
    assert (groups == "sudoku").sum() == 16 and (groups == "maze").sum() == 16


def test_a_two_dataset_run_reports_each_datasets_metrics(tmp_path, data_dir):
    config = copy.deepcopy(train_trm.RUN_CONFIG)
    config["data"] = data_section(data_dir)
    config["model"].update(hidden_size=16, T=1, n=1, N_sup=2)
    config["training"].update(runs_dir=str(tmp_path / "runs"), run_name="mix", batch_size=8, max_steps=2,
                              eval_every=2, log_every=1, warmup_steps=1, device="cpu")
    check_config(config)
    train_trm.main(config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "runs" / "mix" / "log.jsonl").read_text().splitlines()]
    for record in [r for r in log if r["kind"] in ("eval", "test")]:
        assert set(record["by_source"]) == {"sudoku", "maze"}
        assert sum(g["n"] for g in record["by_source"].values()) == record["n"]
        assert "validity" in record["by_source"]["maze"]


@pytest.mark.parametrize("change,message", [
    ({"path": "somewhere"}, "data.sources: set data.path or data.sources"),
    ({"sources": [SUDOKU, 3]}, r"data.sources\[1\]: expected an object"),
    ({"sources": [SUDOKU, {"puzzle": "maze", "maze": {"sise": 5}}]}, r"data.sources\[1\].maze.sise"),
    ({"sources": [SUDOKU, {"puzzle": "sudoku", "grid_size": 5}]}, r"data.sources\[1\]: data.grid_size"),
    ({"sources": [{"sources": []}]}, r"data.sources\[0\].sources"),
])
def test_bad_sources_are_rejected_naming_the_entry(tmp_path, change, message):
    config = copy.deepcopy(train_trm.RUN_CONFIG)
    config["data"] = {**data_section(tmp_path), **change}
    with pytest.raises(ConfigError, match=message):
        check_config(config)
