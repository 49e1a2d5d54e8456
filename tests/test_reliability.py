"""Runs that survive: interrupted writes, SIGTERM, NaN, damaged or foreign checkpoints, bad input."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpoint
import train_trm
from test_train import tiny_run_config
from config import merge_config
from errors import CheckpointError, ConfigError
from train_cli import check_config
from train_trm import RUN_CONFIG
from trm import TRM, TRMConfig

REPO = Path(__file__).resolve().parents[1]


def test_interrupted_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def half_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(CheckpointError, match=r"last.pt: cannot write \(No space left on device\); the previous file"):
        checkpoint.save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_corrupt_checkpoint_is_named(tmp_path):
    good = tmp_path / "good.pt"
    checkpoint.save_checkpoint(good, {"model": TRM(TRMConfig(seq_len=16, vocab_size=6, hidden_size=32)).state_dict()})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"bad.pt: checkpoint is corrupt or incomplete"):
        checkpoint.load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="missing.pt: no checkpoint there"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_architecture_lists_the_mismatch(tmp_path):
    small = TRM(TRMConfig(seq_len=16, vocab_size=6, hidden_size=32, num_heads=1))
    other = TRM(TRMConfig(seq_len=16, vocab_size=6, hidden_size=64, num_heads=1, pos_encoding="learned"))
    with pytest.raises(CheckpointError) as e:
        checkpoint.load_weights(other, small.state_dict(), "ckpt.pt")
    message = str(e.value)
    assert "ckpt.pt: weights do not fit this model" in message
    assert "missing: pos" in message
    assert "embed.weight: (6, 32) in the checkpoint, (6, 64) in the model" in message


def test_resume_with_a_changed_config_names_the_keys(tmp_path):
    train_trm.main(tiny_run_config(tmp_path, max_steps=4, eval_every=4), progress=False)
    changed = tiny_run_config(tmp_path, max_steps=8, eval_every=4)
    changed["model"]["hidden_size"] = 64
    changed["training"]["lr"] = 1e-3
    with pytest.raises(ConfigError) as e:
        train_trm.main(changed, resume=True, progress=False)
    assert "cannot resume" in str(e.value)
    assert "model.hidden_size (32 in the checkpoint, 64 now)" in str(e.value)
    assert "training.lr" in str(e.value) and "training.max_steps" in str(e.value)  # the allowed list


def test_resume_of_a_checkpoint_from_before_a_key_existed(tmp_path, capsys):
    """A key added to the program after a checkpoint was written: the run resumes with a note when
    the key's value now is what the old program did; where the old behaviour is not today's
    default (mlp_t_norm), resuming needs that old value, and the error says which."""
    config = tiny_run_config(tmp_path, max_steps=4, eval_every=4)
    train_trm.main(config, progress=False)
    last = Path(config["training"]["runs_dir"]) / "tiny" / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["config"]["model"]["gradient"]
    checkpoint.save_checkpoint(last, ckpt)
    assert train_trm.main(tiny_run_config(tmp_path, max_steps=6, eval_every=4), resume=True, progress=False)["step"] == 6
    assert "model.gradient: absent from the checkpoint (written before it existed), 'last_cycle' now" in capsys.readouterr().out

    ckpt = torch.load(last, weights_only=False)
    del ckpt["config"]["model"]["mlp_t_norm"]
    checkpoint.save_checkpoint(last, ckpt)
    with pytest.raises(ConfigError, match=r"model.mlp_t_norm \(absent from the checkpoint.*set it to 'hidden' to resume"):
        train_trm.main(tiny_run_config(tmp_path, max_steps=8, eval_every=4), resume=True, progress=False)


def test_resume_without_config_uses_the_saved_one(tmp_path, monkeypatch):
    config = tiny_run_config(tmp_path, max_steps=4, eval_every=4)
    train_trm.main(config, progress=False)
    base = json.loads(json.dumps(RUN_CONFIG))
    base["training"].update(runs_dir=config["training"]["runs_dir"], run_name="tiny")
    result = train_trm.cli(["--resume", "--no-progress"], base=base)  # nothing left to do: 4 of 4 steps
    assert result["step"] == 4


def test_resume_without_checkpoint_names_the_path(tmp_path):
    base = json.loads(json.dumps(RUN_CONFIG))
    base["training"].update(runs_dir=str(tmp_path / "runs"), run_name="none")
    with pytest.raises(SystemExit) as e:
        train_trm.cli(["--resume"], base=base)
    assert "none/last.pt: no checkpoint there" in str(e.value.code)


def test_nan_loss_stops_and_leaves_checkpoints_intact(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=20, eval_every=5)

    def poisoned_step(model, slots, cfg):
        out = train_trm.trm_step(model, slots, cfg)
        calls.append(1)
        if len(calls) == 8:
            out.extra_losses["poison"] = torch.tensor(float("nan"))
        return out

    calls = []
    with pytest.raises(FloatingPointError) as e:
        train_trm.main(config, progress=False, step_fn=poisoned_step)
    run_dir = tmp_path / "runs" / "tiny"
    assert "at step 8" in str(e.value) and str(run_dir / "last.pt") in str(e.value)
    last = checkpoint.load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 5
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert checkpoint.load_checkpoint(run_dir / "best.pt")["step"] == 5


def test_sigterm_saves_last_checkpoint_and_exits_nonzero(tmp_path):
    config = tiny_run_config(tmp_path, max_steps=100000, eval_every=100000, log_every=1)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, str(REPO / "impl" / "train_trm.py"), "--config", str(path), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait for training to be under way, then stop it
            if line.startswith("step"):
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "--resume" in err
    ckpt = checkpoint.load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")
    assert ckpt["step"] >= 1


def test_periodic_checkpoint(tmp_path):
    train_trm.main(tiny_run_config(tmp_path, max_steps=7, eval_every=100, ckpt_every=3), progress=False)
    # saved at 3 and 6 by ckpt_every, then at 7 by the final evaluation
    assert checkpoint.load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")["step"] == 7
    log = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "eval"] == [7]


def test_periodic_checkpoint_before_the_end(tmp_path):
    def stop_after_four(model, slots, cfg):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # a crash between checkpoints
        return train_trm.trm_step(model, slots, cfg)

    calls = []
    with pytest.raises(KeyboardInterrupt):
        train_trm.main(tiny_run_config(tmp_path, max_steps=50, eval_every=100, ckpt_every=2),
                       progress=False, step_fn=stop_after_four)
    assert checkpoint.load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")["step"] == 4


@pytest.mark.parametrize("section,key,value,expected", [
    ("model", "hidden_size", 100, "model.hidden_size: 100 must be divisible by num_heads=3"),
    ("data", "n_train", -5, "data.n_train: -5 must be >= 1"),
    ("training", "ckpt_every", -1, "training.ckpt_every: -1 must be >= 0"),
    ("training", "time_limit_min", -1.0, "training.time_limit_min"),
])
def test_more_impossible_values(section, key, value, expected):
    override = {section: {key: value}}
    if key == "hidden_size":
        override["model"].update(num_heads=3, mlp_t=False)
    with pytest.raises(ConfigError, match=expected):
        check_config(merge_config(RUN_CONFIG, override, "x.json"), "x.json")


def test_unknown_device_is_named(tmp_path):
    with pytest.raises(ConfigError, match="training.device: unknown device 'gpu0'"):
        train_trm.main(tiny_run_config(tmp_path, device="gpu0"), progress=False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        train_trm.main(tiny_run_config(tmp_path, device="cuda"), progress=False)


def test_unwritable_run_folder_is_named_before_any_work(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder should be")
    with pytest.raises(ConfigError, match=r"cannot write to .*runs/tiny"):
        train_trm.main(tiny_run_config(tmp_path), progress=False)
    assert not (tmp_path / "data").exists()  # no data was generated


@pytest.mark.parametrize("speedup, expected", [(0.5, torch.float32), (1.1, torch.float32), (3.0, torch.bfloat16)])
def test_auto_dtype_on_a_cpu_with_native_bf16_follows_the_measured_speed(monkeypatch, speedup, expected):
    """Native bf16 is not always faster (0.5x float32 on one AVX-512 BF16 CPU without AMX): auto
    keeps float32 unless bf16 matmuls measured faster here, and says what it measured."""
    import device
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(device, "cpu_bf16_speedup", lambda: speedup)
    dtype, why = device.pick_dtype("auto", torch.device("cpu"))
    assert dtype == expected and f"{speedup:.1f}x" in why
    assert device.pick_dtype("bfloat16", torch.device("cpu"))[0] == torch.bfloat16   # asked for: no measuring


def test_the_cpu_line_says_when_torchs_kernels_are_held_to_a_lesser_instruction_set(monkeypatch):
    """Figures taken with ATEN_CPU_CAPABILITY=avx2 (an AVX-512 CPU run as an AVX2-only one) say so
    beside the CPU they name."""
    import device
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert "kernels limited" not in device.cpu_description()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert device.cpu_description().endswith(", kernels limited to avx2 (ATEN_CPU_CAPABILITY)")


def test_bf16_speedup_is_measured_once_per_process():
    import device
    first = device.cpu_bf16_speedup()
    assert first > 0 and device.cpu_bf16_speedup() == first
