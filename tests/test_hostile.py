"""Hostile input: each case ends in one clear line naming the culprit, and nothing is half-done."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data_sudoku as ds
import train_trm
from config import load_config, merge_config
from errors import ConfigError, DataError
from test_data_sudoku import HEADER, REPO as HF_REPO, base_cfg, load, sample_rows, write_hub_cache
from test_train import tiny_run_config
from train_cli import check_config
from train_trm import RUN_CONFIG

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,expected", [
    ('{"training": {"lr": 1e-3, "lr": 2e-3}}', r"over.json: duplicate key 'lr'"),
    ('{"model": {}, "model": {"T": 3}}', r"over.json: duplicate key 'model'"),
    ('{"training": {"lr": NaN}}', r"over.json: training.lr: NaN is not a finite number"),
    ('{"training": {"lr": Infinity}}', r"over.json: training.lr: Infinity is not a finite number"),
    ('{"data": {"givens": [-Infinity, 3]}}', r"over.json: data.givens\[0\]: -Infinity is not a finite number"),
    ('{"training": {"lr": 1e999}}', r"over.json: training.lr: 1e999 is not a finite number"),
    ('[1, 2]', r"over.json: the top level must be a JSON object, got list"),
    ('', r"over.json: invalid JSON at line 1, column 1"),
])
def test_json_that_would_silently_do_something_else_is_refused(tmp_path, text, expected):
    path = tmp_path / "over.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, RUN_CONFIG)


def test_config_that_is_a_folder_or_not_text_is_named(tmp_path):
    (tmp_path / "cfg").mkdir()
    with pytest.raises(ConfigError, match=r"cfg: cannot read config file \(Is a directory\)"):
        load_config(tmp_path / "cfg", RUN_CONFIG)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"training": {"run_name": "caf\u00e9"}}'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.json: not a UTF-8 text file \(byte 30"):
        load_config(latin1, RUN_CONFIG)
    bom = tmp_path / "bom.json"  # a byte-order mark (Windows editors) is fine
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"model": {"T": 4}}')
    assert load_config(bom, RUN_CONFIG)["model"]["T"] == 4


@pytest.mark.parametrize("key,value", [("hidden_size", 10**9), ("batch_size", 10**12)])
def test_absurd_sizes_are_refused_before_allocating_with_an_estimate(tmp_path, key, value):
    config = tiny_run_config(tmp_path)
    config["model" if key == "hidden_size" else "training"][key] = value
    with pytest.raises(ConfigError, match=rf"{value}.*needs at least [\d,.]+ GiB .*more than the [\d,.]+ GiB"):
        train_trm.main(config, progress=False)
    assert not (tmp_path / "runs" / "tiny" / "config.json").exists()


@pytest.mark.parametrize("section,key,value,expected", [
    ("data", "grid_size", 16, "data.grid_size: 16 is not one of 4, 6, 9"),
    ("data", "n_train", 0, "data.n_train: 0 must be >= 1"),
    ("data", "n_test", 0, "data.n_test: 0 must be >= 1"),
    ("data", "givens", [10, 90], r"data.givens: \[10, 90\] must satisfy"),
    ("data", "givens", [3], r"data.givens: expected \[lo, hi\]"),
])
def test_impossible_data_requests_are_named(section, key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        check_config(merge_config(RUN_CONFIG, {section: {key: value}}, "x.json"), "x.json")


def test_hf_csv_with_byte_order_mark_and_crlf_lines_loads(tmp_path):
    rows = sample_rows()
    snapshot = write_hub_cache(tmp_path / "hub", rows, rows[:3])
    for name in ("train.csv", "test.csv"):
        text = (snapshot / name).read_text()
        (snapshot / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert HEADER.startswith("source")
    out = load(tmp_path)
    assert out["train_inputs"].shape == (len(rows), 81) and out["test_inputs"].shape == (3, 81)
    assert (out["train_labels"] == ds.builtin_sample()["labels"]).all()


def test_hf_csv_not_utf8_is_named_with_the_refetch_hint(tmp_path):
    rows = sample_rows()
    snapshot = write_hub_cache(tmp_path / "hub", rows, rows[:3])
    (snapshot / "train.csv").write_bytes((snapshot / "train.csv").read_bytes()[:200] + b"\xff\xfe garbage")
    with pytest.raises(DataError, match=r"train.csv.*force_download"):
        load(tmp_path)


def test_damaged_hf_dataset_folder_is_rebuilt_from_the_csv(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at call time: no network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    rows = sample_rows()
    write_hub_cache(tmp_path / "hub", rows, rows[:3])
    cfg = base_cfg(tmp_path, source="hf", repo_id=HF_REPO)
    path, _ = ds.build_dataset(cfg, progress=False)
    first = np.load(path / "train" / "all__inputs.npy")
    (path / "train" / "all__inputs.npy").write_bytes(first.tobytes()[:100])
    again, _ = ds.build_dataset(cfg, progress=False)
    assert "building it again, it is damaged" in capsys.readouterr().err
    assert np.array_equal(np.load(again / "train" / "all__inputs.npy"), first)


def one_line_error(cmd: list[str], tmp_path: Path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}  # no network, ever
    proc = subprocess.run([sys.executable, *cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: "), proc.stderr
    return lines[-1]


def test_every_script_ends_a_user_error_in_one_line(tmp_path):
    impl = REPO / "impl"
    nan = tmp_path / "nan.json"
    nan.write_text('{"training": {"lr": NaN}}')
    assert "training.lr: NaN" in one_line_error([str(impl / "train_trm.py"), "--config", str(nan)], tmp_path)
    assert "training.lr: NaN" in one_line_error([str(impl / "train_trm_jepa.py"), "--config", str(nan)], tmp_path)
    (tmp_path / "folder.pt").mkdir()
    assert "folder.pt: is a folder" in one_line_error(
        [str(impl / "evaluate.py"), "--checkpoint", str(tmp_path / "folder.pt")], tmp_path)
    binary = tmp_path / "puzzles.txt"
    binary.write_bytes(b"\x80\x81\x82")
    assert "puzzles.txt: not a UTF-8 text file" in one_line_error(
        [str(impl / "solve.py"), "--file", str(binary), "--checkpoint", str(tmp_path / "none.pt")], tmp_path)
    assert "--device: unknown device 'gpu0'" in one_line_error([str(impl / "bench.py"), "--device", "gpu0"], tmp_path)
    # a damaged download: the data error of a run is one line too
    config = tiny_run_config(tmp_path)
    config["data"].update(source="hf", repo_id="nobody/missing")
    run = tmp_path / "run.json"
    run.write_text(json.dumps(config))
    line = one_line_error([str(impl / "train_trm.py"), "--config", str(run), "--no-progress"], tmp_path)
    assert "nobody/missing/train.csv is not in the Hugging Face cache" in line
