"""Evaluate a trained TRM checkpoint on Sudoku: accuracy, validity, halting, and recursion depth.

    python impl/evaluate.py                                     # runs/tiny_trm_impl_sudoku/best.pt, test split
    python impl/evaluate.py --checkpoint runs/x/last.pt --split train --limit 500
    python impl/evaluate.py --halt --depth 32                   # halting on; depth benchmark up to 32 steps
    python impl/evaluate.py --data-config hf.json               # another data section (same grid size)

Writes eval_<split>.json (metrics and breakdowns) and depth_<split>.json / .csv / .png (accuracy
after each supervision step 1..K) to the checkpoint's folder, or to --out.

The metrics (puzzle_metrics) and the batched evaluation (evaluate) are also what the training
loop reports, so a number printed here and one in log.jsonl mean the same thing.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data_sudoku  # noqa: E402
from checkpoint import load_checkpoint, load_weights, write_atomic, write_text_atomic  # noqa: E402
from config import load_config  # noqa: E402
from device import pick_device, pick_dtype  # noqa: E402
from errors import UserError, run_cli  # noqa: E402
from trm import TRM, TRMConfig  # noqa: E402

DEFAULT_CHECKPOINT = "runs/tiny_trm_impl_sudoku/best.pt"
TRAIN_COMMAND = "python impl/train_trm.py"
MAX_GROUPS = 10  # a breakdown with more distinct values than this is binned into ranges


# ----------------------------------------------------------------------------------------------
# Metrics on arrays


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def valid_grids(inputs, answers, size: int) -> np.ndarray:
    """(N,) bool: answer is a complete Sudoku (every row, column and box a permutation of the
    digits) that keeps every given of its puzzle. Vectorised over puzzles; data_sudoku's
    is_valid_solution is the one-grid reference."""
    inputs, answers = _numpy(inputs).astype(np.int64), _numpy(answers).astype(np.int64)
    units = answers[:, data_sudoku.unit_index(size)]                  # (N, 3*size, size)
    digits = np.arange(2, size + 2)                                     # tokens of digits 1..size
    rules = (np.sort(units, axis=2) == digits).all(axis=(1, 2))
    return rules & givens_kept(inputs, answers)


def givens_kept(inputs, answers) -> np.ndarray:
    """(N,) bool: the answer repeats every given (non-blank cell) of the puzzle."""
    inputs, answers = _numpy(inputs), _numpy(answers)
    given = inputs > data_sudoku.BLANK
    return ((answers == inputs) | ~given).all(axis=1)


def _groups(values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, mask) per distinct value, or per range of values when there are many."""
    distinct = np.unique(values)
    if len(distinct) <= MAX_GROUPS:
        return [(str(v), values == v) for v in distinct]
    edges = np.array_split(distinct, MAX_GROUPS)                       # ranges of distinct values
    return [(f"{chunk[0]}-{chunk[-1]}", (values >= chunk[0]) & (values <= chunk[-1])) for chunk in edges]


def puzzle_metrics(inputs, labels, answers, confidence=None, steps=None, size: int | None = None,
                   ratings=None, breakdown: bool = False) -> dict:
    """Metrics of answers (N, S) against labels for puzzles inputs (numpy or torch), as plain numbers.

    token_acc  cells right, givens included (as the official code counts)
    blank_acc  cells right among the blanks the model had to fill
    exact_acc  puzzles entirely right
    validity   answers that obey the rules and keep the givens, whether or not they equal the label
    givens_kept  answers that repeat every given
    halt_acc   how often the halting head's "correct" (confidence > 0.5) agrees with exact (needs confidence)
    avg_steps  supervision steps used (needs steps)
    With breakdown=True, also by_givens (number of givens) and by_rating (when ratings are given):
    {group: {n, exact_acc, blank_acc, validity}}.
    """
    inputs, labels, answers = _numpy(inputs), _numpy(labels), _numpy(answers)
    n, cells = labels.shape
    size = size or int(round(cells ** 0.5))
    hit = answers == labels                                             # (N, S)
    blank = inputs == data_sudoku.BLANK
    exact = hit.all(axis=1)
    valid = valid_grids(inputs, answers, size)
    out = {
        "token_acc": float(hit.mean()) if n else 0.0,
        "blank_acc": float(hit[blank].mean()) if blank.any() else 0.0,   # no blanks: 0, as training always reported
        "exact_acc": float(exact.mean()) if n else 0.0,
        "validity": float(valid.mean()) if n else 0.0,
        "givens_kept": float(givens_kept(inputs, answers).mean()) if n else 0.0,
    }
    if confidence is not None:
        out["halt_acc"] = float(((_numpy(confidence) > 0.5) == exact).mean()) if n else 0.0
    if steps is not None:
        out["avg_steps"] = float(_numpy(steps).mean()) if n else 0.0
    out["n"] = int(n)
    if breakdown:
        by = {"by_givens": (~blank).sum(axis=1)}
        if ratings is not None:
            by["by_rating"] = _numpy(ratings).astype(np.int64)
        for name, values in by.items():
            out[name] = {}
            for label, mask in _groups(values):
                b = blank[mask]
                out[name][label] = {"n": int(mask.sum()), "exact_acc": float(exact[mask].mean()),
                                    "blank_acc": float(hit[mask][b].mean()) if b.any() else 0.0,
                                    "validity": float(valid[mask].mean())}
    return out


