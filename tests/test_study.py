"""impl/study.py: a grid of tiny runs completes, resumes, skips finished runs and summarises seeds."""
import csv
import importlib.util
import json

from pathlib import Path

import pytest

import study
import train_trm
from config import merge_config
from train_cli import check_config, expand_base

ROOT = Path(__file__).resolve().parents[1]

TINY = {"model": {"hidden_size": 32, "T": 1, "N_sup": 3},
        "data": {"grid_size": 4, "n_train": 200, "n_test": 32, "givens": [8, 10]},
        "training": {"batch_size": 16, "eval_every": 4, "log_every": 2, "warmup_steps": 2, "device": "cpu",
                     "dtype": "float32"}}


def write_study(tmp_path, **changes) -> str:
    base = json.loads(json.dumps(TINY))
    base["data"]["data_dir"] = str(tmp_path / "data")
    spec = {"name": "tiny", "base": base, "grid": {"model.n": [1, 2], "training.ema": [True, False]},
            "seeds": [0], "budget": {"steps": 4}, "depth": {"steps": 3, "limit": 8}, **changes}
    path = tmp_path / "tiny_study.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_a_two_by_two_study_runs_resumes_and_skips_finished_runs(tmp_path, monkeypatch, capsys):
    path, out = write_study(tmp_path), tmp_path / "study"
    runs = study.plan(study.load_study(path), out)
    assert [r["name"] for r in runs] == ["n1_ematrue_seed0", "n1_emafalse_seed0", "n2_ematrue_seed0", "n2_emafalse_seed0"]
    # one run was interrupted at step 2: its last.pt is there, without the final test
    interrupted = json.loads(json.dumps(runs[2]["config"]))
    interrupted["training"]["max_steps"] = 2
    train_trm.main(interrupted, progress=False)
    log = out / "runs" / runs[2]["name"] / "log.jsonl"
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines() if '"kind": "test"' not in line))
    result = study.main([path, "--out", str(out)])
    assert "resuming" in capsys.readouterr().out
    rows = result["rows"]
    assert len(rows) == 4 and all(r["steps"] == 4 for r in rows) and all(len(r["depth"]) == 3 for r in rows)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines() if '"kind": "train"' in line] == [2, 4]
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and {"model.n", "training.ema", "seed", "test_exact", "depth_exact"} <= set(table[0])
    assert len(json.loads((out / "results.json").read_text())["rows"]) == 4
    assert (out / "summary.md").read_text().count("\n| ") == 5                 # header + 4 settings

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study, "train", no_training)
    assert len(study.main([path, "--out", str(out)])["rows"]) == 4


def test_summary_averages_seeds():
    rows = [{"model.n": n, "seed": s, "test_exact": e, "test_token": 1.0, "test_validity": None,
             "best_test_exact": e, "steps": 10, "train_s": 5.0}
            for n, s, e in ((1, 0, 0.5), (1, 1, 0.7), (2, 0, 0.9), (2, 1, 0.9), (2, 2, 0.9))]
    summary = study.summarize(rows, ["model.n"])
    assert [(r["model.n"], r["seeds"]) for r in summary] == [(1, 2), (2, 3)]
    assert summary[0]["test_exact_mean"] == pytest.approx(0.6) and summary[0]["test_exact_std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary[1]["test_exact_std"] == 0.0 and "test_validity_mean" not in summary[0]
    assert "0.600 ± 0.141" in study.markdown(summary, ["model.n"], [{"steps": 10}])


def test_a_flops_budget_gives_fewer_steps_to_a_costlier_model(tmp_path):
    runs = study.plan(study.load_study(write_study(tmp_path, grid={"model.n": [1, 3]}, budget={"tflops": 0.05})),
                      tmp_path / "study")
    cheap, costly = runs
    assert cheap["step_flops"] < costly["step_flops"]
    steps = [r["config"]["training"]["max_steps"] for r in runs]
    assert steps[0] > steps[1] and abs(steps[0] * cheap["step_flops"] - steps[1] * costly["step_flops"]) \
        <= costly["step_flops"]                                                  # equal compute, to a step
    # every run trains to its budget: the default stop on a solved validation split is off in a study
    assert all(r["config"]["training"]["stop_exact"] == 0 for r in runs)


def test_plots_or_a_clear_note(tmp_path):
    rows = [{"model.n": n, "seed": 0, "test_exact": 0.5, "test_token": 0.9, "test_validity": 0.6,
             "best_test_exact": 0.5, "steps": 4, "train_s": 1.0,
             "depth": [{"step": 1, "exact_acc": 0.4}, {"step": 2, "exact_acc": 0.5}]} for n in (1, 2)]
    notes = study.plot(study.summarize(rows, ["model.n"]), rows, ["model.n"], tmp_path, "tiny", [{"steps": 4}])
    if importlib.util.find_spec("matplotlib") is None:
        assert notes == [notes[0]] and "python -m pip install matplotlib" in notes[0]
    else:
        assert (tmp_path / "study.png").stat().st_size > 0 and (tmp_path / "depth.png").stat().st_size > 0
        zipped = tmp_path / "zip"
        zipped.mkdir()
        study.plot(study.summarize(rows, ["model.n"]), rows, ["model.n"], zipped, "tiny", [{"steps": 4}], zipped=True)
        assert (zipped / "study.png").stat().st_size > 0


def test_zip_settings_are_named_by_what_differs_from_the_usual():
    summary = [{"model.arch": "hrm", "model.n": 2, "model.single_z": False},
               {"model.arch": "trm", "model.n": 3, "model.single_z": False},
               {"model.arch": "trm", "model.n": 3, "model.single_z": True}]
    assert study.setting_labels(summary, ["model.arch", "model.n", "model.single_z"]) == \
        ["hrm n=2", "trm", "trm single_z=true"]


@pytest.mark.parametrize("change, message", [
    ({"budget": {"hours": 1}}, r"budget: expected one of"),
    ({"grid": {"model.n": []}}, r"grid.model.n: expected a non-empty list"),
    ({"script": "other.py"}, r"script: 'other.py' is not one of"),
    ({"sweep": {}}, r"unknown key 'sweep'"),
    ({"zip": {"model.n": [1, 2], "model.T": [1]}}, r"zip: every list must have the same length"),
])
def test_bad_study_files_are_named(tmp_path, change, message):
    with pytest.raises(study.ConfigError, match=message):
        study.load_study(write_study(tmp_path, **change))


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("configs/studies/**/*.json")))
def test_every_shipped_study_file_loads_and_each_setting_passes_the_checks(path):
    study_file = study.load_study(str(ROOT / path))
    for setting in study.settings(study_file):
        override = json.loads(json.dumps(study_file["base"]))
        for key, value in setting.items():
            study.set_dotted(override, key, value)
        check_config(merge_config(expand_base(train_trm.RUN_CONFIG, override), override, path), path)


