"""Training-script tests: config overrides and their errors, a tiny run, checkpoints, resume."""
import copy
import json

import numpy as np
import pytest
import torch

import checkpoint
import puzzles
import train_trm
from device import pick_dtype
from metrics import evaluate
import config as config_file
from config import merge_config
from errors import ConfigError
from train_cli import check_config
from train_trm import RUN_CONFIG
from trm import TRM, TRMConfig


def tiny_run_config(tmp_path, **training) -> dict:
    config = copy.deepcopy(RUN_CONFIG)
    config["model"].update(hidden_size=32, T=2, n=2, N_sup=4)
    config["data"].update(grid_size=4, n_train=300, n_val=0, n_test=64, givens=[8, 10], data_dir=str(tmp_path / "data"))
    config["training"].update(runs_dir=str(tmp_path / "runs"), run_name="tiny", batch_size=16, max_steps=40, device="cpu",
                              eval_every=20, log_every=5, warmup_steps=5, lr=3e-3, eval_batch_size=64)
    config["training"].update(training)
    return config


# -- configuration ------------------------------------------------------------------------------

def load_config(path):
    return config_file.load_config(path, RUN_CONFIG)


def write(tmp_path, text: str, name: str = "over.json"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_override_deep_merges(tmp_path):
    default_T = RUN_CONFIG["model"]["T"]
    path = write(tmp_path, '{"model": {"T": 7}, "training": {"lr": 1}}')
    config = load_config(path)
    assert config["model"]["T"] == 7
    assert config["model"]["n"] == RUN_CONFIG["model"]["n"]          # untouched sibling kept
    assert config["training"]["lr"] == 1.0 and isinstance(config["training"]["lr"], float)
    assert RUN_CONFIG["model"]["T"] == default_T                      # the default is not mutated


def test_unknown_key_names_path_file_and_suggestion(tmp_path):
    path = write(tmp_path, '{"model": {"hiden_size": 64}}', "tiny.json")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "tiny.json" in str(e.value)
    assert "'model.hiden_size'" in str(e.value)
    assert "did you mean 'hidden_size'" in str(e.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trainig'.*did you mean 'training'"):
        load_config(write(tmp_path, '{"trainig": {}}'))


@pytest.mark.parametrize("text,where,expected", [
    ('{"training": {"batch_size": "64"}}', "training.batch_size", "expected int, got str"),
    ('{"training": {"batch_size": 6.5}}', "training.batch_size", "expected int, got float"),
    ('{"training": {"ema": 1}}', "training.ema", "expected bool, got int"),
    ('{"model": {"N_sup": true}}', "model.N_sup", "expected int, got bool"),
    ('{"data": {"givens": [4, "x"]}}', r"data.givens\[1\]", "expected int, got str"),
    ('{"model": 3}', "model", "expected object"),
])
def test_wrong_type_names_key(tmp_path, text, where, expected):
    with pytest.raises(ConfigError, match=rf"over.json: {where}: {expected}"):
        load_config(write(tmp_path, text))


def test_bad_json_reports_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "model": {"T": 2,}\n}\n')
    with pytest.raises(ConfigError, match=r"over.json: invalid JSON at line 2, column 20"):
        load_config(path)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: cannot read"):
        load_config(tmp_path / "nope.json")


@pytest.mark.parametrize("section,key,value,expected", [
    ("model", "T", 0, "model.T: 0 must be >= 1"),
    ("model", "n", 0, "model.n: 0 must be >= 1"),
    ("training", "batch_size", 0, "training.batch_size: 0 must be >= 1"),
    ("training", "loss", "hinge", "training.loss: 'hinge' must be one of"),
    ("training", "dtype", "float16", "training.dtype"),
    ("training", "optimizer", "sgd", "training.optimizer: 'sgd' must be one of adamw, adam_atan2"),
    ("model", "mlp_t_norm", "channel", "model.mlp_t_norm: 'channel' must be sequence or hidden"),
    ("data", "grid_size", 5, "data.grid_size: 5 is not one of 4, 6, 9"),
    ("data", "givens", [20, 10], "data.givens"),
    ("data", "source", "kaggle", "data.source: 'kaggle' is not one of"),
    ("training", "lr_decay_over", "epochs", "training.lr_decay_over: 'epochs' must be one of steps, time"),
    ("training", "lr_decay_over", "time", r"training.lr_decay_over: 'time' needs training.time_limit_min > 0"),
    ("training", "lr_decay_over", "first", r"training.lr_decay_over: 'first' needs training.time_limit_min > 0"),
])
def test_impossible_values_rejected(section, key, value, expected):
    config = merge_config(RUN_CONFIG, {section: {key: value}}, "x.json")
    with pytest.raises(ConfigError, match=expected):
        check_config(config, "x.json")


def test_cli_exits_with_message_before_any_work(tmp_path, capsys):
    path = write(tmp_path, '{"model": {"L_cycles": 6}}', "tiny.json")
    with pytest.raises(SystemExit) as e:
        train_trm.cli(["--config", str(path)])
    assert "tiny.json: unknown key 'model.L_cycles' (the official code's name for 'n')" in str(e.value.code)
    assert not (tmp_path / "runs").exists()


def test_lr_decays_over_the_steps_or_over_the_time_limit():
    """Warmup over the first steps, then a cosine to lr * lr_min_ratio: over the steps left to
    max_steps, or with lr_decay_over "time" over the time limit, whatever the step."""
    from loop import lr_at
    t = {"lr": 1.0, "warmup_steps": 10, "max_steps": 110, "lr_min_ratio": 0.1, "lr_decay_over": "steps",
         "time_limit_min": 2}
    assert lr_at(4, t) == pytest.approx(0.5) and lr_at(10, t) == pytest.approx(1.0)
    assert lr_at(60, t, elapsed=100.0) == pytest.approx(0.55) and lr_at(110, t) == pytest.approx(0.1)
    assert lr_at(500, t) == pytest.approx(0.1)
    t["lr_decay_over"] = "time"
    assert lr_at(4, t, elapsed=50.0) == pytest.approx(0.5)                 # warmup still counts steps
    assert lr_at(10, t, elapsed=0.0) == pytest.approx(1.0)
    assert lr_at(20, t, elapsed=60.0) == pytest.approx(0.55) == lr_at(5000, t, elapsed=60.0)
    assert lr_at(20, t, elapsed=120.0) == pytest.approx(0.1) == lr_at(20, t, elapsed=900.0)
    t["lr_decay_over"] = "first"                                            # whichever ends first
    assert lr_at(60, t, elapsed=6.0) == pytest.approx(0.55) == lr_at(20, t, elapsed=60.0)
    assert lr_at(110, t, elapsed=1.0) == pytest.approx(0.1) == lr_at(11, t, elapsed=120.0)


def test_N_sup_schedule_follows_the_runs_progress():
    """training.N_sup_schedule: the last [progress, N_sup] pair reached, on lr's clock (steps or time)."""
    from loop import N_sup_at
    t = {"warmup_steps": 10, "max_steps": 110, "lr_decay_over": "steps", "time_limit_min": 2,
         "N_sup_schedule": [[0, 2], [0.5, 8]]}
    assert N_sup_at(0, t, 16) == 2 == N_sup_at(59, t, 16) and N_sup_at(60, t, 16) == 8 == N_sup_at(10**6, t, 16)
    t["lr_decay_over"] = "time"
    assert N_sup_at(10**6, t, 16, elapsed=59.0) == 2 and N_sup_at(0, t, 16, elapsed=60.0) == 8
    t["N_sup_schedule"] = [[0.25, 4]]
    assert N_sup_at(0, t, 16, elapsed=0.0) == 16 and N_sup_at(0, t, 16, elapsed=30.0) == 4
    assert N_sup_at(0, {**t, "N_sup_schedule": []}, 16, elapsed=100.0) == 16


def test_a_run_halts_training_puzzles_at_the_scheduled_N_sup(tmp_path):
    """With [[0, 1], [0.5, 4]] every puzzle halts after one step in the first half of the run (the
    log's average steps is 1.0 exactly); later they may stay up to model.N_sup (4)."""
    config = tiny_run_config(tmp_path, max_steps=20, warmup_steps=0, log_every=10, eval_every=20,
                             N_sup_schedule=[[0, 1], [0.5, 4]])
    check_config(config)
    train_trm.main(config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "log.jsonl").read_text().splitlines()]
    steps = [r["avg_steps"] for r in log if r["kind"] == "train"]
    assert steps[0] == 1.0 and 1.0 < steps[1] <= 4.0


