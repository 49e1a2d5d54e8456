"""Run a grid of training runs under an equal budget, and summarise them as tables and plots.

    python impl/study.py configs/studies/study_depth.json                 # the runs, results.csv/json, summary, plots
    python impl/study.py configs/studies/study_depth.json --out runs/x    # elsewhere (default: runs/study_<name>)
    python impl/study.py configs/studies/study_depth.json --summary-only  # tables and plots from the finished runs

A study file names a training script, a base override (as for --config), the values to sweep
(every combination of "grid"; "zip" values move together), the seeds, the budgets each run gets,
and the paper's claims it tests:

    {"name": "T_n", "script": "train_trm.py", "base": {"data": {"grid_size": 6}},
     "grid": {"model.T": [1, 2, 3], "model.n": [1, 3, 6]}, "seeds": [0, 1, 2],
     "budgets": [{"steps": 1000}, {"tflops": 6.6}], "depth": {"steps": 16, "limit": 200},
     "claims": [{"claim": "T=3, n=6 beats T=2, n=2", "paper": "87.4% vs 73.7%",
                 "better": {"model.T": 3, "model.n": 6}, "worse": {"model.T": 2, "model.n": 2}}]}

Budgets, one protocol each, run side by side: "steps" (the paper's protocol: equal optimizer steps,
so a setting that calls f more spends more compute), "tflops" (equal training FLOPs: matrix products
of the supervision steps, counted from the shapes by flops.py, evaluation not counted; the steps
follow from each run's model, so a deeper recursion gets fewer steps; the figure means the same on
any machine) and "minutes" (a wall-clock limit per run, comparable on one machine with nothing else
running). "budget": {...} is one protocol alone.

Claims: each compares two settings under every protocol: "holds" when the better one's mean test
exact accuracy exceeds the worse one's by more than twice the standard error of the difference
(over seeds), "does not hold" when it falls short by as much, else "cannot tell"; a claim that
flips between protocols says so. --quick runs every study small (one seed, a tenth of each
budget, 50 depth puzzles) into <out>_quick, to check a study file in minutes.

Each run is a process of its own (the script with a generated override file in <out>/configs/),
in its own folder <out>/runs/<name>/. Starting the study again skips finished runs and resumes an
interrupted one from its last.pt. After training, each run's depth curve (held-out exact accuracy
after 1..K supervision steps) comes from metrics.depth_benchmark. Writes results.csv, results.json
(a row per run), summary.md (per setting and protocol: steps, TFLOPs, wall time, test exact and the
depth curve at 1, 2, 4, 8, 16 steps, mean ± std over seeds; then the claims' verdicts), and, when
matplotlib is installed, study.png (accuracy against the first swept key, a line per setting of the
others, per protocol) and depth.png (the depth curve of the best setting).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import puzzles
from checkpoint import load_trained, write_atomic, write_text_atomic
from device import pick_device_dtype
from loop import eval_arrays
from metrics import depth_benchmark
from config import INT_LIMIT, SEED_MAX, read_json_object, type_name
from errors import ConfigError, UserError, run_cli
from cli_args import check_options, folder_rule
from flops import model_flops
from arch import build_model, model_config
from trm import count_parameters

IMPL = Path(__file__).resolve().parent
SCRIPTS = ("train_trm.py", "train_trm_jepa.py")
STUDY_KEYS = ("name", "note", "script", "base", "grid", "zip", "seeds", "budget", "budgets", "depth", "claims")
PROTOCOLS = {"steps": "equal steps", "tflops": "equal FLOPs", "minutes": "equal time"}
UNBOUNDED = 10**9


# ----------------------------------------------------------------------------------------------
# The study file and its runs


def load_study(path: str) -> dict:
    study = read_json_object(path, "study file")
    unknown = [k for k in study if k not in STUDY_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(STUDY_KEYS)})")
    study = {"script": "train_trm.py", "base": {}, "grid": {}, "zip": {}, "seeds": [0], "depth": {}, **study}
    if study["script"] not in SCRIPTS:
        raise ConfigError(f"{path}: script: {study['script']!r} is not one of {', '.join(SCRIPTS)}")
    if "name" not in study or not isinstance(study["name"], str) or not study["name"]:
        raise ConfigError(f"{path}: name: a study needs a name (it names its folder)")
    for key in ("base", "grid", "zip", "depth"):
        if not isinstance(study[key], dict):
            raise ConfigError(f"{path}: {key}: expected a JSON object, got {type_name(study[key])} {study[key]!r}")
    if ("budget" in study) == ("budgets" in study):
        raise ConfigError(f"{path}: give budgets (a list, one protocol each) or budget (one), not both or neither")
    budgets = study.pop("budget", None)
    study["budgets"] = [budgets] if budgets is not None else study["budgets"]
    if not isinstance(study["budgets"], list) or not study["budgets"]:
        raise ConfigError(f"{path}: budgets: expected a non-empty list of budgets, got {study['budgets']!r}")
    for budget in study["budgets"]:
        check_budget(budget, path)
    kinds = [next(iter(b)) for b in study["budgets"]]
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"{path}: budgets: one budget per kind (steps, tflops, minutes), got {kinds}")
    check_claims(study.setdefault("claims", []), path)
    for key in ("grid", "zip"):
        for name, values in study[key].items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: {key}.{name}: expected a non-empty list of values")
    lengths = {len(v) for v in study["zip"].values()}
    if len(lengths) > 1:
        raise ConfigError(f"{path}: zip: every list must have the same length, got {sorted(lengths)}")
    seeds = study["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(is_int(s) for s in seeds):
        raise ConfigError(f"{path}: seeds: expected a non-empty list of integers")
    bad = [s for s in seeds if not 0 <= s <= SEED_MAX] or [s for s in seeds if seeds.count(s) > 1]
    if bad:
        why = f"must be in 0..{SEED_MAX} (numpy's seed range)" if not 0 <= bad[0] <= SEED_MAX else "appears twice"
        raise ConfigError(f"{path}: seeds: {bad[0]} {why}")
    depth = study["depth"]
    if any(k not in ("steps", "limit") for k in depth) or not all(is_int(v) and v >= 0 for v in depth.values()):
        raise ConfigError(f"{path}: depth: expected {{\"steps\": K, \"limit\": N}} with integers >= 0 (K: supervision "
                          f"steps of the depth curve, 0: none; N: test puzzles, 0: all), got {depth!r}")
    return study


def check_claims(claims: object, path: str) -> None:
    """A list of {"claim": text, "paper": text (optional), "better": {key: value}, "worse": {key: value}}."""
    ok = isinstance(claims, list) and all(
        isinstance(c, dict) and isinstance(c.get("claim"), str) and set(c) <= {"claim", "paper", "better", "worse"}
        and all(isinstance(c.get(side), dict) and c[side] for side in ("better", "worse")) for c in claims)
    if not ok:
        raise ConfigError(f"{path}: claims: expected a list of {{\"claim\": text, \"paper\": text, \"better\": "
                          f"{{key: value}}, \"worse\": {{key: value}}}}, got {claims!r}")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_budget(budget: object, path: str) -> None:
    """One of {"tflops": T}, {"minutes": M}, {"steps": S}: a number > 0 (steps: an integer)."""
    kind, value = next(iter(budget.items())) if isinstance(budget, dict) and len(budget) == 1 else (None, None)
    if kind not in ("tflops", "minutes", "steps") or not (is_int(value) or isinstance(value, float)) or value <= 0 \
            or (kind == "steps" and not is_int(value)):
        raise ConfigError(f"{path}: budget: expected one of {{\"tflops\": T}}, {{\"minutes\": M}}, {{\"steps\": S}} "
                          f"with a number > 0 (S an integer), got {budget!r}")


def settings(study: dict) -> list[dict]:
    """Every setting of the swept keys: the product of the grid, each with every zip position."""
    grid = [dict(zip(study["grid"], values)) for values in itertools.product(*study["grid"].values())]
    n_zip = len(next(iter(study["zip"].values()))) if study["zip"] else 1
    zips = [{k: v[i] for k, v in study["zip"].items()} for i in range(n_zip)]
    return [{**g, **z} for g in grid for z in zips]


def set_dotted(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[last] = value


def run_name(setting: dict, seed: int) -> str:
    parts = [f"{key.split('.')[-1]}{json.dumps(value).replace(' ', '')}" for key, value in setting.items()]
    name = "_".join(parts + [f"seed{seed}"])
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name)


def script_cmd(study: dict, config_path: Path, *flags: str) -> list[str]:
    return [sys.executable, str(IMPL / study["script"]), "--config", str(config_path), "--no-progress", *flags]


def full_config(study: dict, config_path: Path) -> dict:
    """The script's RUN_CONFIG merged with an override file, as the script itself checks it."""
    done = subprocess.run(script_cmd(study, config_path, "--check"), capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        raise ConfigError(f"{config_path}: {lines[-1].removeprefix('error: ')}")
    return json.loads(done.stdout.split("config ok: ", 1)[1])


def plan(study: dict, out: Path) -> list[dict]:
    """Every run: its name, protocol, setting, seed and override file, written to <out>/configs/ and
    checked by the script itself (once per setting and protocol: the seed changes no shape)."""
    runs, meta = [], None
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for setting in settings(study):
        override = json.loads(json.dumps(study["base"]))
        for key, value in setting.items():
            set_dotted(override, key, value)
        t = override.setdefault("training", {})
        t.setdefault("stop_exact", 0.0)  # runs of a study train to the same budget, solved or not
        step_flops = None
        for budget in study["budgets"]:
            kind, value = next(iter(budget.items()))
            prefix = f"{kind}{value:g}_" if len(study["budgets"]) > 1 else ""
            if kind == "minutes":
                t.update(time_limit_min=float(value), max_steps=UNBOUNDED)
            elif kind == "steps":
                t.update(time_limit_min=0.0, max_steps=int(value))
            first = prefix + run_name(setting, study["seeds"][0])
            t.update(seed=study["seeds"][0], runs_dir=str(out / "runs"), run_name=first)
            write_text_atomic(out / "configs" / f"{first}.json", json.dumps(override, indent=1) + "\n")
            config = full_config(study, out / "configs" / f"{first}.json")
            if meta is None:  # every run reads the same dataset folder (built here, once)
                meta = puzzles.load(config["data"], progress=True).train.meta
            mcfg = model_config(config["model"], vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                                num_puzzle_identifiers=meta.num_puzzle_identifiers)
            step_flops = model_flops(mcfg, config["training"]["batch_size"])["train"]
            if kind == "tflops":
                steps = value * 1e12 // step_flops
                if not steps < INT_LIMIT:
                    raise ConfigError(f"budget: tflops {value:g} gives {steps:g} steps of {first}, more than a run "
                                      f"can count")
                t.update(time_limit_min=0.0, max_steps=max(1, int(steps)))
            t["eval_every"] = min(config["training"]["eval_every"], t["max_steps"])
            for seed in study["seeds"]:
                name = prefix + run_name(setting, seed)
                t.update(seed=seed, run_name=name)
                path = out / "configs" / f"{name}.json"
                write_text_atomic(path, json.dumps(override, indent=1) + "\n")
                run_config = json.loads(json.dumps(config))
                run_config["training"].update(t)
                runs.append({"name": name, "protocol": PROTOCOLS[kind], "setting": setting, "seed": seed,
                             "config_path": path, "config": run_config, "params": count_parameters(build_model(mcfg)),
                             "step_flops": step_flops})
    return runs


def quick(study: dict) -> dict:
    """The study small: one seed, a tenth of each budget, 50 depth puzzles (a check in minutes)."""
    budgets = [{k: (max(1, int(v / 10)) if k == "steps" else v / 10) for k, v in b.items()} for b in study["budgets"]]
    return {**study, "name": study["name"] + "_quick", "seeds": study["seeds"][:1], "budgets": budgets,
            "depth": {**study["depth"], "limit": min(50, study["depth"].get("limit", 0) or 50)}}


# ----------------------------------------------------------------------------------------------
# Running, resuming, collecting


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def finished(run: dict, out: Path) -> bool:
    """Trained to the end: its log holds the final test of the last checkpoint (at max_steps, the
    time limit, or an early stop by training.patience)."""
    t = run["config"]["training"]
    log = records(out / "runs" / run["name"])
    tests = [r for r in log if r["kind"] == "test" and r.get("checkpoint") == "last"]
    stopped = any(r["kind"] == "early_stop" for r in log)
    return bool(tests) and (t["time_limit_min"] > 0 or stopped or tests[-1]["step"] >= t["max_steps"])


def train(study: dict, run: dict, out: Path) -> None:
    resume = (out / "runs" / run["name"] / "last.pt").exists()
    print(f"\n=== {run['name']} ({'resuming' if resume else 'starting'}) ===", flush=True)
    done = subprocess.run(script_cmd(study, run["config_path"], *(["--resume"] if resume else [])))
    if done.returncode != 0:
        raise UserError(f"the run {run['name']} failed (exit status {done.returncode}, see above); start the study "
                        f"again to resume it")


def depth_curve(study: dict, run: dict, out: Path) -> list[dict]:
    """Held-out exact accuracy after 1..K supervision steps of the run's last checkpoint (EMA weights),
    on the first `limit` test puzzles; kept in the run folder as depth_test.json."""
    K, limit = study["depth"].get("steps", 0), study["depth"].get("limit", 0)
    if not K:
        return []
    run_dir = out / "runs" / run["name"]
    path = run_dir / "depth_test.json"
    if not path.exists():
        device, dtype, _ = pick_device_dtype("cpu" if run["config"]["training"]["device"] == "cpu" else "auto",
                                             run["config"]["training"]["dtype"])
        model, _, _ = load_trained(run_dir / "last.pt", device)
        data = puzzles.load(run["config"]["data"], progress=False)
        inputs, labels, ids = eval_arrays(data.test, limit)
        valid_fn = data.hooks.valid_fn(data.test.meta) if data.hooks else None
        rows = depth_benchmark(model, inputs, labels, K, run["config"]["training"]["eval_batch_size"], device, dtype,
                               valid_fn=valid_fn, puzzle_ids=ids)
        write_text_atomic(path, json.dumps(rows, indent=1) + "\n")
    return [{"step": r["step"], "exact_acc": r["exact_acc"]} for r in json.loads(path.read_text())]


def result_row(study: dict, run: dict, out: Path) -> dict:
    log = records(out / "runs" / run["name"])
    train_recs = [r for r in log if r["kind"] == "train"]
    evals = [r for r in log if r["kind"] == "eval"]
    test = {r["checkpoint"]: r for r in log if r["kind"] == "test"}
    steps = train_recs[-1]["step"]
    return {"name": run["name"], "protocol": run["protocol"], **run["setting"], "seed": run["seed"],
            "params": run["params"], "steps": steps,
            "train_tflops": round(steps * run["step_flops"] / 1e12, 3), "train_s": train_recs[-1]["time_s"],
            "test_exact": test["last"]["exact_acc"], "test_token": test["last"]["token_acc"],
            "test_validity": test["last"].get("validity"), "best_eval_exact": max(r["exact_acc"] for r in evals),
            "best_step": test["best"]["step"], "best_test_exact": test["best"]["exact_acc"],
            "depth": depth_curve(study, run, out)}


# ----------------------------------------------------------------------------------------------
# Summary, tables, plots


METRICS = ("test_exact", "test_token", "test_validity", "best_test_exact", "steps", "train_tflops", "train_s")
DEPTH_AT = (1, 2, 4, 8, 16)  # supervision steps at test time whose exact accuracy the tables show


def summarize(rows: list[dict], keys: list[str]) -> list[dict]:
    """Mean and sample standard deviation over seeds of each metric (and of the depth curve at
    DEPTH_AT), per protocol and setting of keys, in the order they first appear in rows."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps([r.get("protocol", "")] + [r[k] for k in keys]), []).append(r)
    out = []
    for setting, group in groups.items():
        protocol, *values = json.loads(setting)
        row = {"protocol": protocol, **dict(zip(keys, values)), "seeds": len(group), "exact": [],
               "depth": {}}
        for metric in METRICS:
            found = [r[metric] for r in group if r.get(metric) is not None]
            if found:
                row[f"{metric}_mean"] = statistics.mean(found)
                row[f"{metric}_std"] = statistics.stdev(found) if len(found) > 1 else 0.0
        row["exact"] = [r["test_exact"] for r in group]
        for k in DEPTH_AT:
            at = [p["exact_acc"] for r in group for p in r.get("depth", []) if p["step"] == k]
            if len(at) == len(group):
                row["depth"][k] = statistics.mean(at)
        out.append(row)
    return out


def budget_text(budgets: list[dict]) -> str:
    """'1000 steps; 6.6 TFLOP of training'."""
    return "; ".join(f"{v:g} {'TFLOP of training' if k == 'tflops' else k}" for b in budgets for k, v in b.items())


def markdown(summary: list[dict], keys: list[str], budgets: list[dict]) -> str:
    """The table: a row per setting and protocol (the protocols of a setting side by side)."""
    depth = [k for k in DEPTH_AT if any(k in r["depth"] for r in summary)]
    head = ([k.split(".")[-1] for k in keys] + ["protocol", "seeds", "steps", "TFLOP", "train s", "test exact",
                                                 "best.pt test exact"] + [f"exact @{k}" for k in depth])
    lines = [f"Budgets per run: {budget_text(budgets)}; mean ± std over seeds; exact @k: held-out exact "
             f"after k supervision steps at test time (mean over seeds).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(range(len(summary)), key=lambda i: (first_index(summary, summary[i], keys), i))
    for r in (summary[i] for i in order):
        mean = lambda metric, fmt: f"{r[f'{metric}_mean']:{fmt}}" if f"{metric}_mean" in r else "-"  # noqa: E731
        cells = [json.dumps(r[k]) for k in keys] + [r["protocol"] or "-", str(r["seeds"]), mean("steps", ".0f"),
                                                    mean("train_tflops", ".2f"), mean("train_s", ".0f")]
        for metric in ("test_exact", "best_test_exact"):
            cells.append(f"{r[f'{metric}_mean']:.3f} ± {r[f'{metric}_std']:.3f}")
        cells += [f"{r['depth'][k]:.3f}" if k in r["depth"] else "-" for k in depth]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def first_index(summary: list[dict], row: dict, keys: list[str]) -> int:
    """Where the setting of row first appears (rows of one setting, any protocol, sort together)."""
    return next(i for i, r in enumerate(summary) if all(r[k] == row[k] for k in keys))


def verdicts(summary: list[dict], keys: list[str], claims: list[dict]) -> list[dict]:
    """Each claim under each protocol: the two settings' test exact (mean ± std), the difference,
    its standard error over seeds, and holds / does not hold / cannot tell (2 standard errors; one
    seed alone cannot tell)."""
    out = []
    for claim in claims:
        for protocol in dict.fromkeys(r["protocol"] for r in summary):
            sides = [next((r for r in summary if r["protocol"] == protocol and all(
                json.dumps(r.get(k)) == json.dumps(v) for k, v in claim[side].items())), None)
                for side in ("better", "worse")]
            if None in sides:
                continue
            better, worse = sides
            diff = better["test_exact_mean"] - worse["test_exact_mean"]
            se = (better["test_exact_std"] ** 2 / better["seeds"] + worse["test_exact_std"] ** 2 / worse["seeds"]) ** 0.5
            verdict = "holds" if diff > 2 * se else "does not hold" if diff < -2 * se else "cannot tell"
            if min(better["seeds"], worse["seeds"]) < 2:  # no spread to compare the difference with
                verdict = "cannot tell"
            out.append({"claim": claim["claim"], "paper": claim.get("paper", ""), "protocol": protocol,
                        "better": better["test_exact_mean"], "better_std": better["test_exact_std"],
                        "worse": worse["test_exact_mean"], "worse_std": worse["test_exact_std"],
                        "diff": diff, "se": se, "verdict": verdict})
    for v in out:  # a claim whose verdict differs between protocols says so
        others = {w["verdict"] for w in out if w["claim"] == v["claim"]}
        v["flips"] = len(others) > 1
    return out


def verdict_table(found: list[dict]) -> str:
    lines = ["| claim | the paper | protocol | better | worse | difference (2 s.e.) | verdict |", "|---|---|---|---|---|---|---|"]
    for v in found:
        flag = " (differs between protocols)" if v["flips"] else ""
        lines.append(f"| {v['claim']} | {v['paper']} | {v['protocol']} | {v['better']:.3f} ± {v['better_std']:.3f} | "
                     f"{v['worse']:.3f} ± {v['worse_std']:.3f} | {v['diff']:+.3f} (±{2 * v['se']:.3f}) | "
                     f"**{v['verdict']}**{flag} |")
    return "\n".join(lines) + "\n"


def setting_labels(summary: list[dict], keys: list[str]) -> list[str]:
    """A short name per setting of a zip: its first key's value, then the other keys whose value
    is not the most common one ("trm", "z_slots z_slots=3", "hrm n=2")."""
    usual = {k: max((json.dumps(r[k]) for r in summary), key=[json.dumps(r[k]) for r in summary].count)
             for k in keys[1:]}
    return [" ".join([str(r[keys[0]])] + [f"{k.split('.')[-1]}={json.dumps(r[k])}" for k in keys[1:]
                                          if json.dumps(r[k]) != usual[k]]) for r in summary]


def plot(summary: list[dict], rows: list[dict], keys: list[str], out: Path, name: str, budgets: list[dict],
         zipped: bool = False) -> list[str]:
    """study.png (a panel per protocol) and depth.png; a one-line note instead when matplotlib is
    missing. zipped (a study of zip settings only): one series over the settings, named by setting_labels."""
    try:
        import matplotlib
    except ImportError:
        return ["plots skipped: matplotlib is not installed (python -m pip install matplotlib, then "
                "python impl/study.py <file> --summary-only)"]
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    notes = []
    protocols = list(dict.fromkeys(r["protocol"] for r in summary))
    if keys:
        fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
        for ax, protocol in zip(axes[0], protocols):
            panel(ax, [r for r in summary if r["protocol"] == protocol], keys, zipped)
            ax.set_ylabel("held-out exact (mean ± std over seeds)")
            ax.set_title(f"study {name}: {protocol or budget_text(budgets)}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "study.png", dpi=120)
        plt.close(fig)
        notes.append(f"plot: {out / 'study.png'}")
    best = max(summary, key=lambda r: r["test_exact_mean"])
    curves = [r["depth"] for r in rows if r["depth"] and r.get("protocol", "") == best["protocol"]
              and all(r[k] == best[k] for k in keys)]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for curve in curves:
            ax.plot([p["step"] for p in curve], [p["exact_acc"] for p in curve], "o-", markersize=3)
        ax.set_xlabel("supervision steps at test time")
        ax.set_ylabel("held-out exact accuracy")
        ax.set_title(f"{name}: " + ", ".join(f"{k.split('.')[-1]}={best[k]}" for k in keys)
                     + f" {best['protocol']} (one line per seed)", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "depth.png", dpi=120)
        plt.close(fig)
        notes.append(f"plot: {out / 'depth.png'}")
    return notes


def panel(ax, summary: list[dict], keys: list[str], zipped: bool) -> None:
    """One protocol's settings: against the first key, a line per setting of the others."""
    if zipped:
        ax.errorbar(setting_labels(summary, keys), [r["test_exact_mean"] for r in summary],
                    yerr=[r["test_exact_std"] for r in summary], fmt="o", capsize=3)
        for label in ax.get_xticklabels():
            label.set(rotation=20, ha="right", fontsize=8)
        return
    x_key, others = keys[0], keys[1:]
    for line in sorted({json.dumps([r[k] for k in others]) for r in summary}):
        mine = [r for r in summary if json.dumps([r[k] for k in others]) == line]
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, json.loads(line))) or "all"
        ax.errorbar([str(r[x_key]) for r in mine], [r["test_exact_mean"] for r in mine],
                    yerr=[r["test_exact_std"] for r in mine], marker="o", capsize=3, label=label)
    ax.set_xlabel(x_key)
    ax.legend(fontsize=8)


