"""Accuracy against test-time compute: a sweep of supervision steps x members x member kind x selection
rule on one checkpoint, with the plain answer at the model's N_sup steps as the baseline.

    python impl/ttc.py --checkpoint runs/x/best.pt                       # small default sweep (CPU)
    python impl/ttc.py --checkpoint runs/x/best.pt --steps 16,32,64,128 --members 1,4,16,64 \\
        --kinds symmetry,noise,both --sigma 0.3 --limit 0                 # the full sweep (a GPU)

For each setting the K members of every puzzle run as one batch (impl/ensemble.py); every selection
rule is scored on the same members, so one run gives a row per rule. K = 1 is the plain answer
(one deterministic trajectory) at that many steps. Without --halt or --first-round, each ensemble
runs once, for the most steps asked, and the fewer step counts are read off that run (a step's
answer does not depend on later steps; its wall time is its share of the steps). Compute per puzzle is counted two ways: model
FLOPs (member-steps x the forward FLOPs of one supervision step of one example, impl/flops.py) and
wall time in the model. Writes ttc_<split>.csv, ttc_<split>.json and, when matplotlib is installed,
ttc_<split>.png (held-out exact accuracy against FLOPs and against wall time per puzzle) to the
checkpoint's folder or --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import textwrap
import time
from pathlib import Path

from checkpoint import write_atomic, write_text_atomic
from ensemble import KINDS, RULES, choose, evaluate_ensemble, run_members_at, test_time_record, transforms_for
from errors import ConfigError, run_cli
from cli_args import check_options, finite, seed_rule
from eval_data import EvalSetup, load_for_eval
from flops import model_flops
from metrics import predict_all, puzzle_metrics

DEFAULT_CHECKPOINT = "runs/tiny_trm_impl_sudoku/best.pt"
COLUMNS = ["steps", "members", "kind", "sigma", "select", "exact_acc", "token_acc", "validity", "agreement",
           "member_steps_per_puzzle", "flops_per_puzzle", "wall_ms_per_puzzle", "n", "baseline", "first_round", "settled"]


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers >= 1, comma-separated")
    return values


def name_list(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: each must be one of {', '.join(allowed)}")
        return values
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint to sweep (best.pt or last.pt)")
    parser.add_argument("--split", choices=("test", "train", "val"), default="test", help="which split of the data")
    parser.add_argument("--limit", type=int, default=200, help="the first N puzzles of the split (0: all)")
    parser.add_argument("--steps", type=int_list, default=[16, 32], help="supervision steps, comma-separated")
    parser.add_argument("--members", type=int_list, default=[1, 4], help="members per puzzle, comma-separated")
    parser.add_argument("--kinds", type=name_list(KINDS), default=["symmetry", "noise"],
                        help=f"member kinds, comma-separated ({', '.join(KINDS)})")
    parser.add_argument("--selects", type=name_list(RULES), default=list(RULES),
                        help="selection rules reported, comma-separated ('valid' only where the puzzle has a rule check)")
    parser.add_argument("--sigma", type=float, default=0.1, help="latent noise scale of noise and both members")
    parser.add_argument("--halt", action="store_true", help="members freeze at their halting step (compute counted as run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the symmetries and the noise")
    parser.add_argument("--first-round", type=int, default=0,
                        help="adaptive compute in every ensemble: members in a first round; a puzzle they all answer "
                             "alike (and validly) gets no more (0: off)")
    parser.add_argument("--max-member-steps", type=int, default=0,
                        help="skip settings of more than this many member-steps per puzzle (members x steps; "
                             "0: none), e.g. 1024 = 64x the plain 16-step answer")
    parser.add_argument("--batch-size", type=int, default=32, help="rows (members x puzzles) per forward pass (small keeps a CPU in cache; 1024+ on a GPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    parser.add_argument("--out", help="folder for the output files (default: the checkpoint's folder)")
    parser.add_argument("--data-config", help="JSON run-override file whose data section replaces the checkpoint's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.limit < 0:
        parser.error(f"--limit: {args.limit} must be >= 0")
    if args.max_member_steps < 0:
        parser.error(f"--max-member-steps: {args.max_member_steps} must be >= 0 (0: no limit)")
    if args.batch_size < 1:
        parser.error(f"--batch-size: {args.batch_size} must be >= 1")
    if not args.sigma >= 0:
        parser.error(f"--sigma: {args.sigma} must be >= 0")
    check_options([("--sigma", args.sigma, finite(args.sigma), "must be a finite number"),
                   ("--first-round", args.first_round, args.first_round >= 0, "must be >= 0 (0: off)"),
                   seed_rule("--seed", args.seed)])
    return args


def plot(rows: list[dict], path: Path, title: str) -> str:
    """Exact accuracy against FLOPs per puzzle, a panel per member kind: a colour per rule, a line per
    number of steps (members growing along it), the plain answer over steps in black, the baseline a
    star; the top axis gives the wall time per puzzle at the rate measured in this sweep."""
    try:
        import matplotlib
    except ImportError:
        return f"plot skipped: matplotlib is not installed (python -m pip install matplotlib for {path.name})"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    kinds = list(dict.fromkeys(r["kind"] for r in rows if r["kind"] != "plain")) or ["plain"]
    rules = list(dict.fromkeys(r["select"] for r in rows if r["kind"] != "plain"))
    steps_all = sorted({r["steps"] for r in rows})
    markers = dict(zip(steps_all, "os^DvP*X"))
    timed = [r for r in rows if r["flops_per_puzzle"] > 0 and r["wall_ms_per_puzzle"] > 0]
    ms_per_flop = sum(r["wall_ms_per_puzzle"] for r in timed) / max(sum(r["flops_per_puzzle"] for r in timed), 1)
    plain = sorted((r["flops_per_puzzle"], r["exact_acc"]) for r in rows if r["kind"] == "plain")
    styles = dict(zip(rules, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds) + 2.2, 4.4), squeeze=False, sharey=True)
    for ax, kind in zip(axes[0], kinds):
        ax.plot([p[0] for p in plain], [p[1] for p in plain], "k.-", label="plain (1 member)")
        for r in rows:
            if r["baseline"]:
                ax.plot([r["flops_per_puzzle"]], [r["exact_acc"]], "k*", markersize=12,
                        label=f"plain, {r['steps']} steps")
        for i, rule in enumerate(rules):
            for steps in steps_all:
                points = sorted((r["flops_per_puzzle"], r["exact_acc"]) for r in rows
                                if r["kind"] == kind and r["select"] == rule and r["steps"] == steps)
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], marker=markers[steps], color=f"C{i}",
                            linestyle=styles[rule], markersize=4, label=f"{rule}, {steps} steps")
        ax.set_xscale("log")
        ax.set_xlabel("model FLOPs per puzzle")
        ax.set_title(f"{kind} members", fontsize=9)
        if ms_per_flop > 0:
            top = ax.secondary_xaxis("top", functions=(lambda f: f * ms_per_flop, lambda ms: ms / ms_per_flop))
            top.set_xlabel("wall time per puzzle (ms, this machine)", fontsize=8)
            top.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("exact accuracy")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, loc="center right")
    fig.suptitle(textwrap.fill(title, 160), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot: {path}"


def check_sweep(args: argparse.Namespace, e: EvalSetup) -> tuple[list[str], Path]:
    """The selection rules this puzzle type can score, and the output folder; a member kind the
    puzzle cannot take or a folder that cannot be written stops the sweep before any work."""
    selects = [s for s in args.selects if s != "valid" or e.valid_fn is not None]
    for kind in args.kinds:
        try:
            transforms_for(e.hooks, e.split.meta, kind, 1, args.seed)
        except ValueError as err:
            raise ConfigError(f"--kinds: {err}") from None
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out: cannot write to {out_dir} ({err.strerror or type(err).__name__})") from None
    return selects, out_dir


class Table:
    """The sweep's rows, printed as they come: one per plain answer, one per rule of an ensemble."""

    def __init__(self, args: argparse.Namespace, e: EvalSetup, selects: list[str], step_flops: float) -> None:
        self.args, self.e, self.selects, self.step_flops = args, e, selects, step_flops
        self.N_sup = e.model.config.N_sup
        self.rows: list[dict] = []

    def row(self, steps: int, K: int, kind: str, rule: str, m: dict, member_steps: float, wall: float,
            baseline: bool) -> dict:
        n = max(len(self.e.inputs), 1)
        return {"steps": steps, "members": K, "kind": kind,
                "sigma": self.args.sigma if kind in ("noise", "both") else 0.0,
                "select": rule, "exact_acc": m["exact_acc"], "token_acc": m["token_acc"], "validity": m.get("validity"),
                "agreement": m.get("agreement", 1.0), "member_steps_per_puzzle": member_steps,
                "flops_per_puzzle": member_steps * self.step_flops, "wall_ms_per_puzzle": 1000 * wall / n,
                "n": len(self.e.inputs), "baseline": baseline, "first_round": 0, "settled": 0.0}

    def plain(self, steps: int, answers, used: float, wall: float) -> None:
        m = puzzle_metrics(self.e.inputs, self.e.labels, answers, valid_fn=self.e.valid_fn)
        self.rows.append(self.row(steps, 1, "plain", "-", m, used, wall, baseline=steps == self.N_sup))
        print(f"steps {steps:4d} members  1 plain            exact {m['exact_acc']:.4f}"
              + ("   <- baseline (N_sup)" if steps == self.N_sup else ""))

    def ensemble(self, steps: int, K: int, kind: str, tt: dict) -> None:
        for rule in self.selects:
            self.rows.append({**self.row(steps, K, kind, rule, tt["rules"][rule], tt["member_steps_per_puzzle"],
                                         tt["wall_s"], baseline=False),
                              "first_round": tt["first_round"] if 0 < tt["first_round"] < K else 0,
                              "settled": tt["settled"]})
        print(f"steps {steps:4d} members {K:2d} {kind:<8} " + "  ".join(
            f"{rule} {tt['rules'][rule]['exact_acc']:.4f}" for rule in self.selects))