@pytest.mark.parametrize("schedule, message", [
    ([[0, 8]], "training.N_sup_schedule[0]: N_sup 8 must be a whole number in 1..model.N_sup (4)"),
    ([[0.5, 2], [0.2, 3]], "training.N_sup_schedule[1]: progress 0.2 must be in [0, 1] and above the pair before"),
    ([[0, 2, 3]], "training.N_sup_schedule[0]: [0, 2, 3] must be a pair [progress, N_sup], e.g. [0.5, 16]"),
    ([[1.5, 2]], "training.N_sup_schedule[0]: progress 1.5 must be in [0, 1]"),
])
def test_a_bad_N_sup_schedule_is_named(tmp_path, schedule, message):
    with pytest.raises(ConfigError) as e:
        check_config(tiny_run_config(tmp_path, N_sup_schedule=schedule), "over.json")
    assert f"over.json: {message}" in str(e.value)


def test_a_run_decays_its_lr_over_its_time_limit(tmp_path, monkeypatch):
    """lr_decay_over "time" in a run, on a clock that advances 0.5 s whenever it is read: the
    learning rate falls with the clock to lr * lr_min_ratio, and the run ends at its time limit
    (1 minute) long before max_steps."""
    import loop
    clock = iter(range(10**9))
    monkeypatch.setattr(loop.time, "time", lambda: 0.5 * next(clock))
    config = tiny_run_config(tmp_path, max_steps=10**6, lr_decay_over="time", time_limit_min=1.0, lr_min_ratio=0.0,
                             log_every=1, eval_every=10**6)
    check_config(config)
    result = train_trm.main(config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["kind"] == "train" and r["step"] > 5]   # after the warmup
    lrs = [r["lr"] for r in train]
    assert 10 < result["step"] < 1000 and train[-1]["time_s"] >= 60
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > 0.9 * 3e-3 and lrs[-1] < 0.02 * 3e-3


