"""Does the JEPA term help? Plain TRM against TRM-JEPA variants on the same puzzles, for the same
wall-clock budget per run, over several seeds.

    python impl/compare_jepa.py --minutes 4 --seeds 0 1 2            # default 6x6 data
    python impl/compare_jepa.py --minutes 0.1 --config tiny.json --seeds 0 --out /tmp/cmp   # smoke test

Variants: `plain` (train_trm.py), `jepa_w<W>` for each --weights W (stopgrad_target on), and
`jepa_w<W>_nostop` for --nostop-weight W (stopgrad_target off). Every run uses the same data
(data.seed is not varied), training.seed = the seed, training.time_limit_min = --minutes with
max_steps unbounded, and one held-out evaluation (EMA weights, N_sup steps) at the end, so the whole
budget goes to training. Seeds are the outer loop and variants the inner one, so a drift in machine
load falls on all variants alike; on a shared machine, seconds per step are only as steady as the load.

Each run is a process of its own (`python impl/train_trm.py` or `impl/train_trm_jepa.py` with a
generated override file in <out>/configs/), exactly what a user would run; every run's config is
checked (--check) before the first one starts.

Reported per variant: held-out exact accuracy mean +- std and [min, max] over seeds, blank-cell
accuracy, steps reached, milliseconds per training step (last log line's time / steps; evaluation
excluded) and that cost relative to plain. Writes <out>/results.json (every run and the summary,
rewritten after each run) and <out>/results.md; run folders go to <out>/runs/<variant>_seed<k>/.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path

from checkpoint import write_text_atomic
from config import read_json_object
from errors import ConfigError, UserError, run_cli
from cli_args import check_options, finite, folder_rule, seed_rule

IMPL = Path(__file__).resolve().parent
JEPA_KEYS = ("variant", "latent_loss_weight", "latent_pool", "normalize_latent", "stopgrad_target", "latent_loss",
             "latent_state")  # train_trm_jepa.py's own keys in "training": dropped for plain runs

UNBOUNDED_STEPS = 10**9  # the time limit ends every run; no cosine schedule can span this


def variants(weights: list[float], nostop_weight: float | None) -> list[tuple[str, dict | None]]:
    """(name, JEPA training overrides or None for plain TRM)."""
    out: list[tuple[str, dict | None]] = [("plain", None)]
    for w in weights:
        out.append((f"jepa_w{w:g}", {"latent_loss_weight": w, "stopgrad_target": True}))
    if nostop_weight is not None:
        out.append((f"jepa_w{nostop_weight:g}_nostop", {"latent_loss_weight": nostop_weight, "stopgrad_target": False}))
    return out


def run_overrides(base: dict, jepa_keys: dict | None, name: str, seed: int, minutes: float, out: Path) -> dict:
    """The override file of one run; plain runs drop any JEPA keys and train with train_trm.py."""
    config = copy.deepcopy(base)
    t = config.setdefault("training", {})
    if jepa_keys is None:
        for key in JEPA_KEYS:
            t.pop(key, None)
    else:
        t.update(jepa_keys)
    t.update(seed=seed, time_limit_min=minutes, max_steps=UNBOUNDED_STEPS, eval_every=UNBOUNDED_STEPS,
             runs_dir=str(out / "runs"), run_name=f"{name}_seed{seed}")
    return config


def run_script(jepa: bool, config_path: Path, *flags: str) -> subprocess.CompletedProcess:
    script = IMPL / ("train_trm_jepa.py" if jepa else "train_trm.py")
    return subprocess.run([sys.executable, str(script), "--config", str(config_path), "--no-progress", *flags],
                          text=True, capture_output="--check" in flags)


def last_records(run_dir: Path) -> tuple[dict, dict]:
    """The last training and the last evaluation record of a run's log."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "train"][-1], [r for r in records if r["kind"] == "eval"][-1]


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    names = list(dict.fromkeys(r["variant"] for r in runs))
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        exact = [r["exact_acc"] for r in mine]
        rows.append({
            "variant": name, "latent_loss_weight": mine[0]["latent_loss_weight"],
            "stopgrad_target": mine[0]["stopgrad_target"], "seeds": [r["seed"] for r in mine],
            "exact_mean": statistics.mean(exact), "exact_std": statistics.stdev(exact) if len(exact) > 1 else 0.0,
            "exact_min": min(exact), "exact_max": max(exact),
            "blank_mean": statistics.mean(r["blank_acc"] for r in mine),
            "steps_mean": statistics.mean(r["steps"] for r in mine),
            "ms_per_step": 1000 * statistics.mean(r["s_per_step"] for r in mine),
            "latent_loss_last": (statistics.mean(r["latent_loss_last"] for r in mine)
                                 if mine[0]["latent_loss_last"] is not None else None),
        })
    plain = next((row["ms_per_step"] for row in rows if row["variant"] == "plain"), None)
    for row in rows:
        row["cost_vs_plain"] = row["ms_per_step"] / plain if plain else None
    return rows


