"""Solve a puzzle typed on the command line (a Sudoku, a maze) with a trained TRM checkpoint.

    python impl/solve.py "1..4..3..1..4..2"                        # Sudoku: 16, 36 or 81 cells; '.' or '0' is blank
    python impl/solve.py --checkpoint runs/x/best.pt --steps "<puzzle>"   # show every supervision step
    python impl/solve.py --checkpoint runs/maze/best.pt --steps "$(cat maze.txt)"  # a maze: N lines of N cells
    python impl/solve.py --file puzzles.txt --halt --max-steps 32
    python impl/solve.py --members 8 --member-kind both --sigma 0.1 "<puzzle>"   # a test-time ensemble

The checkpoint's dataset names the puzzle type; its module (impl/puzzles.py) reads and prints the
puzzle, checks it and knows its answer. A Sudoku is 16, 36 or 81 cells (digits, '.' or '0' blank);
a maze is N lines of N cells, or one line of N*N ('#' wall, '.' or ' ' open, 'S' start, 'G' goal).
A puzzle type without those hooks takes and prints the token ids, separated by spaces, and shows
'-' where its module has no rule check or reference answer.
Prints the puzzle and the model's answer, whether the answer is valid (Sudoku: rules and givens;
maze: a shortest path from S to G) and whether it is the puzzle's unique answer, the supervision
steps used and the halting head's confidence. With --steps it prints the answer after each step,
'*' marking the cells that changed since the previous step (step 1: since the puzzle). A puzzle
that is not to be answered (a Sudoku without exactly one solution, a maze without a path) is
reported. With --members K > 1 the puzzle is answered by K members (impl/ensemble.py): a table shows
each member's answer (A, B, ... one letter per distinct answer), halting logit, first halting step
and validity, then what every selection rule picks; the answer shown is --select's. Errors go to
stderr, with a non-zero exit code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import puzzles
import recursion_view
from checkpoint import load_trained
from ensemble import KINDS, RULES, member_validity, rules_for, run_members, select, transforms_for
from device import pick_device_dtype
from errors import UserError
from cli_args import check_options, finite, seed_rule
from puzzle_dataset import Metadata, metadata_from_json

DEFAULT_CHECKPOINT = "runs/tiny_trm_impl_sudoku/best.pt"


class EvalError(UserError):
    """A puzzle or file that cannot be answered; the message says which and why."""


def read_puzzles(text: str | None, file: str | None) -> list[tuple[str, str]]:
    """(where, text) per puzzle: 'puzzle' for the argument, 'FILE:LINE' for lines of --file
    (blank lines and lines starting with '#' are skipped; a maze takes one line of N*N cells here,
    with '.' for open cells: an editor may strip trailing spaces)."""
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


def puzzle_hooks(ckpt: dict, path: str) -> tuple[puzzles.Hooks, Metadata]:
    """The hooks of the puzzle type a checkpoint was trained on (none: every hook absent)."""
    meta = metadata_from_json(ckpt["dataset"], Path(path))
    hooks = puzzles.hooks_for(meta) or puzzles.Hooks(meta.puzzle or "tokens", None)
    return hooks, meta


def parse_tokens(text: str, meta: Metadata) -> np.ndarray:
    """A puzzle typed as its seq_len token ids, separated by spaces or commas (no parse hook)."""
    try:
        tokens = np.array([int(t) for t in text.replace(",", " ").split()], dtype=np.int64)
    except ValueError:
        raise ValueError(f"expected {meta.seq_len} token ids (integers separated by spaces), got {text!r}") from None
    if len(tokens) != meta.seq_len or tokens.min() < 0 or tokens.max() >= meta.vocab_size:
        raise ValueError(f"expected {meta.seq_len} token ids in 0..{meta.vocab_size - 1}, got {len(tokens)}: "
                         f"{' '.join(map(str, tokens))}")
    return tokens


def format_tokens(tokens: np.ndarray, meta: Metadata, marked: np.ndarray | None = None) -> str:
    """The token ids, separated by spaces, '*' after marked ones (no format hook)."""
    marked = np.zeros(len(tokens), bool) if marked is None else marked
    return " ".join(f"{int(t)}{'*' if m else ''}" for t, m in zip(tokens, marked))


def show(hooks: puzzles.Hooks, tokens: np.ndarray, meta: Metadata, marked: np.ndarray | None = None) -> str:
    """A puzzle or answer printed by the puzzle's format hook, or as token ids."""
    return (hooks.format or format_tokens)(tokens, meta, marked)