def affordable(args: argparse.Namespace, K: int, steps: int) -> bool:
    """Within --max-member-steps (members x steps per puzzle)."""
    return not args.max_member_steps or K * steps <= args.max_member_steps


def sweep_one_run(args: argparse.Namespace, e: EvalSetup, table: Table, all_steps: list[int],
                  ensembles: list[tuple[int, str]]) -> None:
    """Every setting run once, for its most steps; the fewer step counts are read off that run."""
    progress = not args.no_progress
    plain = run_members_at(e.model, e.inputs, 1, "noise", 0.0, all_steps, args.batch_size, e.device, e.dtype,
                           puzzle_ids=e.ids, progress=progress)
    for steps in all_steps:
        table.plain(steps, plain[steps].answers[0], float(steps), plain[steps].wall_s)
    for K, kind in ensembles:
        steps_K = [steps for steps in args.steps if affordable(args, K, steps)]
        if not steps_K:
            continue
        at = run_members_at(e.model, e.inputs, K, kind, args.sigma, steps_K, args.batch_size, e.device, e.dtype,
                            transforms_for(e.hooks, e.split.meta, kind, K, args.seed), puzzle_ids=e.ids,
                            seed=args.seed, progress=progress)
        for steps in sorted(at):
            out = choose(at[steps], e.inputs, e.valid_fn)
            table.ensemble(steps, K, kind, test_time_record(out, e.inputs, e.labels, e.valid_fn, K, kind, args.sigma,
                                                            table.selects[0], args.seed, False, steps))


