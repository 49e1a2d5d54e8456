"""Puzzle metrics, batched evaluation and the recursion-depth benchmark, for any puzzle type.

What a puzzle type adds is optional and passed in: a validity check (answers that obey the rules,
whether or not they equal the stored label) and breakdowns (e.g. Sudoku by rating and by givens).
Positions whose label is IGNORE_LABEL (no target: padding) count nowhere. The training loop's
periodic evaluation and impl/evaluate.py use the same functions, so their numbers mean the same.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from puzzle_dataset import IGNORE_LABEL

ValidFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (inputs, answers) -> (N,) bool
MAX_GROUPS = 10  # a breakdown with more distinct values than this is binned into ranges


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _groups(values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, mask) per distinct value, or per range of values when there are many."""
    distinct = np.unique(values)
    if len(distinct) <= MAX_GROUPS:
        return [(str(v), values == v) for v in distinct]
    edges = np.array_split(distinct, MAX_GROUPS)                       # ranges of distinct values
    return [(f"{chunk[0]}-{chunk[-1]}", (values >= chunk[0]) & (values <= chunk[-1])) for chunk in edges]


def puzzle_metrics(inputs, labels, answers, confidence=None, steps=None, valid_fn: ValidFn | None = None,
                   breakdowns: dict[str, np.ndarray] | None = None) -> dict:
    """Metrics of answers (N, S) against labels (IGNORE_LABEL: no target) for inputs, as numbers.

    token_acc  positions right, per puzzle over its positions with a target, averaged over puzzles
               (as the official code counts; Sudoku: givens included)
    blank_acc  positions right among those whose label differs from the input (the cells the
               model had to fill: Sudoku's blanks, a maze's path)
    exact_acc  puzzles entirely right
    validity   answers valid_fn accepts (only with valid_fn)
    halt_acc   how often the halting head's "correct" (confidence > 0.5) agrees with exact
    avg_steps  supervision steps used
    breakdowns {name: values (N,)} adds {name: {group: {n, exact_acc, blank_acc[, validity]}}}.
    """
    inputs, labels, answers = _numpy(inputs), _numpy(labels).astype(np.int64), _numpy(answers)
    n = len(labels)
    target = labels != IGNORE_LABEL
    hit = (answers == labels) & target
    fill = target & (labels != inputs)
    exact = (hit == target).all(axis=1)
    per_puzzle = hit.sum(axis=1) / np.maximum(target.sum(axis=1), 1)
    out = {
        "token_acc": float(per_puzzle.mean()) if n else 0.0,
        "blank_acc": float(hit[fill].mean()) if fill.any() else 0.0,
        "exact_acc": float(exact.mean()) if n else 0.0,
    }
    valid = valid_fn(inputs, answers) if valid_fn is not None and n else None
    if valid is not None:
        out["validity"] = float(valid.mean())
    if confidence is not None:
        out["halt_acc"] = float(((_numpy(confidence) > 0.5) == exact).mean()) if n else 0.0
    if steps is not None:
        out["avg_steps"] = float(_numpy(steps).mean()) if n else 0.0
    out["n"] = int(n)
    for name, values in (breakdowns or {}).items():
        out[name] = {}
        for label, mask in _groups(_numpy(values)):
            f = fill[mask]
            group = {"n": int(mask.sum()), "exact_acc": float(exact[mask].mean()),
                     "blank_acc": float(hit[mask][f].mean()) if f.any() else 0.0}
            if valid is not None:
                group["validity"] = float(valid[mask].mean())
            out[name][label] = group
    return out