def parse_for(hooks: puzzles.Hooks, meta: Metadata, text: str, where: str) -> np.ndarray:
    """Tokens of a typed puzzle for the checkpoint's puzzle type and size; EvalError names where and why."""
    try:
        return (hooks.parse or parse_tokens)(text, meta)
    except ValueError as e:
        raise EvalError(f"{where}: {e}") from None


def solve_one(model, hooks: puzzles.Hooks, meta: Metadata, puzzle: np.ndarray, where: str, K: int, halt: bool,
              show_steps: bool, device: torch.device, dtype: torch.dtype, ensemble: dict | None = None,
              pictures: tuple[str | None, str | None] = (None, None)) -> str | None:
    """Print the puzzle, the model's answer and the checks. Returns why the puzzle was not
    answered (a Sudoku without exactly one solution, a maze without a path), or None. ensemble:
    {members, kind, sigma, select, seed} for a test-time ensemble (members > 1); pictures: the
    page and film strip of its K steps to write (recursion_view.py), or None."""
    print(f"{where}:\n{show(hooks, puzzle, meta)}")
    try:  # None: several right answers, any valid one counts
        reference = hooks.reference(puzzle, meta) if hooks.reference is not None else None
    except ValueError as e:
        return f"{where}: {e}"
    if any(pictures):
        for line in recursion_view.draw(model, puzzle, K, dtype, hooks.cells(meta), reference,
                                        f"{where}: {K} supervision steps", *pictures):
            print(line)
    if ensemble is not None:
        answer, steps, confidence = ensemble_answer(model, hooks, meta, puzzle, reference, K, ensemble["members"],
                                                    ensemble["kind"], ensemble["sigma"], ensemble["select"], halt,
                                                    ensemble["seed"], device, dtype)
    else:
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
            print(show(hooks, grid, meta, changed))
            previous = grid
    valid_fn = hooks.valid_fn(meta)
    valid = bool(valid_fn(puzzle[None], answer[None])[0]) if valid_fn is not None else None
    why = f" ({hooks.problem(puzzle, answer, meta)})" if valid is False and hooks.problem is not None else ""
    how = "halted" if halted_at else ("all steps" if not halt else "no halt before the last step")
    chosen = f", chosen by {ensemble['select']} among {ensemble['members']} members" if ensemble else ""
    print(f"\nanswer after {steps} supervision step{'s' if steps != 1 else ''} ({how}{chosen}), "
          f"halting confidence {confidence:.3f}:")
    print(show(hooks, answer, meta))
    if valid is None:
        checked = "valid: - (no rule check: the puzzle module has no valid_fn)"
    else:
        checked = f"valid ({hooks.validity}): {'yes' if valid else 'no'}{why}"
    if hooks.reference is None:
        matches = "matches: - (no reference answer: the puzzle module has no reference)"
    elif reference is None:
        matches = f"matches {hooks.solution}: - (it has more than one; any of them is valid)"
    else:
        wrong = int((answer != reference).sum())
        matches = f"matches {hooks.solution}: " + ("yes" if wrong == 0 else f"no ({wrong} cells differ)")
    print(f"{checked}; {matches}")
    return None