def markdown(rows: list[dict], minutes: float) -> str:
    lines = [f"Held-out exact accuracy after {minutes:g} min of training per run (EMA weights, final evaluation).",
             "", "| variant | weight | stopgrad | exact acc mean ± std [min, max] | blank acc | steps | ms/step "
             "| cost vs plain | last latent_loss |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        weight = "-" if r["latent_loss_weight"] is None else f"{r['latent_loss_weight']:g}"
        stop = "-" if r["stopgrad_target"] is None else ("yes" if r["stopgrad_target"] else "no")
        cost = "-" if r["cost_vs_plain"] is None else f"{r['cost_vs_plain']:.2f}x"
        latent = "-" if r["latent_loss_last"] is None else f"{r['latent_loss_last']:.4f}"
        lines.append(f"| {r['variant']} | {weight} | {stop} | {r['exact_mean']:.3f} ± {r['exact_std']:.3f} "
                     f"[{r['exact_min']:.3f}, {r['exact_max']:.3f}] | {r['blank_mean']:.3f} | "
                     f"{r['steps_mean']:.0f} | {r['ms_per_step']:.1f} | {cost} | {latent} |")
    seeds = sorted({s for r in rows for s in r["seeds"]})
    lines += ["", f"Seeds {', '.join(map(str, seeds))}; std over seeds (sample); ms/step excludes evaluation."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (init, order)")
    parser.add_argument("--config", help="JSON overrides for every run, over train_trm_jepa.RUN_CONFIG")
    parser.add_argument("--out", default="runs/compare_jepa", help="folder for results and run folders")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 1.0],
                        help="latent_loss_weight of the stop-gradient JEPA variants")
    parser.add_argument("--nostop-weight", type=float, default=0.1,
                        help="latent_loss_weight of the variant without stop-gradient (negative: leave it out)")
    args = parser.parse_args(argv)
    check_args(args)
    out = Path(args.out)
    nostop = args.nostop_weight if args.nostop_weight >= 0 else None
    plan = variants(args.weights, nostop)

    return run_cli(lambda: compare(args, out, plan))


def check_args(args: argparse.Namespace) -> None:
    """Values that could give no result (or two runs in one folder) end in one line before any work."""
    twice = {"--seeds": repeated(args.seeds), "--weights": repeated(args.weights)}
    check_options([("--minutes", args.minutes, finite(args.minutes), "must be a finite number"),
                   ("--minutes", args.minutes, args.minutes > 0, "must be > 0"),
                   *(seed_rule("--seeds", seed) for seed in args.seeds),
                   *((option, value, value is None, "is given twice") for option, value in twice.items()),
                   *(("--weights", w, finite(w) and w >= 0, "must be a finite number >= 0") for w in args.weights),
                   ("--nostop-weight", args.nostop_weight, finite(args.nostop_weight), "must be a finite number"),
                   folder_rule("--out", args.out)])


def repeated(values: list) -> object:
    """The first value that appears more than once (None if none does)."""
    return next((v for v in values if values.count(v) > 1), None)


def read_base(path: str) -> dict:
    """The --config file: a JSON object of overrides (checked by the scripts with each run's keys)."""
    return read_json_object(path)


def compare(args: argparse.Namespace, out: Path, plan: list) -> dict:
    if args.minutes <= 0:
        raise ConfigError(f"--minutes: {args.minutes} must be > 0")
    base = read_base(args.config) if args.config else {}
    configs = out / "configs"
    configs.mkdir(parents=True, exist_ok=True)

    def write_config(name: str, seed: int, keys: dict | None) -> Path:
        path = configs / f"{name}_seed{seed}.json"
        write_text_atomic(path, json.dumps(run_overrides(base, keys, name, seed, args.minutes, out), indent=1) + "\n")
        return path

    for name, keys in plan:  # every run's config is checked before the first one starts
        checked = run_script(keys is not None, write_config(name, args.seeds[0], keys), "--check")
        if checked.returncode != 0:
            raise ConfigError(f"{name}: {checked.stderr.strip().splitlines()[-1].removeprefix('error: ')}")
    t = base.get("training", {})
    if t.get("lr_min_ratio", 1.0) != 1.0 and t.get("lr_decay_over", "steps") == "steps":
        print(f"note: lr_min_ratio {t['lr_min_ratio']} has no effect here (max_steps is unbounded); "
              f"\"lr_decay_over\": \"time\" decays it over --minutes")

    runs: list[dict] = []
    result: dict = {}
    for seed in args.seeds:
        for name, keys in plan:
            print(f"\n=== {name}, seed {seed}, {args.minutes:g} min ===", flush=True)
            done = run_script(keys is not None, write_config(name, seed, keys))
            if done.returncode != 0:
                raise UserError(f"the run {name}, seed {seed} failed (exit status {done.returncode}, see above)")
            run_dir = out / "runs" / f"{name}_seed{seed}"
            last, final = last_records(run_dir)
            runs.append({
                "variant": name, "seed": seed,
                "latent_loss_weight": None if keys is None else keys["latent_loss_weight"],
                "stopgrad_target": None if keys is None else keys["stopgrad_target"],
                "exact_acc": final["exact_acc"], "blank_acc": final["blank_acc"], "token_acc": final["token_acc"],
                "steps": last["step"], "train_s": last["time_s"], "s_per_step": last["time_s"] / last["step"],
                "latent_loss_last": last.get("latent_loss"), "run_dir": str(run_dir),
            })
            result = {"minutes": args.minutes, "seeds": args.seeds, "config": args.config,
                      "summary": summarize(runs), "runs": runs}
            write_text_atomic(out / "results.json", json.dumps(result, indent=2) + "\n")  # partial results survive
    table = markdown(result["summary"], args.minutes)
    write_text_atomic(out / "results.md", table)
    print("\n" + table + f"\nwritten: {out / 'results.json'}, {out / 'results.md'}")
    return result


if __name__ == "__main__":
    main()