# ----------------------------------------------------------------------------------------------
# Batched evaluation and the recursion-depth benchmark


@torch.no_grad()
def evaluate(model: TRM, inputs: np.ndarray, labels: np.ndarray, N_sup: int, batch_size: int,
             device: torch.device, dtype: torch.dtype, progress: bool = False, halt: bool = False,
             ratings: np.ndarray | None = None, breakdown: bool = False) -> dict:
    """Metrics (puzzle_metrics) after N_sup supervision steps, batched through model.predict.

    halt=False runs every puzzle N_sup steps (the official evaluation); halt=True stops each one at
    its first step whose halting logit is > 0. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    answers, confidence, steps = [], [], []
    for start in tqdm(range(0, len(inputs), batch_size), desc="eval", leave=False, disable=not progress):
        x = torch.from_numpy(inputs[start:start + batch_size]).long().to(device)
        pred = model.predict(x, N_sup=N_sup, halt=halt, dtype=dtype)
        answers.append(pred.answers.cpu().numpy())
        confidence.append(pred.confidence.float().cpu().numpy())
        steps.append(pred.steps.cpu().numpy())
    model.train(was_training)
    S = inputs.shape[1]
    answers = np.concatenate(answers) if answers else np.zeros((0, S), dtype=np.int64)
    return puzzle_metrics(inputs, labels, answers, np.concatenate(confidence or [np.zeros(0)]),
                          np.concatenate(steps or [np.zeros(0)]), ratings=ratings, breakdown=breakdown)


@torch.no_grad()
def depth_benchmark(model: TRM, inputs: np.ndarray, labels: np.ndarray, K: int, batch_size: int,
                    device: torch.device, dtype: torch.dtype, progress: bool = False) -> list[dict]:
    """Accuracy after each supervision step k = 1..K (K may exceed the trained N_sup).

    One predict(keep_steps=True) per batch. Per k: exact/token/blank accuracy, validity and halting
    accuracy of the answer after exactly k steps; and with halting, each puzzle stopped at its own
    halting step h (first step with confidence > 0.5, i.e. halting logit > 0) capped at k:
    halt_exact_acc, halt_token_acc, halt_validity, halted_frac (h <= k) and halt_avg_steps (min(h, k)).
    """
    was_training = model.training
    model.eval()
    per_step, per_conf = [], []
    for start in tqdm(range(0, len(inputs), batch_size), desc="depth", leave=False, disable=not progress):
        x = torch.from_numpy(inputs[start:start + batch_size]).long().to(device)
        pred = model.predict(x, N_sup=K, keep_steps=True, dtype=dtype)
        per_step.append(pred.per_step.cpu().numpy().astype(np.uint8))     # (K, B, S)
        per_conf.append(pred.per_step_confidence.float().cpu().numpy())   # (K, B)
    model.train(was_training)
    per_step, per_conf = np.concatenate(per_step, axis=1), np.concatenate(per_conf, axis=1)
    n = per_step.shape[1]
    halts = per_conf > 0.5                                               # (K, N)
    halt_step = np.where(halts.any(axis=0), halts.argmax(axis=0) + 1, K + 1)  # first halting step, K+1: never
    rows = []
    for k in range(1, K + 1):
        plain = puzzle_metrics(inputs, labels, per_step[k - 1], per_conf[k - 1])
        stop = np.minimum(halt_step, k)                                   # (N,) step each puzzle answers at
        halted = puzzle_metrics(inputs, labels, per_step[stop - 1, np.arange(n)])
        rows.append({"step": k, "exact_acc": plain["exact_acc"], "token_acc": plain["token_acc"],
                     "blank_acc": plain["blank_acc"], "validity": plain["validity"], "halt_acc": plain["halt_acc"],
                     "halt_exact_acc": halted["exact_acc"], "halt_token_acc": halted["token_acc"],
                     "halt_validity": halted["validity"], "halted_frac": float((halt_step <= k).mean()),
                     "halt_avg_steps": float(stop.mean()), "n": n})
    return rows


# ----------------------------------------------------------------------------------------------
# Tables and files


def format_metrics(metrics: dict) -> str:
    notes = {"token_acc": "cells right, givens included", "blank_acc": "cells right among the blanks",
             "exact_acc": "puzzles entirely right", "validity": "answers obeying the rules and keeping the givens",
             "givens_kept": "answers repeating every given",
             "halt_acc": "halting head (confidence > 0.5) agrees with exact", "avg_steps": "supervision steps used",
             "n": "puzzles"}
    lines = []
    for key, note in notes.items():
        if key in metrics:
            value = metrics[key]
            text = f"{value:d}" if isinstance(value, int) else f"{value:.4f}"
            lines.append(f"  {key:<12} {text:>8}   {note}")
    for name, title in (("by_rating", "rating (solver guesses)"), ("by_givens", "givens")):
        if name in metrics:
            lines.append(f"  by {title}:")
            lines.append(f"    {'group':>8} {'n':>6} {'exact':>7} {'blank':>7} {'valid':>7}")
            for label, m in metrics[name].items():
                lines.append(f"    {label:>8} {m['n']:>6d} {m['exact_acc']:>7.4f} {m['blank_acc']:>7.4f} "
                             f"{m['validity']:>7.4f}")
    return "\n".join(lines)


DEPTH_COLUMNS = [("step", "step", "{:d}"), ("exact_acc", "exact", "{:.4f}"), ("token_acc", "token", "{:.4f}"),
                 ("validity", "valid", "{:.4f}"), ("halt_acc", "halt_acc", "{:.4f}"),
                 ("halt_exact_acc", "h.exact", "{:.4f}"), ("halt_validity", "h.valid", "{:.4f}"),
                 ("halted_frac", "halted", "{:.4f}"), ("halt_avg_steps", "h.steps", "{:.2f}")]


def format_depth_table(rows: list[dict], trained_N_sup: int | None = None) -> str:
    """Depth benchmark as a text table; 'h.' columns stop each puzzle at its halting step (capped at k)."""
    header = " ".join(f"{title:>8}" for _, title, _ in DEPTH_COLUMNS)
    lines = [header]
    for row in rows:
        line = " ".join(f"{fmt.format(row[key]):>8}" for key, _, fmt in DEPTH_COLUMNS)
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
# Checkpoint loading (shared with solve.py)


class EvalError(UserError):
    """A problem the user can fix (missing checkpoint, bad data config); the CLI prints it."""


def load_trained(path: str | os.PathLike, device: torch.device) -> tuple[TRM, dict, str]:
    """Model (EMA weights when the checkpoint has them, in eval mode), the checkpoint dict, and
    which weights were used ("EMA" or "raw")."""
    path = Path(path)
    if not path.exists():
        raise EvalError(f"{path}: no such checkpoint; train one with: {TRAIN_COMMAND} (writes runs/<run_name>/best.pt)")
    ckpt = load_checkpoint(path, TRAIN_COMMAND)
    missing = [key for key in ("model", "model_config", "config", "data_size") if key not in ckpt]
    if missing:
        raise EvalError(f"{path}: not a TRM training checkpoint (missing {', '.join(missing)})")
    # Checkpoints from before model.mlp_t_norm and model.prefix_learned existed were trained with
    # the per-token mlp_t norm and every prefix position learned: keep them computing that.
    model = TRM(TRMConfig(**{"mlp_t_norm": "hidden", "prefix_learned": "all", **ckpt["model_config"]}))
    use_ema = ckpt.get("ema") is not None
    weights = ckpt["ema"] if use_ema else ckpt["model"]
    # JEPA runs (train_trm_jepa.py) add a predictor beside the TRM; inference needs only the TRM.
    load_weights(model, {k: v for k, v in weights.items() if not k.startswith("predictor.")}, path)
    return model.to(device).eval(), ckpt, "EMA" if use_ema else "raw"


def pick_device_dtype(device_name: str, dtype_name: str) -> tuple[torch.device, torch.dtype, str]:
    """Device and dtype as training picks them, with a line that says which and why."""
    device, device_why = pick_device(device_name, key="--device")
    dtype, dtype_why = pick_dtype(dtype_name, device, key="--dtype")
    line = f"device: {device} ({device_why}); dtype: {str(dtype).replace('torch.', '')} ({dtype_why})"
    return device, dtype, line


def _data_section(ckpt: dict, data_config: str | None) -> tuple[dict, str]:
    """The checkpoint's data section, or it with a run-override file's data section merged over."""
    if not data_config:
        return ckpt["config"]["data"], "the checkpoint's data config"
    try:
        merged = load_config(data_config, base=ckpt["config"])
        data_sudoku.check_data_config(merged["data"])
    except ValueError as e:
        raise EvalError(f"{data_config}: {e}" if str(data_config) not in str(e) else str(e)) from None
    return merged["data"], f"the checkpoint's data config with {data_config} merged over it (data section only)"


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint to evaluate (best.pt or last.pt)")
    parser.add_argument("--split", choices=("test", "train"), default="test", help="which split of the data")
    parser.add_argument("--limit", type=int, default=0, help="evaluate the first N puzzles only (0: all)")
    parser.add_argument("--steps", type=int, default=0, help="supervision steps K (0: the model's N_sup)")
    parser.add_argument("--depth", type=int, default=-1,
                        help="depth benchmark up to K steps (-1: 2x the model's N_sup; 0: skip)")
    parser.add_argument("--halt", action="store_true", help="stop each puzzle at its halting step (logit > 0)")
    parser.add_argument("--batch-size", type=int, default=256, help="puzzles per batch")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    parser.add_argument("--out", help="folder for the output files (default: the checkpoint's folder)")
    parser.add_argument("--data-config", help="JSON run-override file whose data section replaces the checkpoint's "
                                              "(e.g. another source; the grid size must match)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name in ("limit", "steps", "batch_size"):
        if getattr(args, name) < (1 if name == "batch_size" else 0):
            parser.error(f"--{name.replace('_', '-')}: {getattr(args, name)} must be >= {1 if name == 'batch_size' else 0}")
    if args.depth < -1:
        parser.error(f"--depth: {args.depth} must be >= 0 (or -1 for 2x N_sup)")
    return args


def run(args: argparse.Namespace) -> dict:
    """Evaluate as the arguments say; returns {"metrics", "depth", "files"}. Raises EvalError."""
    progress = not args.no_progress
    device, dtype, device_line = pick_device_dtype(args.device, args.dtype)
    model, ckpt, weights = load_trained(args.checkpoint, device)
    N_sup = model.config.N_sup
    steps = args.steps or N_sup
    depth = 2 * N_sup if args.depth == -1 else args.depth
    data_cfg, data_from = _data_section(ckpt, args.data_config)
    size = data_cfg["grid_size"] if data_sudoku.data_source(data_cfg) == "generated" else 9   # builtin, hf: 9x9
    if size != ckpt["data_size"]:
        raise EvalError(f"the data is {size}x{size} but {args.checkpoint} was trained on "
                        f"{ckpt['data_size']}x{ckpt['data_size']} grids")
    data = data_sudoku.load_sudoku(data_cfg, seed=data_cfg["seed"], progress=progress)
    inputs, labels, ratings = {"test": (data.test_inputs, data.test_labels, data.test_ratings),
                               "train": (data.train_inputs, data.train_labels, data.train_ratings)}[args.split]
    limit = args.limit or len(inputs)
    inputs, labels, ratings = inputs[:limit], labels[:limit], ratings[:limit]
    out_dir = Path(args.out) if args.out else Path(args.checkpoint).parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"--out: cannot write to {out_dir} ({e.strerror or type(e).__name__})") from None

    print(device_line)
    print(f"checkpoint: {args.checkpoint} (step {ckpt.get('step', '?')}, {weights} weights; "
          f"D={model.config.hidden_size}, T={model.config.T}, n={model.config.n}, N_sup={N_sup})")
    print(f"data: {data.description} [{data_from}]")
    print(f"split: {args.split}, {len(inputs)} puzzles")

    t0 = time.time()
    metrics = evaluate(model, inputs, labels, steps, args.batch_size, device, dtype, progress=progress,
                       halt=args.halt, ratings=ratings, breakdown=True)
    print(f"\nmetrics after {'up to ' if args.halt else ''}{steps} supervision steps"
          f"{' (halting on)' if args.halt else ''}, {time.time() - t0:.1f}s:")
    print(format_metrics(metrics))
    eval_path = out_dir / f"eval_{args.split}.json"
    record = {"checkpoint": str(args.checkpoint), "step": ckpt.get("step"), "weights": weights, "split": args.split,
              "data": data.description, "N_sup": steps, "halt": args.halt,
              "dtype": str(dtype).replace("torch.", ""), **metrics}
    write_text_atomic(eval_path, json.dumps(record, indent=2) + "\n")
    files = [eval_path]

    rows = []
    if depth:
        t0 = time.time()
        rows = depth_benchmark(model, inputs, labels, depth, args.batch_size, device, dtype, progress=progress)
        print(f"\ndepth benchmark, steps 1..{depth} ({time.time() - t0:.1f}s); h.* = halting on, "
              f"each puzzle answers at its halting step capped at k:")
        print(format_depth_table(rows, N_sup))
        files += save_depth(rows, out_dir, args.split)
        png = out_dir / f"depth_{args.split}.png"
        note = plot_depth(rows, png, N_sup, title=f"{Path(args.checkpoint).name}, {data.description}, {args.split}")
        print(note)
        if png.exists() and note.startswith("plot:"):
            files.append(png)
    print("wrote: " + ", ".join(str(f) for f in files))
    return {"metrics": metrics, "depth": rows, "files": files}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