def sweep_each_run(args: argparse.Namespace, e: EvalSetup, table: Table, all_steps: list[int],
                   ensembles: list[tuple[int, str]]) -> None:
    """A run per setting and step count (--halt: members freeze at their halting step; --first-round:
    the adaptive compute decides per step count)."""
    for steps in all_steps:
        t0 = time.time()
        pred = predict_all(e.model, e.inputs, steps, args.batch_size, e.device, e.dtype, halt=args.halt,
                           puzzle_ids=e.ids)
        table.plain(steps, pred["answers"], float(pred["steps"].mean()) if args.halt else float(steps),
                    time.time() - t0)
        if steps not in args.steps:
            continue
        for K, kind in ((K, kind) for K, kind in ensembles if affordable(args, K, steps)):
            em = evaluate_ensemble(e.model, e.inputs, e.labels, K, kind, args.sigma, table.selects[0], steps,
                                   args.batch_size, e.device, e.dtype, e.hooks, e.split.meta, e.valid_fn,
                                   halt=args.halt, puzzle_ids=e.ids, seed=args.seed, progress=not args.no_progress,
                                   first_round=args.first_round)
            table.ensemble(steps, K, kind, em["test_time"])


def write_outputs(args: argparse.Namespace, e: EvalSetup, rows: list[dict], step_flops: float,
                  out_dir: Path) -> list[Path]:
    """ttc_<split>.json (the rows and what they were measured on), .csv and, with matplotlib, .png."""
    stem = f"ttc_{args.split}"
    json_path, csv_path, png = out_dir / f"{stem}.json", out_dir / f"{stem}.csv", out_dir / f"{stem}.png"
    record = {"checkpoint": str(args.checkpoint), "step": e.ckpt.get("step"), "weights": e.weights,
              "split": args.split, "data": e.data.description, "n": len(e.inputs), "halt": args.halt,
              "seed": args.seed, "dtype": str(e.dtype).replace("torch.", ""), "device": str(e.device),
              "forward_flops_per_step": step_flops, "rows": rows}
    write_text_atomic(json_path, json.dumps(record, indent=2) + "\n")

    def write_csv(f) -> None:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    write_atomic(csv_path, write_csv, binary=False)
    files = [json_path, csv_path]
    note = plot(rows, png, f"{Path(args.checkpoint).name}, {e.data.description}, {args.split}, {len(e.inputs)} puzzles")
    print(note)
    if note.startswith("plot:"):
        files.append(png)
    print("wrote: " + ", ".join(str(f) for f in files))
    return files


