"""The official dataset layout: a hand-made folder loads and samples as the official reader does;
writer -> reader round trip; every kind of broken dataset is named."""
import json
from collections import Counter

import numpy as np
import pytest

import puzzle_dataset as pd
from errors import ConfigError, DataError

SEQ, VOCAB = 4, 6


def hand_made(root, split="train", ignore=0, break_with=None):
    """2 groups: group 0 holds puzzles 0 (2 examples) and 1 (1 example); group 1 holds puzzle 2
    (3 examples). Written with plain numpy and json, not the project's writer."""
    folder = root / split
    folder.mkdir(parents=True)
    arrays = {
        "inputs": np.arange(6 * SEQ).reshape(6, SEQ) % 5 + 1,
        "labels": np.arange(6 * SEQ).reshape(6, SEQ) % 5 + 1,
        "puzzle_identifiers": np.array([1, 2, 0], np.int32),
        "puzzle_indices": np.array([0, 2, 3, 6], np.int32),
        "group_indices": np.array([0, 2, 3], np.int32),
    }
    arrays["labels"][0, 0] = ignore  # one position without a target
    meta = {"pad_id": 0, "ignore_label_id": ignore, "blank_identifier_id": 0, "vocab_size": VOCAB, "seq_len": SEQ,
            "num_puzzle_identifiers": 3, "total_groups": 2, "mean_puzzle_examples": 2.0, "total_puzzles": 3,
            "sets": ["all"]}
    if break_with:
        break_with(arrays, meta)
    (folder / "dataset.json").write_text(json.dumps(meta))
    for key, arr in arrays.items():
        np.save(folder / f"all__{key}.npy", arr)
    return root


