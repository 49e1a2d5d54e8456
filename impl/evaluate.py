"""Evaluate a trained TRM checkpoint: accuracy, validity, halting, and recursion depth.

    python impl/evaluate.py                                     # runs/tiny_trm_impl_sudoku/best.pt, test split
    python impl/evaluate.py --checkpoint runs/x/last.pt --split train --limit 500
    python impl/evaluate.py --halt --depth 32                   # halting on; depth benchmark up to 32 steps
    python impl/evaluate.py --data-config hf.json               # another data section (same puzzle shape)
    python impl/evaluate.py --members 16 --member-kind noise --sigma 0.1 --select halt   # a test-time ensemble

With --members K > 1 each puzzle is answered by K members in one batch (impl/ensemble.py: the
puzzle's symmetries mapped back, noisy latent trajectories, or both) and --select picks the answer;
every rule's accuracy is printed and saved under "test_time".

Writes eval_<split>.json (metrics and breakdowns) and depth_<split>.json / .csv / .png (accuracy
after each supervision step 1..K) to the checkpoint's folder, or to --out. A puzzle module with a
report of its own (ARC: voting over the augmented versions, pass@K, a submission file) adds it
to eval_<split>.json and writes its files there too.

The metrics (impl/metrics.py) are also what the training loop reports, so a number printed here
and one in log.jsonl mean the same thing. The checkpoint's dataset metadata gives the shapes; the
puzzle's module (impl/puzzles.py) the validity check and the breakdowns.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

import recursion_view
from checkpoint import write_atomic, write_text_atomic
from cli_args import check_options, finite, seed_rule
from ensemble import KINDS, RULES, evaluate_ensemble, format_rules, transforms_for
from errors import ConfigError, run_cli
from eval_data import load_for_eval
from metrics import depth_benchmark, predict_all, puzzle_metrics

DEFAULT_CHECKPOINT = "runs/tiny_trm_impl_sudoku/best.pt"


# ----------------------------------------------------------------------------------------------
# Tables and files


def format_metrics(metrics: dict) -> str:
    notes = {"token_acc": "positions right, per puzzle (Sudoku: givens included)",
             "blank_acc": "positions right among those to fill (Sudoku: the blanks; maze: the path)",
             "exact_acc": "puzzles entirely right", "validity": "answers obeying the puzzle's rules (maze: a shortest path)",
             "halt_acc": "halting head (confidence > 0.5) agrees with exact", "avg_steps": "supervision steps used",
             "n": "puzzles"}
    lines = []
    for key, note in notes.items():
        if key in metrics:
            value = metrics[key]
            text = f"{value:d}" if isinstance(value, int) else f"{value:.4f}"
            lines.append(f"  {key:<12} {text:>8}   {note}")
    for name, groups in metrics.items():
        if not name.startswith("by_"):
            continue
        valid = any("validity" in m for m in groups.values())
        lines.append(f"  {name.replace('_', ' ')}:")
        lines.append(f"    {'group':>8} {'n':>6} {'exact':>7} {'blank':>7}" + (f" {'valid':>7}" if valid else ""))
        for label, m in groups.items():
            lines.append(f"    {label:>8} {m['n']:>6d} {m['exact_acc']:>7.4f} {m['blank_acc']:>7.4f}"
                         + (f" {m['validity']:>7.4f}" if valid else ""))
    return "\n".join(lines)


DEPTH_COLUMNS = [("step", "step", "{:d}"), ("exact_acc", "exact", "{:.4f}"), ("token_acc", "token", "{:.4f}"),
                 ("validity", "valid", "{:.4f}"), ("halt_acc", "halt_acc", "{:.4f}"),
                 ("halt_exact_acc", "h.exact", "{:.4f}"), ("halt_validity", "h.valid", "{:.4f}"),
                 ("halted_frac", "halted", "{:.4f}"), ("halt_avg_steps", "h.steps", "{:.2f}")]


def format_depth_table(rows: list[dict], trained_N_sup: int | None = None) -> str:
    """Depth benchmark as a text table; 'h.' columns stop each puzzle at its halting step (capped at k)."""
    columns = [c for c in DEPTH_COLUMNS if c[0] in rows[0]]  # no validity columns without a rule check
    header = " ".join(f"{title:>8}" for _, title, _ in columns)
    lines = [header]
    for row in rows:
        line = " ".join(f"{fmt.format(row[key]):>8}" for key, _, fmt in columns)
        lines.append(line + ("   <- trained N_sup" if row["step"] == trained_N_sup else ""))
    return "\n".join(lines)


def save_depth(rows: list[dict], out_dir: Path, split: str) -> tuple[Path, Path]:
    """depth_<split>.json and depth_<split>.csv in out_dir."""
    json_path, csv_path = out_dir / f"depth_{split}.json", out_dir / f"depth_{split}.csv"
    write_text_atomic(json_path, json.dumps(rows, indent=2) + "\n")

    def write_csv(f) -> None:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    write_atomic(csv_path, write_csv, binary=False)
    return json_path, csv_path


def plot_depth(rows: list[dict], path: Path, trained_N_sup: int, title: str = "") -> str:
    """Plot exact accuracy and validity per step, with and without halting. Returns a one-line
    note: where the plot went, or why it was skipped (matplotlib is an optional dependency)."""
    try:
        import matplotlib
    except ImportError:
        return f"plot skipped: matplotlib is not installed (python -m pip install matplotlib for {path.name})"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r["exact_acc"] for r in rows], "o-", label="exact, all steps")
    if "validity" in rows[0]:
        ax.plot(steps, [r["validity"] for r in rows], "s--", label="valid, all steps")
    ax.plot(steps, [r["halt_exact_acc"] for r in rows], "^-", label="exact, halting on")
    ax.plot(steps, [r["halted_frac"] for r in rows], ":", color="gray", label="halted by step k")
    ax.axvline(trained_N_sup, color="black", linewidth=0.8, linestyle=":")
    ax.set_xlabel("supervision steps k")
    ax.set_ylabel("fraction of puzzles")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot: {path}"


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint to evaluate (best.pt or last.pt)")
    parser.add_argument("--split", choices=("test", "train", "val"), default="test", help="which split of the data")
    parser.add_argument("--limit", type=int, default=0, help="evaluate the first N puzzles only (0: all)")
    parser.add_argument("--steps", type=int, default=0, help="supervision steps K (0: the model's N_sup)")
    parser.add_argument("--depth", type=int, default=-1,
                        help="depth benchmark up to K steps (-1: 2x the model's N_sup; 0: skip)")
    parser.add_argument("--halt", action="store_true", help="stop each puzzle at its halting step (logit > 0)")
    parser.add_argument("--members", type=int, default=1, help="K members per puzzle, one batch (1: no ensemble)")
    parser.add_argument("--member-kind", choices=KINDS, default="symmetry",
                        help="symmetry: the puzzle's symmetries, answers mapped back; noise: Gaussian noise on the "
                             "latent z at each supervision step; both")
    parser.add_argument("--sigma", type=float, default=0.0, help="scale of the latent noise (noise and both members)")
    parser.add_argument("--select", choices=RULES, default="vote",
                        help="vote (majority, ties to the halting logit) | halt (highest halting logit) | first "
                             "(first to halt) | valid (answers breaking the rules dropped, then vote)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the members' symmetries and noise")
    parser.add_argument("--first-round", type=int, default=0,
                        help="adaptive compute: members in a first round; a puzzle they all answer alike (and validly, "
                             "where the puzzle has a rule check) gets no more members (0: off)")
    parser.add_argument("--batch-size", type=int, default=32, help="puzzles per batch (small keeps a CPU in cache; 1024+ on a GPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    parser.add_argument("--out", help="folder for the output files (default: the checkpoint's folder)")
    parser.add_argument("--data-config", help="JSON run-override file whose data section replaces the checkpoint's "
                                              "(e.g. another source; the puzzle shape must match)")
    parser.add_argument("--html", type=int, default=0, help="the recursion of the first N puzzles as self-contained "
                                                             "pages, recursion_<split>_<i>.html in --out")
    parser.add_argument("--png", type=int, default=0, help="the same as PNG film strips (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name in ("limit", "steps", "batch_size"):
        if getattr(args, name) < (1 if name == "batch_size" else 0):
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} must be >= {1 if name == 'batch_size' else 0}")
    if args.members < 1:
        parser.error(f"--members: {args.members} must be >= 1")
    if not args.sigma >= 0:
        parser.error(f"--sigma: {args.sigma} must be >= 0")
    if args.depth < -1:
        parser.error(f"--depth: {args.depth} must be >= 0 (or -1 for 2x N_sup)")
    check_options([("--html", args.html, args.html >= 0, "must be >= 0"),
                   ("--png", args.png, args.png >= 0, "must be >= 0"),
                   ("--sigma", args.sigma, finite(args.sigma), "must be a finite number"),
                   ("--first-round", args.first_round, args.first_round >= 0, "must be >= 0 (0: off)"),
                   seed_rule("--seed", args.seed)])
    return args


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the arguments say; returns {"metrics", "depth", "files"}. Raises UserError."""
    progress = not args.no_progress
    e = load_for_eval(args.checkpoint, args.split, args.limit, args.data_config, args.device, args.dtype, progress)
    model, ckpt, weights, device, dtype = e.model, e.ckpt, e.weights, e.device, e.dtype
    data, split, inputs, labels, ids, hooks, valid_fn = e.data, e.split, e.inputs, e.labels, e.ids, e.hooks, e.valid_fn
    device_line, data_from, limit = e.device_line, e.data_from, len(e.inputs)
    N_sup = model.config.N_sup
    steps = args.steps or N_sup
    depth = 2 * N_sup if args.depth == -1 else args.depth
    breakdowns = {k: np.asarray(v)[:limit] for k, v in hooks.breakdowns(split).items()} if hooks else {}
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot write to {out_dir} ({e.strerror or type(e).__name__})") from None

    print(device_line)
    print(f"checkpoint: {args.checkpoint} (step {ckpt.get('step', '?')}, {weights} weights; "
          f"D={model.config.hidden_size}, T={model.config.T}, n={model.config.n}, N_sup={N_sup})")
    print(f"data: {data.description} [{data_from}]")
    print(f"split: {args.split}, {len(inputs)} examples")

    ensemble = args.members > 1
    if ensemble:
        if args.select == "valid" and valid_fn is None:
            raise ConfigError("--select valid: this puzzle type has no rule check (use vote, halt or first)")
        try:
            transforms_for(hooks, split.meta, args.member_kind, 1, args.seed)
        except ValueError as e:
            raise ConfigError(f"--member-kind: {e}") from None
    t0 = time.time()
    if ensemble:
        metrics = evaluate_ensemble(model, inputs, labels, args.members, args.member_kind, args.sigma, args.select,
                                    steps, args.batch_size, device, dtype, hooks, split.meta, valid_fn, halt=args.halt,
                                    puzzle_ids=ids, seed=args.seed, breakdowns=breakdowns, progress=progress,
                                    first_round=args.first_round)
        pred = None
    else:
        pred = predict_all(model, inputs, steps, args.batch_size, device, dtype, halt=args.halt, progress=progress,
                           puzzle_ids=ids)
        metrics = puzzle_metrics(inputs, labels, pred["answers"], pred["confidence"], pred["steps"], valid_fn,
                                 breakdowns)
    print(f"\nmetrics after {'up to ' if args.halt else ''}{steps} supervision steps"
          f"{' (halting on)' if args.halt else ''}, {time.time() - t0:.1f}s:")
    print(format_metrics(metrics))
    if ensemble:
        print(format_rules(metrics["test_time"]))
    report = hooks.report(split, pred, out_dir) if hooks and pred is not None else None
    report_record, report_files = {}, []
    if report is not None:  # the puzzle's own results (ARC: voting and pass@K), and its files
        report_record, text, report_files = report
        print("\n" + text)
    eval_path = out_dir / f"eval_{args.split}.json"
    record = {"checkpoint": str(args.checkpoint), "step": ckpt.get("step"), "weights": weights, "split": args.split,
              "data": data.description, "N_sup": steps, "halt": args.halt,
              "dtype": str(dtype).replace("torch.", ""), **metrics, **report_record}
    write_text_atomic(eval_path, json.dumps(record, indent=2) + "\n")
    files = [eval_path, *report_files]

    rows = []
    if depth:
        t0 = time.time()
        rows = depth_benchmark(model, inputs, labels, depth, args.batch_size, device, dtype, progress=progress,
                               valid_fn=valid_fn, puzzle_ids=ids)
        print(f"\ndepth benchmark, steps 1..{depth} ({time.time() - t0:.1f}s); h.* = halting on, "
              f"each puzzle answers at its halting step capped at k:")
        print(format_depth_table(rows, N_sup))
        files += save_depth(rows, out_dir, args.split)
        png = out_dir / f"depth_{args.split}.png"
        note = plot_depth(rows, png, N_sup, title=f"{Path(args.checkpoint).name}, {data.description}, {args.split}")
        print(note)
        if png.exists() and note.startswith("plot:"):
            files.append(png)
    files += draw_pictures(args, model, hooks, split, inputs, labels, ids, steps, dtype, out_dir)
    print("wrote: " + ", ".join(str(f) for f in files))
    return {"metrics": metrics, "report": report_record or None, "depth": rows, "files": files}


def draw_pictures(args: argparse.Namespace, model, hooks, split, inputs: np.ndarray, labels: np.ndarray,
                  ids: np.ndarray | None, steps: int, dtype, out_dir: Path) -> list[Path]:
    """--html N / --png N: the recursion of the first N puzzles (recursion_view.py), wrong cells
    marked against the labels."""
    files, skipped = [], []
    cells = hooks.cells(split.meta) if hooks else None
    for i in range(min(max(args.html, args.png), len(inputs))):
        paths = [out_dir / f"recursion_{args.split}_{i}.{ext}" if i < n else None
                 for ext, n in (("html", args.html), ("png", args.png))]
        lines = recursion_view.draw(model, np.asarray(inputs[i]), steps, dtype, cells, np.asarray(labels[i]),
                                    f"{Path(args.checkpoint).name}, {args.split} puzzle {i}: {steps} supervision steps",
                                    *paths, puzzle_id=None if ids is None else int(ids[i]))
        files += [p for p in paths if p is not None and p.exists()]
        skipped += [line for line in lines if line.startswith("film strip skipped")]
    if skipped:
        print(skipped[0] + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""))
    return files


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