# -- a tiny run -----------------------------------------------------------------------------------

def test_tiny_run_learns_and_writes_run_folder(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=120, eval_every=60)
    result = train_trm.main(config, progress=False)
    run_dir = tmp_path / "runs" / "tiny"
    for name in ("best.pt", "last.pt", "config.json", "log.jsonl"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"] == config["model"] and "torch" in saved["versions"]
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 2 and {"token_acc", "exact_acc", "blank_acc"} <= set(evals[0])
    assert {"ce_loss", "halt_loss", "halt_target", "avg_steps", "train_exact_acc"} <= set(train[0])
    assert np.mean([r["ce_loss"] for r in train[-3:]]) < 0.7 * np.mean([r["ce_loss"] for r in train[:3]])
    assert result["exact_acc"] > 0.0 and result["token_acc"] > 0.5


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=20, eval_every=20)
    result = train_trm.main(config, progress=False)
    ckpt = checkpoint.load_checkpoint(tmp_path / "runs" / "tiny" / "best.pt")
    fresh = TRM(TRMConfig(**ckpt["model_config"]))
    fresh.load_state_dict(ckpt["ema"])
    data = puzzles.load(config["data"], progress=False)
    dtype, _ = pick_dtype(config["training"]["dtype"], torch.device("cpu"))  # the run's: tiny runs are pinned to cpu
    inputs, labels = np.array(data.test.inputs), data.test.labels_for_training(np.arange(data.test.n_examples))
    metrics = evaluate(fresh, inputs, labels, 4, 64, torch.device("cpu"), dtype)
    assert metrics["exact_acc"] == result["exact_acc"] and metrics["token_acc"] == result["token_acc"]
    path = tmp_path / "again.pt"
    checkpoint.save_checkpoint(path, {"model": fresh.state_dict()})
    other = TRM(TRMConfig(**ckpt["model_config"]))
    other.load_state_dict(checkpoint.load_checkpoint(path)["model"])
    x = torch.from_numpy(inputs).long()
    assert torch.equal(fresh.predict(x, N_sup=4).answers, other.predict(x, N_sup=4).answers)