def test_a_zip_over_archs_with_keys_of_their_own_plans_each_with_its_flops(tmp_path):
    """study_arch.json's kind of zip: archs whose configs add keys (hrm's H_layers, the transformer's
    depth, z_slots' K) plan with their own FLOPs; HRM with a bigger f_H costs more per step."""
    zip_ = {"model.arch": ["trm", "hrm", "hrm", "transformer", "z_slots"], "model.H_layers": [0, 0, 4, 0, 0],
            "model.z_slots": [1, 1, 1, 1, 3]}
    runs = study.plan(study.load_study(write_study(tmp_path, grid={}, zip=zip_, budget={"tflops": 0.05})),
                      tmp_path / "study")
    assert [r["config"]["model"]["arch"] for r in runs] == zip_["model.arch"]
    assert runs[2]["step_flops"] > runs[1]["step_flops"] and runs[4]["config"]["model"]["z_slots"] == 3


def test_two_protocols_run_side_by_side_with_a_verdict_per_claim(tmp_path):
    path = write_study(tmp_path, grid={"model.n": [1, 3]}, budgets=[{"steps": 4}, {"tflops": 0.02}], budget=None,
                       claims=[{"claim": "n=3 beats n=1", "paper": "-", "better": {"model.n": 3},
                                "worse": {"model.n": 1}}])
    spec = json.loads(Path(path).read_text())
    del spec["budget"]
    Path(path).write_text(json.dumps(spec))
    result = study.main([path, "--out", str(tmp_path / "study")])
    rows = result["rows"]
    assert [(r["model.n"], r["steps"]) for r in rows if r["protocol"] == "equal steps"] == [(1, 4), (3, 4)]
    flops = [r for r in rows if r["protocol"] == "equal FLOPs"]
    assert flops[0]["steps"] > flops[1]["steps"]                                 # n=1 is cheaper: more steps
    assert all(r["name"].startswith(("steps4_", "tflops0.02_")) for r in rows)
    table = (tmp_path / "study" / "summary.md").read_text().split("| claim |")[0]   # the results, before the verdicts
    assert table.count("| equal steps |") == 2 and table.count("| equal FLOPs |") == 2
    found = json.loads((tmp_path / "study" / "results.json").read_text())["verdicts"]
    assert [v["protocol"] for v in found] == ["equal steps", "equal FLOPs"]
    assert [v["verdict"] for v in found] == ["cannot tell", "cannot tell"]          # one seed: no spread to judge by


def test_verdicts_hold_fail_or_cannot_tell_by_two_standard_errors():
    def row(protocol, n, mean, std):
        return {"protocol": protocol, "model.n": n, "seeds": 3, "test_exact_mean": mean, "test_exact_std": std}
    summary = [row("equal steps", 3, 0.80, 0.02), row("equal steps", 1, 0.50, 0.02),
               row("equal FLOPs", 3, 0.40, 0.02), row("equal FLOPs", 1, 0.70, 0.02),
               row("equal time", 3, 0.52, 0.10), row("equal time", 1, 0.50, 0.10)]
    claim = [{"claim": "n=3 beats n=1", "better": {"model.n": 3}, "worse": {"model.n": 1}}]
    found = study.verdicts(summary, ["model.n"], claim)
    assert [v["verdict"] for v in found] == ["holds", "does not hold", "cannot tell"]
    assert all(v["flips"] for v in found)
    assert "**holds** (differs between protocols)" in study.verdict_table(found)
