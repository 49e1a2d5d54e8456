"""ARC evaluation: every augmented version's prediction of a test input mapped back to the original
task, the candidates voted on, pass@K per task and overall, and an ARC submission file.

As the official evaluator (evaluators/arc.py): each prediction is cropped at its end-of-grid
marker and mapped back through its version's inverse (arc_grids.invert_grid); the distinct
answers to one test input are ranked by votes (how many versions gave that answer), then by their
mean halting confidence (sigmoid of the halting logit at the last step). Ties in both keep the
order in which the answers first appear (dataset order: the original version first), which is
what the official sort does on one process. pass@K of a test input: its right answer is among
the K best; of a task: the mean over its test inputs; overall: the mean over tasks. The
submission holds the two best answers per test input ("attempt_1", "attempt_2"; the first
repeated when there is only one), in the ARC Prize JSON format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from arc_grids import crop, grid_key, invert_grid, origin_of, parse_version
from errors import DataError
from puzzle_dataset import PuzzleSplit

OFFICIAL_KS = (1, 2, 5, 10, 100, 1000)  # the official evaluator's pass@K
SUBMISSION_K = 2                         # attempts per test input in an ARC submission
TIE_BREAK = "most votes, then highest mean halting confidence, then first seen (original version first)"


@dataclass
class Candidate:
    grid: np.ndarray
    votes: int
    confidence: float  # mean halting confidence of the versions that gave this answer


@dataclass
class TestInput:
    """One test input of an original task and the answers its versions gave (after the inverse)."""
    task: str
    index: int                 # which test input of the task
    grid: np.ndarray           # the original input
    truth: np.ndarray          # the original right answer
    guesses: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (answer, confidence) per version


def vote(guesses: Sequence[tuple[np.ndarray, float]]) -> list[Candidate]:
    """The distinct answers, best first (see TIE_BREAK)."""
    by_key: dict[bytes, list] = {}
    for grid, confidence in guesses:
        entry = by_key.setdefault(grid_key(grid), [grid, 0, 0.0])
        entry[1] += 1
        entry[2] += float(confidence)
    ranked = [Candidate(grid, votes, total / votes) for grid, votes, total in by_key.values()]  # first-seen order
    return sorted(ranked, key=lambda c: (c.votes, c.confidence), reverse=True)               # stable sort


def pass_ks(versions: int) -> list[int]:
    """pass@1, pass@2, the official Ks below the number of versions, and pass@<versions> (any version right)."""
    return sorted({1, 2, max(1, versions), *(k for k in OFFICIAL_KS if k < versions)})


def collect(split: PuzzleSplit, names: list[str], answers: np.ndarray, confidence: np.ndarray) -> list[TestInput]:
    """Group the predictions of a split's first len(answers) examples by original test input.
    Every example's input and label must map back to the same original pair (a check that
    identifiers.json describes the examples)."""
    n = len(answers)
    canvas = int(round(split.meta.seq_len ** 0.5))
    puzzles = split.example_puzzles()[:n]
    starts = np.asarray(split.puzzle_indices)[puzzles]
    ids = np.asarray(split.puzzle_identifiers)[puzzles]
    inputs, labels = np.asarray(split.inputs[:n]), np.asarray(split.labels[:n])
    items: dict[tuple[str, int], TestInput] = {}
    for i in range(n):
        name = names[ids[i]]
        try:
            task, tid, mapping = parse_version(name)
        except ValueError as e:
            raise DataError(f"{split.path.parent / 'identifiers.json'}: identifier {ids[i]}: {e}") from None
        origin = origin_of(inputs[i], canvas)
        back = [invert_grid(crop(tokens, canvas, origin), tid, mapping) for tokens in (inputs[i], labels[i], answers[i])]
        key = (task, int(i - starts[i]))
        item = items.setdefault(key, TestInput(task, key[1], back[0], back[1]))
        if grid_key(item.grid) != grid_key(back[0]) or grid_key(item.truth) != grid_key(back[1]):
            raise DataError(f"{split.path}: example {i} ({name}) does not map back to the test pair {key[1]} of "
                            f"task {task} that its other versions give: identifiers.json and the examples disagree")
        item.guesses.append((back[2], float(confidence[i])))
    return list(items.values())


def score(items: list[TestInput]) -> tuple[dict, dict]:
    """(record, submission): pass@K per task and overall, the vote of every test input, and the
    ARC submission dict {task: [{"attempt_1": grid, "attempt_2": grid}, ...]}."""
    versions = max((len(item.guesses) for item in items), default=1)
    ks = pass_ks(versions)
    per_task: dict[str, dict] = {}
    submission: dict[str, list] = {}
    for item in sorted(items, key=lambda t: (t.task, t.index)):
        ranked = vote(item.guesses)
        right = [grid_key(c.grid) == grid_key(item.truth) for c in ranked]
        task = per_task.setdefault(item.task, {f"pass@{k}": 0.0 for k in ks} | {"test_inputs": 0, "votes": []})
        for k in ks:
            task[f"pass@{k}"] += float(any(right[:k]))
        task["test_inputs"] += 1
        task["votes"].append({"candidates": len(ranked), "versions": len(item.guesses),
                              "rank_of_right_answer": right.index(True) + 1 if any(right) else None,
                              "best": [{"votes": c.votes, "confidence": round(c.confidence, 4), "right": r}
                                       for c, r in zip(ranked[:SUBMISSION_K], right)]})
        attempts = [c.grid for c in ranked[:SUBMISSION_K]]
        attempts += [attempts[0]] * (SUBMISSION_K - len(attempts))
        submission.setdefault(item.task, []).append({f"attempt_{i + 1}": g.tolist() for i, g in enumerate(attempts)})
    for task in per_task.values():
        for k in ks:
            task[f"pass@{k}"] /= task["test_inputs"]
    overall = {f"pass@{k}": float(np.mean([t[f"pass@{k}"] for t in per_task.values()])) if per_task else 0.0
               for k in ks}
    record = {**overall, "ks": ks, "tasks": len(per_task), "test_inputs": len(items), "versions_per_input": versions,
              "tie_break": TIE_BREAK, "per_task": per_task}
    return record, submission


def format_report(record: dict, max_tasks: int = 20) -> str:
    ks = record["ks"]
    lines = [f"ARC voting: {record['tasks']} tasks, {record['test_inputs']} test inputs, up to "
             f"{record['versions_per_input']} versions each, mapped back and voted ({record['tie_break']}):"]
    lines += [f"  pass@{k:<6} {record[f'pass@{k}']:.4f}" for k in ks]
    if record["per_task"] and len(record["per_task"]) <= max_tasks:
        lines.append("    task      " + " ".join(f"{'pass@' + str(k):>8}" for k in ks) + "  candidates  votes of the best")
        for name, task in record["per_task"].items():
            candidates = "/".join(str(v["candidates"]) for v in task["votes"])
            best = "/".join(str(v["best"][0]["votes"]) if v["best"] else "-" for v in task["votes"])
            lines.append(f"    {name:<9} " + " ".join(f"{task[f'pass@{k}']:>8.2f}" for k in ks)
                         + f"  {candidates:>10}  {best:>5}")
    return "\n".join(lines)


def read_names(split: PuzzleSplit) -> list[str]:
    """identifiers.json of the split's dataset folder: the version name of every puzzle identifier."""
    path = split.path.parent / "identifiers.json"
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: ARC voting needs the version name of every puzzle identifier, and this file "
                        f"cannot be read ({e}); build the dataset again") from None
    if not isinstance(names, list) or len(names) < split.meta.num_puzzle_identifiers:
        raise DataError(f"{path}: expected a list of {split.meta.num_puzzle_identifiers} names, one per identifier")
    return [str(n) for n in names]


def report(split: PuzzleSplit, pred: dict, out_dir: Path) -> tuple[dict, str, list[Path]]:
    """The ARC evaluation of a split's predictions (pred from metrics.predict_all over its first
    examples): ({"arc": record}, printable text, [the submission file written to out_dir])."""
    from checkpoint import write_text_atomic  # checkpoint imports torch; this module otherwise does not
    items = collect(split, read_names(split), pred["answers"], pred["confidence"])
    record, submission = score(items)
    path = Path(out_dir) / f"submission_{split.path.name}.json"
    write_text_atomic(path, json.dumps(submission) + "\n")
    record["submission"] = str(path)
    return {"arc": record}, format_report(record), [path]