def test_resume_equals_uninterrupted_run(tmp_path):
    full = tiny_run_config(tmp_path / "a", max_steps=30, eval_every=15)
    train_trm.main(full, progress=False)
    half = tiny_run_config(tmp_path / "b", max_steps=15, eval_every=15)
    train_trm.main(half, progress=False)
    train_trm.main(tiny_run_config(tmp_path / "b", max_steps=30, eval_every=15), resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "runs" / "tiny" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "runs" / "tiny" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 30
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    logs = []
    for run in ("a", "b"):
        lines = (tmp_path / run / "runs" / "tiny" / "log.jsonl").read_text().splitlines()
        logs.append([(r["step"], r["loss"]) for r in map(json.loads, lines) if r["kind"] == "train"])
    assert logs[0] == logs[1]


def test_adam_atan2_with_decay_on_every_parameter_trains_and_resumes(tmp_path):
    """training.optimizer adam_atan2 and training.decay_all: one decayed group holding every
    parameter, AdamATan2's state in the checkpoint, and a resumed run equal to an uninterrupted one."""
    options = dict(optimizer="adam_atan2", decay_all=True, weight_decay=1.0, grad_clip=0.0, eval_every=4)
    train_trm.main(tiny_run_config(tmp_path / "a", max_steps=8, **options), progress=False)
    train_trm.main(tiny_run_config(tmp_path / "b", max_steps=4, **options), progress=False)
    train_trm.main(tiny_run_config(tmp_path / "b", max_steps=8, **options), resume=True, progress=False)
    a = torch.load(tmp_path / "a" / "runs" / "tiny" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "runs" / "tiny" / "last.pt", weights_only=True)
    groups = a["optimizer"]["param_groups"]
    n_params = len(list(TRM(TRMConfig(**a["model_config"])).parameters()))
    assert len(groups[0]["params"]) == n_params and groups[0]["weight_decay"] == 1.0 and groups[1]["params"] == []
    state = a["optimizer"]["state"][0]
    assert isinstance(state["step"], int) and state["step"] == 8  # AdamATan2 (AdamW keeps a tensor step)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_fresh_runs_keep_every_earlier_run(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    saved = []
    for steps in (5, 3, 4):
        train_trm.main(tiny_run_config(tmp_path, max_steps=steps, eval_every=steps), progress=False)
        saved.append((run_dir / "last.pt").read_bytes())
    assert (run_dir / "previous-1" / "last.pt").read_bytes() == saved[0]
    assert (run_dir / "previous-2" / "last.pt").read_bytes() == saved[1]
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 4
    assert sorted(p.name for p in (run_dir / "previous-1").iterdir()) == ["best.pt", "config.json", "last.pt", "log.jsonl"]


def test_best_checkpoint_is_chosen_without_reading_the_test_split(tmp_path):
    """With a validation split, best.pt is chosen on it: scrambling every test label changes the
    test figures but not which step best.pt holds, nor its weights. The test split is read at the
    end only, for the last and the best checkpoint."""
    import shutil
    config = tiny_run_config(tmp_path, max_steps=30, eval_every=5)
    config["data"]["n_val"] = 32
    first = train_trm.main(config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "log.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records if r["kind"] == "eval"} == {"val"}
    assert [r["checkpoint"] for r in records if r["kind"] == "test"] == ["last", "best"]
    data_folder = next((tmp_path / "data").iterdir())
    poisoned = tmp_path / "poisoned"
    shutil.copytree(data_folder, poisoned)
    labels = np.load(poisoned / "test" / "all__labels.npy")
    np.save(poisoned / "test" / "all__labels.npy", np.random.default_rng(0).permutation(labels.ravel()).reshape(labels.shape))
    config = tiny_run_config(tmp_path, max_steps=30, eval_every=5, run_name="poisoned")
    config["data"]["path"] = str(poisoned)
    second = train_trm.main(config, progress=False)
    assert second["best_step"] == first["best_step"] and second["best_exact_acc"] == first["best_exact_acc"]
    a = checkpoint.load_checkpoint(tmp_path / "runs" / "tiny" / "best.pt")["ema"]
    b = checkpoint.load_checkpoint(tmp_path / "runs" / "poisoned" / "best.pt")["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second["exact_acc"] < first["exact_acc"] or first["exact_acc"] == 0.0  # the test figures did change


def test_evaluations_during_training_read_a_subset_and_the_final_test_reads_all(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=10, eval_every=5, eval_limit=20, eval_stop_unchanged=2)
    result = train_trm.main(config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "log.jsonl").read_text().splitlines()]
    during = [r for r in records if r["kind"] == "eval"]
    assert [r["n"] for r in during] == [20, 20] and all(r["stop_unchanged"] == 2 for r in during)
    tests = [r for r in records if r["kind"] == "test"]
    assert [r["n"] for r in tests] == [64, 64] and result["n"] == 64   # the whole held-out split
    assert all(r["avg_steps"] == 4 for r in tests)                       # all N_sup steps, no early stop
    timing = [r for r in records if r["kind"] == "timing"][0]              # where the wall time went
    assert sum(r["eval_s"] for r in during) == pytest.approx(timing["eval_during_s"], abs=0.1)
    assert timing["train_loop_s"] <= timing["time_s"] and timing["test_s"] > 0
    assert timing["eval_share"] == pytest.approx((timing["eval_during_s"] + timing["test_s"]) / timing["time_s"],
                                                 abs=0.01)
    assert result["eval_share"] == timing["eval_share"]