def test_hand_made_folder_loads_and_samples_one_puzzle_per_group_per_epoch(tmp_path):
    hand_made(tmp_path)
    split = pd.read_split(tmp_path, "train")
    assert (split.n_examples, split.n_puzzles, split.n_groups) == (6, 3, 2)
    assert split.meta.seq_len == SEQ and split.meta.puzzle == ""
    assert split.example_puzzles().tolist() == [0, 0, 1, 2, 2, 2]
    assert split.labels_for_training(np.arange(2))[0, 0] == pd.IGNORE_LABEL
    sampler = pd.TrainSampler(split, seed=3)
    puzzles_of = split.example_puzzles()
    drawn = np.concatenate([sampler.next(k) for k in [1, 0, 5, 2] * 100])
    runs = []  # consecutive examples of one puzzle: (puzzle, examples)
    for i in drawn.tolist():
        if runs and runs[-1][0] == puzzles_of[i] and len(runs[-1][1]) < np.diff(split.puzzle_indices)[puzzles_of[i]]:
            runs[-1][1].append(i)
        else:
            runs.append((puzzles_of[i], [i]))
    complete = runs[:len(runs) // 2 * 2]
    seen = Counter()
    for a, b in zip(complete[::2], complete[1::2]):  # an epoch: one puzzle of each group, in some order
        assert sorted([a[0] in (0, 1), b[0] in (0, 1)]) == [False, True]
        for puzzle, examples in (a, b):
            start, end = split.puzzle_indices[puzzle], split.puzzle_indices[puzzle + 1]
            assert sorted(examples) == list(range(start, end))  # all its examples, none twice
            seen[puzzle] += 1
    assert seen[2] == len(complete) // 2 and seen[0] > 20 and seen[1] > 20
    assert sampler.epoch >= len(complete) // 2 - 1


def test_sampler_resumes_exactly(tmp_path):
    hand_made(tmp_path)
    split = pd.read_split(tmp_path, "train")
    a = pd.TrainSampler(split, seed=0)
    first = [a.next(4) for _ in range(5)]
    state = a.state_dict()
    rest = [a.next(3) for _ in range(7)]
    b = pd.TrainSampler(split, seed=99)
    b.load_state_dict(state)
    assert all(np.array_equal(x, y) for x, y in zip(rest, [b.next(3) for _ in range(7)]))
    assert len(np.concatenate(first)) == 20


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, VOCAB, (7, SEQ)).astype(np.uint8)
    labels = rng.integers(1, VOCAB, (7, SEQ)).astype(np.uint8)
    arrays = pd.split_arrays(inputs, labels, puzzle_sizes=[2, 1, 4], group_sizes=[1, 2], puzzle_identifiers=[0, 1, 1])
    arrays["ratings"] = np.arange(7, dtype=np.int32)
    meta = pd.make_metadata(arrays, vocab_size=VOCAB, num_puzzle_identifiers=2, puzzle="toy")
    pd.write_dataset(tmp_path / "ds", {"train": (arrays, meta), "test": (arrays, meta)}, identifiers=["a", "b"])
    train, test = pd.read_dataset(tmp_path / "ds")
    for key in pd.FIELDS:
        assert np.array_equal(getattr(train, key), arrays[key]), key
    assert np.array_equal(train.extras["ratings"], arrays["ratings"])
    assert train.meta == meta and train.meta.puzzle == "toy"
    assert json.loads((tmp_path / "ds" / "identifiers.json").read_text()) == ["a", "b"]
    with pytest.raises(FileExistsError):  # never overwrites a dataset
        pd.write_dataset(tmp_path / "ds", {"train": (arrays, meta)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # and leaves no temporary folder


def _set(key, value):
    def change(arrays, meta):
        (meta if key in meta else arrays)[key] = value
    return change


@pytest.mark.parametrize("change,message", [
    (_set("puzzle_indices", np.array([0, 3, 2, 6], np.int32)), r"all__puzzle_indices.npy: index 2 is 2, not above index 1"),
    (_set("puzzle_indices", np.array([0, 2, 3, 9], np.int32)), r"all__puzzle_indices.npy: last index is 9, must be 6"),
    (_set("group_indices", np.array([0, 2, 5], np.int32)), r"all__group_indices.npy: last index is 5, must be 3"),
    (_set("group_indices", np.array([1, 2, 3], np.int32)), r"all__group_indices.npy: index 0 is 1, must be 0"),
    (_set("seq_len", 5), r"all__inputs.npy: shape \(6, 4\), expected \(examples, seq_len=5\)"),
    (_set("vocab_size", 5), r"all__inputs.npy: token 5 at example 1, position 0 is outside 0..4"),
    (_set("puzzle_identifiers", np.array([0, 3, 0], np.int32)), r"all__puzzle_identifiers.npy: identifier 3 of puzzle 1"),
    (_set("sets", ["all", "extra"]), r"train/extra__inputs.npy: missing"),
    (_set("labels", np.zeros((5, SEQ), np.int64)), r"all__labels.npy: shape \(5, 4\) differs from the inputs'"),
])
def test_broken_datasets_are_named(tmp_path, change, message):
    hand_made(tmp_path, break_with=change)
    with pytest.raises(DataError, match=message):
        pd.read_split(tmp_path, "train")


def test_missing_and_garbled_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"train/dataset.json: missing"):
        pd.read_split(tmp_path, "train")
    hand_made(tmp_path)
    (tmp_path / "train" / "all__labels.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"all__labels.npy: not a readable .npy array"):
        pd.read_split(tmp_path, "train")
    (tmp_path / "train" / "dataset.json").write_text('{"pad_id": 0}')
    with pytest.raises(DataError, match=r"dataset.json: missing metadata field\(s\) ignore_label_id"):
        pd.read_split(tmp_path, "train")


def test_a_run_trains_on_a_hand_made_folder_with_one_key(tmp_path):
    """data.path: the trainer reads any folder in the official layout (no puzzle type named: no
    augmentation, no validity), with an ignored label position, and writes the metadata to the
    checkpoint."""
    import torch

    import train_trm
    from test_train import tiny_run_config
    hand_made(tmp_path / "ds", "train")
    hand_made(tmp_path / "ds", "test")
    config = tiny_run_config(tmp_path, max_steps=6, eval_every=3, batch_size=4)
    config["data"]["path"] = str(tmp_path / "ds")
    result = train_trm.main(config, progress=False)
    assert result["step"] == 6 and 0.0 <= result["exact_acc"] <= 1.0 and result["n"] == 6
    ckpt = torch.load(tmp_path / "runs" / "tiny" / "last.pt", weights_only=True)
    assert ckpt["dataset"]["seq_len"] == SEQ and ckpt["dataset"]["vocab_size"] == VOCAB
    assert ckpt["model_config"]["seq_len"] == SEQ
    config["data"]["path"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="data.path: .*missing is not a folder"):
        train_trm.main(config, progress=False)