def write_results(rows: list[dict], keys: list[str], study: dict, out: Path) -> list[str]:
    summary = summarize(rows, keys)
    found = verdicts(summary, keys, study["claims"])
    write_text_atomic(out / "results.json", json.dumps({"study": study, "rows": rows, "verdicts": found},
                                                       indent=1) + "\n")
    columns = [c for c in rows[0] if c != "depth"] + ["depth_exact"]

    def write_csv(f) -> None:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**{c: r.get(c) for c in columns[:-1]},
                             "depth_exact": " ".join(f"{p['exact_acc']:.4f}" for p in r["depth"])})

    write_atomic(out / "results.csv", write_csv, binary=False)
    table = markdown(summary, keys, study["budgets"]) + (f"\n{verdict_table(found)}" if found else "")
    write_text_atomic(out / "summary.md", table)
    print("\n" + table)
    return [str(out / "results.csv"), str(out / "results.json"), str(out / "summary.md")] + \
        plot(summary, rows, keys, out, study["name"], study["budgets"], zipped=bool(study["zip"]) and not study["grid"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="a study file (JSON), e.g. configs/studies/study_depth.json")
    parser.add_argument("--out", help="folder of the study (default: runs/study_<name>)")
    parser.add_argument("--summary-only", action="store_true", help="no training: tables and plots from finished runs")
    parser.add_argument("--quick", action="store_true", help="one seed, a tenth of each budget, 50 depth puzzles, "
                                                             "into <out>_quick: a check of the study file in minutes")
    args = parser.parse_args(argv)
    check_options([folder_rule("--out", args.out)])

    def run() -> dict:
        study = load_study(args.study)
        out = Path(args.out or f"runs/study_{study['name']}")
        if args.quick:
            study, out = quick(study), out.with_name(out.name + "_quick")
        runs = plan(study, out)
        keys = list(settings(study)[0])
        print(f"study {study['name']}: {len(runs)} runs ({len(runs) // len(study['seeds'])} settings and protocols x "
              f"{len(study['seeds'])} seeds), budgets: {budget_text(study['budgets'])}, in {out}")
        rows = []
        for r in runs:
            if not finished(r, out):
                if args.summary_only:
                    continue
                train(study, r, out)
            rows.append(result_row(study, r, out))
        if not rows:
            raise UserError(f"{out}: no finished run yet (run the study without --summary-only)")
        for line in write_results(rows, keys, study, out):
            print(line)
        return {"rows": rows, "out": str(out)}

    return run_cli(run)


if __name__ == "__main__":
    main()
