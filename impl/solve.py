"""Solve a Sudoku typed on the command line with a trained TRM checkpoint.

    python impl/solve.py "1..4..3..1..4..2"                        # 16, 36 or 81 cells; '.' or '0' is blank
    python impl/solve.py --checkpoint runs/x/best.pt --steps "<puzzle>"   # show every supervision step
    python impl/solve.py --file puzzles.txt --halt --max-steps 32

Prints the puzzle and the model's answer as grids, whether the answer is valid (rules and givens)
and whether it is the puzzle's unique solution, the supervision steps used and the halting head's
confidence. With --steps it prints the answer after each step, '*' marking the cells that changed
since the previous step (step 1: since the puzzle). A puzzle without exactly one solution is
reported and not answered. Errors go to stderr, with a non-zero exit code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import sudoku_rules
from checkpoint import load_trained
from device import pick_device_dtype
from errors import UserError
from sudoku_solver import solve

DEFAULT_CHECKPOINT = "runs/tiny_trm_impl_sudoku/best.pt"


class EvalError(UserError):
    """A puzzle or file that cannot be answered; the message says which and why."""


def format_marked(tokens: np.ndarray, size: int, marked: np.ndarray) -> str:
    """Like sudoku_rules.format_grid, with '*' after the cells where marked (S,) is true."""
    br, bc = sudoku_rules.box_shape(size)
    symbols = {sudoku_rules.PAD: "_", sudoku_rules.BLANK: "."} | {d + 1: str(d) for d in range(1, size + 1)}
    cells = [symbols.get(int(t), "?") + ("*" if m else " ") for t, m in zip(tokens, marked)]
    lines = []
    for r in range(size):
        if r and r % br == 0:
            lines.append("-+-".join(["-" * (3 * bc - 1)] * (size // bc)))
        row = cells[r * size:(r + 1) * size]
        lines.append(" | ".join(" ".join(row[c:c + bc]) for c in range(0, size, bc)).rstrip())
    return "\n".join(lines)


def read_puzzles(text: str | None, file: str | None) -> list[tuple[str, str]]:
    """(where, text) per puzzle: 'puzzle' for the argument, 'FILE:LINE' for lines of --file
    (blank lines and lines starting with '#' are skipped)."""
    if file is None:
        return [("puzzle", text)]
    try:
        lines = Path(file).read_bytes().decode("utf-8-sig").splitlines()
    except OSError as e:
        raise EvalError(f"{file}: cannot read puzzle file ({e.strerror or type(e).__name__})") from None
    except UnicodeDecodeError as e:
        raise EvalError(f"{file}: not a UTF-8 text file (byte {e.start}); one puzzle per line") from None
    puzzles = [(f"{file}:{no}", line) for no, line in enumerate(lines, 1)
               if line.strip() and not line.lstrip().startswith("#")]
    if not puzzles:
        raise EvalError(f"{file}: no puzzles in the file (one per line)")
    return puzzles


def parse_for(text: str, where: str, size: int) -> np.ndarray:
    """Tokens of a puzzle string for a model trained on size x size grids; EvalError names where and the position."""
    try:
        puzzle = sudoku_rules.parse_puzzle(text)
    except ValueError as e:
        raise EvalError(f"{where}: {e}") from None
    own = int(round(len(puzzle) ** 0.5))
    if own != size:
        raise EvalError(f"{where}: the puzzle is {own}x{own} ({own * own} cells) but the checkpoint was trained on "
                        f"{size}x{size} grids ({size * size} cells)")
    return puzzle


def solve_one(model, puzzle: np.ndarray, size: int, where: str, K: int, halt: bool, show_steps: bool,
              device: torch.device, dtype: torch.dtype) -> str | None:
    """Print the puzzle, the model's answer and the checks. Returns why the puzzle was not
    answered (no solution, several solutions), or None."""
    print(f"{where}:\n{sudoku_rules.format_grid(puzzle, size)}")
    solutions, _ = solve(puzzle, size, limit=2)
    if len(solutions) != 1:
        return f"{where}: the puzzle has {'no solution' if not solutions else 'more than one solution (not unique)'}; not answered"
    x = torch.from_numpy(puzzle[None]).long().to(device)
    pred = model.predict(x, N_sup=K, halt=halt, keep_steps=show_steps, dtype=dtype)
    answer = pred.answers[0].cpu().numpy()
    steps, confidence = int(pred.steps[0]), float(pred.confidence[0])
    halted_at = steps if halt and confidence > 0.5 else None            # halting logit > 0 froze the answer
    if show_steps:
        previous = puzzle
        for k in range(1, K + 1):
            grid = pred.per_step[k - 1, 0].cpu().numpy()
            changed = grid != previous
            mark = "  <- halts here: the answer is frozen" if k == halted_at else ""
            print(f"\nstep {k}: confidence {float(pred.per_step_confidence[k - 1, 0]):.3f}, "
                  f"{int(changed.sum())} cells changed{mark}")
            print(format_marked(grid, size, changed))
            previous = grid
    valid = bool(sudoku_rules.valid_grids(puzzle[None], answer[None], size)[0])
    wrong = int((answer != solutions[0]).sum())
    how = "halted" if halted_at else ("all steps" if not halt else "no halt before the last step")
    print(f"\nanswer after {steps} supervision step{'s' if steps != 1 else ''} ({how}), "
          f"halting confidence {confidence:.3f}:")
    print(sudoku_rules.format_grid(answer, size))
    print(f"valid (rules and givens): {'yes' if valid else 'no'}; matches the unique solution: "
          f"{'yes' if wrong == 0 else f'no ({wrong} cells differ)'}")
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("puzzle", nargs="?", help="the puzzle: 16, 36 or 81 cells, digits for givens, '.' or '0' for blanks")
    parser.add_argument("--file", help="a file with one puzzle per line (instead of the argument)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="trained checkpoint (best.pt or last.pt)")
    parser.add_argument("--steps", action="store_true", help="print the answer after every supervision step")
    parser.add_argument("--max-steps", type=int, default=0, help="supervision steps at most (0: the model's N_sup)")
    parser.add_argument("--halt", action="store_true",
                        help="stop each puzzle at the step where the halting head says 'correct' (default: run all "
                             "steps, as the official evaluation does; the halting head can stop too early)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    args = parser.parse_args(argv)
    if (args.puzzle is None) == (args.file is None):
        parser.error("give a puzzle or --file FILE (one of them)")
    if args.max_steps < 0:
        parser.error(f"--max-steps: {args.max_steps} must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        texts = read_puzzles(args.puzzle, args.file)
        device, dtype, _ = pick_device_dtype(args.device, args.dtype)
        model, ckpt, _ = load_trained(args.checkpoint, device)
        if ckpt["dataset"].get("puzzle") != "sudoku":
            raise EvalError(f"{args.checkpoint}: solve.py answers Sudoku; this checkpoint was trained on "
                            f"{ckpt['dataset'].get('puzzle') or 'a dataset without a puzzle type'}")
        size = int(round(ckpt["dataset"]["seq_len"] ** 0.5))
        puzzles = [(where, parse_for(text, where, size)) for where, text in texts]  # all checked before any work
    except UserError as e:
        sys.exit(f"error: {e}")
    K = args.max_steps or model.config.N_sup
    problems = []
    for i, (where, puzzle) in enumerate(puzzles):
        if i:
            print()
        problem = solve_one(model, puzzle, size, where, K, args.halt, args.steps, device, dtype)
        if problem:
            problems.append(problem)
            if len(puzzles) > 1:
                print(f"error: {problem}", file=sys.stderr)
    if len(problems) == 1 and len(puzzles) == 1:
        sys.exit(f"error: {problems[0]}")
    if problems:
        sys.exit(f"error: {len(problems)} of {len(puzzles)} puzzles not answered (see above)")
    return 0


if __name__ == "__main__":
    main()