def run(args: argparse.Namespace) -> dict:
    """The sweep; returns {"rows", "files"}. Raises UserError."""
    e = load_for_eval(args.checkpoint, args.split, args.limit, args.data_config, args.device, args.dtype,
                      not args.no_progress)
    selects, out_dir = check_sweep(args, e)
    step_flops = model_flops(e.model.config, 1)["forward"]                # one supervision step of one example
    print(e.device_line)
    print(f"checkpoint: {args.checkpoint} (step {e.ckpt.get('step', '?')}, {e.weights} weights; "
          f"N_sup={e.model.config.N_sup})")
    print(f"data: {e.data.description} [{e.data_from}]; split {args.split}, {len(e.inputs)} puzzles")
    print(f"one supervision step of one example: {step_flops:.3e} FLOPs (forward)")

    table = Table(args, e, selects, step_flops)
    all_steps = sorted(set(args.steps) | {table.N_sup})                    # the plain answer at N_sup: the baseline
    ensembles = [(K, kind) for K in args.members if K > 1 for kind in args.kinds]
    if not args.halt and args.first_round == 0:                           # every step count read off one run
        sweep_one_run(args, e, table, all_steps, ensembles)
    else:
        sweep_each_run(args, e, table, all_steps, ensembles)
    order = {kind: i for i, kind in enumerate(["plain"] + list(args.kinds))}
    rows = sorted(table.rows, key=lambda r: (r["steps"], r["members"], order[r["kind"]]))  # stable: rules in order
    return {"rows": rows, "files": write_outputs(args, e, rows, step_flops, out_dir)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