def ensemble_answer(model, hooks: puzzles.Hooks, meta: Metadata, puzzle: np.ndarray, reference, steps: int, K: int,
                    kind: str, sigma: float, rule: str, halt: bool, seed: int, device: torch.device,
                    dtype: torch.dtype) -> tuple[np.ndarray, int, float]:
    """Print the members' answers and every rule's choice; return (answer, steps, confidence) of rule."""
    try:
        transforms = transforms_for(hooks, meta, kind, K, seed)
    except ValueError as e:
        raise EvalError(f"--member-kind: {e}") from None
    valid_fn = hooks.valid_fn(meta)
    if rule == "valid" and valid_fn is None:
        raise EvalError("--select valid: this puzzle type has no rule check (use vote, halt or first)")
    members = run_members(model, puzzle[None], K, kind, sigma, steps, K, device, dtype, transforms, halt=halt,
                          seed=seed)
    valid = member_validity(members, puzzle[None], valid_fn)
    letters, names = [], {}
    for k in range(K):
        key = members.answers[k, 0].tobytes()
        names.setdefault(key, chr(ord("A") + len(names)) if len(names) < 26 else f"#{len(names) + 1}")
        letters.append(names[key])
    print(f"\n{K} {kind} members" + (f", sigma {sigma:g}" if kind != "symmetry" else "") + ":")
    print(f"  {'member':>6} {'answer':>6} {'logit':>8} {'halts at':>8} {'valid':>5} {'right':>5}")
    for k in range(K):
        right = "-" if reference is None else ("yes" if (members.answers[k, 0] == reference).all() else "no")
        first = int(members.first_halt[k, 0])
        print(f"  {k:>6} {letters[k]:>6} {float(members.logit[k, 0]):>8.3f} {first if first else '-':>8} "
              f"{'-' if valid is None else 'yes' if valid[k, 0] else 'no':>5} {right:>5}")
    picks = {r: select(members, r, valid) for r in rules_for(valid_fn)}
    print("  chosen: " + ", ".join(f"{r} -> member {int(c['member'][0])} ({letters[int(c['member'][0])]})"
                                   for r, c in picks.items()))
    chosen = picks[rule]
    return chosen["answers"][0], int(chosen["steps"][0]), float(1.0 / (1.0 + np.exp(-float(chosen["logit"][0]))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("puzzle", nargs="?", help="the puzzle: a Sudoku of 16, 36 or 81 cells (digits for givens, "
                                                  "'.' or '0' for blanks), a maze (N lines of N cells: '#', '.', 'S', "
                                                  "'G'), or the token ids of a puzzle type without a parse hook")
    parser.add_argument("--file", help="a file with one puzzle per line (instead of the argument)")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="trained checkpoint (best.pt or last.pt)")
    parser.add_argument("--steps", action="store_true", help="print the answer after every supervision step")
    parser.add_argument("--max-steps", type=int, default=0, help="supervision steps at most (0: the model's N_sup)")
    parser.add_argument("--halt", action="store_true",
                        help="stop each puzzle at the step where the halting head says 'correct' (default: run all "
                             "steps, as the official evaluation does; the halting head can stop too early)")
    parser.add_argument("--members", type=int, default=1, help="K members per puzzle (1: no ensemble)")
    parser.add_argument("--member-kind", choices=KINDS, default="symmetry",
                        help="symmetry (the puzzle's symmetries, mapped back) | noise (latent noise) | both")
    parser.add_argument("--sigma", type=float, default=0.0, help="scale of the latent noise (noise and both members)")
    parser.add_argument("--select", choices=RULES, default="vote", help="the rule whose answer is shown")
    parser.add_argument("--seed", type=int, default=0, help="seed of the members' symmetries and noise")
    parser.add_argument("--html", help="write the recursion (the answer, halting and latent after each step) "
                                       "as a self-contained page to this file (several puzzles: FILE_<i>.html)")
    parser.add_argument("--png", help="write the same as a PNG film strip to this file (needs matplotlib)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16")
    args = parser.parse_args(argv)
    if args.members < 1:
        parser.error(f"--members: {args.members} must be >= 1")
    if not args.sigma >= 0:
        parser.error(f"--sigma: {args.sigma} must be >= 0")
    if args.members > 1 and args.steps:
        parser.error("--steps shows one trajectory; with --members > 1 the members' table is shown instead (drop one)")
    if (args.puzzle is None) == (args.file is None):
        parser.error("give a puzzle or --file FILE (one of them)")
    if args.max_steps < 0:
        parser.error(f"--max-steps: {args.max_steps} must be >= 0")
    check_options([("--sigma", args.sigma, finite(args.sigma), "must be a finite number"),
                   seed_rule("--seed", args.seed)])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        texts = read_puzzles(args.puzzle, args.file)
        device, dtype, _ = pick_device_dtype(args.device, args.dtype)
        model, ckpt, _ = load_trained(args.checkpoint, device)
        hooks, meta = puzzle_hooks(ckpt, args.checkpoint)
        typed = [(where, parse_for(hooks, meta, text, where)) for where, text in texts]  # all checked before any work
    except UserError as e:
        sys.exit(f"error: {e}")
    K = args.max_steps or model.config.N_sup
    problems = []
    for i, (where, puzzle) in enumerate(typed):
        if i:
            print()
        ensemble = None if args.members == 1 else {"members": args.members, "kind": args.member_kind,
                                                    "sigma": args.sigma, "select": args.select, "seed": args.seed}
        try:
            pictures = tuple(path and recursion_view.numbered(path, i, len(typed)) for path in (args.html, args.png))
            problem = solve_one(model, hooks, meta, puzzle, where, K, args.halt, args.steps, device, dtype, ensemble,
                                pictures)
        except UserError as e:
            sys.exit(f"error: {e}")
        if problem:
            problems.append(problem)
            if len(typed) > 1:
                print(f"error: {problem}", file=sys.stderr)
    if len(problems) == 1 and len(typed) == 1:
        sys.exit(f"error: {problems[0]}")
    if problems:
        sys.exit(f"error: {len(problems)} of {len(typed)} puzzles not answered (see above)")
    return 0


if __name__ == "__main__":
    main()