@torch.no_grad()
def predict_all(model, inputs: np.ndarray, N_sup: int, batch_size: int, device: torch.device, dtype: torch.dtype,
                halt: bool = False, keep_steps: bool = False, progress: bool = False, desc: str = "eval",
                stop_unchanged: int = 0, puzzle_ids: np.ndarray | None = None) -> dict:
    """model.predict over inputs (and their puzzle identifiers, None: all 0) in batches: answers
    (N, S), confidence (N,), steps (N,) and, with keep_steps, per_step (K, N, S) and
    per_step_confidence (K, N). Restores train/eval mode."""
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {"answers": [], "confidence": [], "steps": [], "per_step": [], "per_step_confidence": []}
    try:
        for start in tqdm(range(0, len(inputs), batch_size), desc=desc, leave=False, disable=not progress):
            x = torch.from_numpy(np.array(inputs[start:start + batch_size], dtype=np.int64)).to(device)
            ids = None if puzzle_ids is None else \
                torch.from_numpy(np.array(puzzle_ids[start:start + batch_size], dtype=np.int64)).to(device)
            pred = model.predict(x, N_sup=N_sup, halt=halt, keep_steps=keep_steps, dtype=dtype,
                                 stop_unchanged=stop_unchanged, puzzle_ids=ids)
            parts["answers"].append(pred.answers.cpu().numpy())
            parts["confidence"].append(pred.confidence.float().cpu().numpy())
            parts["steps"].append(pred.steps.cpu().numpy())
            if keep_steps:
                parts["per_step"].append(pred.per_step.cpu().numpy().astype(np.int16))
                parts["per_step_confidence"].append(pred.per_step_confidence.float().cpu().numpy())
    finally:
        model.train(was_training)
    S = inputs.shape[1]
    out = {"answers": np.concatenate(parts["answers"]) if parts["answers"] else np.zeros((0, S), np.int64),
           "confidence": np.concatenate(parts["confidence"] or [np.zeros(0)]),
           "steps": np.concatenate(parts["steps"] or [np.zeros(0, np.int64)])}
    if keep_steps:
        out["per_step"] = np.concatenate(parts["per_step"], axis=1)
        out["per_step_confidence"] = np.concatenate(parts["per_step_confidence"], axis=1)
    return out


def evaluate(model, inputs: np.ndarray, labels: np.ndarray, N_sup: int, batch_size: int, device: torch.device,
             dtype: torch.dtype, progress: bool = False, halt: bool = False, valid_fn: ValidFn | None = None,
             breakdowns: dict[str, np.ndarray] | None = None, stop_unchanged: int = 0,
             puzzle_ids: np.ndarray | None = None) -> dict:
    """puzzle_metrics after N_sup supervision steps. halt=False runs every puzzle N_sup steps (the
    official evaluation); halt=True stops each at its first step whose halting logit is > 0;
    stop_unchanged=k stops each once its answer has not changed for k steps (TRM.predict)."""
    pred = predict_all(model, inputs, N_sup, batch_size, device, dtype, halt=halt, progress=progress,
                       stop_unchanged=stop_unchanged, puzzle_ids=puzzle_ids)
    return puzzle_metrics(inputs, labels, pred["answers"], pred["confidence"], pred["steps"], valid_fn, breakdowns)


def depth_benchmark(model, inputs: np.ndarray, labels: np.ndarray, K: int, batch_size: int, device: torch.device,
                    dtype: torch.dtype, progress: bool = False, valid_fn: ValidFn | None = None,
                    puzzle_ids: np.ndarray | None = None) -> list[dict]:
    """Accuracy after each supervision step k = 1..K (K may exceed the trained N_sup).

    Per k: exact/token/blank accuracy, validity and halting accuracy of the answer after exactly k
    steps; and with halting, each puzzle stopped at its own halting step h (first step with
    confidence > 0.5) capped at k: halt_exact_acc, halt_token_acc, halt_validity, halted_frac
    (h <= k) and halt_avg_steps (min(h, k)).
    """
    pred = predict_all(model, inputs, K, batch_size, device, dtype, keep_steps=True, progress=progress, desc="depth",
                       puzzle_ids=puzzle_ids)
    per_step, per_conf = pred["per_step"], pred["per_step_confidence"]
    n = per_step.shape[1]
    halts = per_conf > 0.5                                               # (K, N)
    halt_step = np.where(halts.any(axis=0), halts.argmax(axis=0) + 1, K + 1)  # first halting step, K+1: never
    rows = []
    for k in range(1, K + 1):
        plain = puzzle_metrics(inputs, labels, per_step[k - 1], per_conf[k - 1], valid_fn=valid_fn)
        stop = np.minimum(halt_step, k)                                   # (N,) step each puzzle answers at
        halted = puzzle_metrics(inputs, labels, per_step[stop - 1, np.arange(n)], valid_fn=valid_fn)
        row = {"step": k, "exact_acc": plain["exact_acc"], "token_acc": plain["token_acc"],
               "blank_acc": plain["blank_acc"], "validity": plain.get("validity"), "halt_acc": plain["halt_acc"],
               "halt_exact_acc": halted["exact_acc"], "halt_token_acc": halted["token_acc"],
               "halt_validity": halted.get("validity"), "halted_frac": float((halt_step <= k).mean()),
               "halt_avg_steps": float(stop.mean()), "n": n}
        rows.append({key: value for key, value in row.items() if value is not None})
    return rows
