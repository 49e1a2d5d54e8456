"""Test-time ensembles: K members per puzzle, run as one batch, and the rules that pick one answer.

A member is one way of answering a puzzle with the same trained model:
    symmetry  the puzzle under one of its symmetries (the puzzle module's `symmetries` hook: Sudoku,
              digit relabelling with band/stack/row/column/transpose moves; maze, the 8 symmetries
              of the square), answered, and the answer mapped back by the transform's exact inverse.
              Member 0 is the puzzle itself.
    noise     the puzzle itself, with Gaussian noise of scale sigma added to the latent z before every
              supervision step (each deep recursion: TRM.predict's noise), as Probabilistic TRM
              (arXiv 2605.19943) does: many noisy trajectories, one chosen. Each member has its own
              noise stream; sigma = 0 is the deterministic answer, bit for bit.
    both      member k is symmetry k with its own noise.
The K members of a batch of puzzles go through the model as one batch of K x puzzles rows
(member-major: row k * b + i is member k of puzzle i), not one member at a time.

Selection rules, each applied to the same members:
    vote      the answer most members give (after mapping back); a tie goes to the answer whose member
              has the highest halting logit, then to the lowest member index
    halt      the member whose halting logit at its final step is highest
    first     the member whose halting head said "correct" (logit > 0) at the earliest step, with its
              answer at that step; ties and members that never halted: the highest logit
    valid     "rule-valid first": members whose answer breaks the puzzle's rules (the valid_fn hook,
              which reads the puzzle and the answer, never the label) are dropped, then vote; a puzzle
              with no valid member votes over all of them
Compute is counted in supervision steps of one example (member-steps): with halting on, members
freeze at their halting step and a batch stops when every member has halted.

Adaptive compute (first_round=k): every puzzle gets members 0..k-1 first; a puzzle whose k
members all give the same answer (and, where the puzzle type has a rule check, a valid one) is
settled and spends nothing more; the others get members k..K-1 too. A settled puzzle's missing
members repeat its first-round members (so every rule sees K members and picks the settled
answer); the compute counted is what ran. Without noise the unsettled puzzles' members are those
of the full ensemble; with noise, the second round draws its own streams.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

KINDS = ("symmetry", "noise", "both")   # what makes the members differ
RULES = ("vote", "halt", "first", "valid")  # how one answer is chosen
VOTE_CHUNK = 2 ** 25                      # at most this many booleans in one pairwise comparison


@dataclass
class Members:
    """K members' answers to N puzzles, mapped back to the puzzles' own frame."""
    answers: np.ndarray       # (K, N, S) answer at the final step
    halt_answers: np.ndarray  # (K, N, S) answer at the first halting step (never halted: the final one)
    logit: np.ndarray         # (K, N) halting logit at the final step
    first_halt: np.ndarray    # (K, N) first step with halting logit > 0 (0: never)
    steps: np.ndarray         # (K, N) supervision steps used
    member_steps: int         # supervision steps run, summed over rows (members x puzzles)
    wall_s: float             # seconds spent in the model


def check_members(members: int, kind: str, sigma: float, select: str, where: str = "", first_round: int = 0) -> None:
    """Range checks, naming the option or key (where: a prefix such as 'training.test_time.')."""
    if members < 1:
        raise ValueError(f"{where}members: {members} must be >= 1")
    if first_round < 0:
        raise ValueError(f"{where}first_round: {first_round} must be >= 0 (0: off)")
    if kind not in KINDS:
        raise ValueError(f"{where}member_kind: {kind!r} is not one of {', '.join(KINDS)}")
    if not sigma >= 0:
        raise ValueError(f"{where}sigma: {sigma} must be >= 0")
    if select not in RULES:
        raise ValueError(f"{where}select: {select!r} is not one of {', '.join(RULES)}")


def transforms_for(hooks, meta, kind: str, K: int, seed: int) -> list[tuple] | None:
    """K (forward, inverse) pairs from the puzzle module, or None for noise members (no transform)."""
    if kind == "noise":
        return None
    pairs = hooks.symmetries(meta, K, np.random.default_rng(seed)) if hooks is not None else None
    if pairs is None:
        name = hooks.name if hooks is not None else "this dataset (no puzzle type)"
        raise ValueError(f"member kind {kind!r}: the puzzle type {name} offers no symmetries; use member kind 'noise'")
    if len(pairs) != K:
        raise ValueError(f"the puzzle module's symmetries gave {len(pairs)} transforms for {K} members")
    return pairs


def noise_generators(K: int, seed: int, start: int, device: torch.device, first: int = 0) -> list[torch.Generator]:
    """One generator per member (members first..first+K-1) for the batch of puzzles starting at
    index start, seeded from (seed, member, start), so a member run alone with its generator draws
    the same noise."""
    gens = []
    for k in range(first, first + K):
        g = torch.Generator(device=device)
        g.manual_seed(int(np.random.SeedSequence([seed, k, start]).generate_state(1, np.uint64)[0] >> 1))
        gens.append(g)
    return gens


class LatentNoise:
    """A predict() perturb that adds sigma * N(0, 1) to the latent z before every supervision step,
    as Probabilistic TRM (arXiv 2605.19943) does to explore several trajectories. With generators
    [g_1..g_M] the batch is M equal blocks of rows, block m drawing from g_m, so a block run alone
    with its generator gets the same noise; without, the global RNG draws."""

    def __init__(self, sigma: float, generators: list[torch.Generator] | None = None) -> None:
        self.sigma, self.generators = sigma, generators

    def __call__(self, carry):
        z = carry.z
        if not self.generators:
            noise = torch.randn(z.shape, device=z.device)
        else:
            L, B, D = z.shape
            if B % len(self.generators):
                raise ValueError(f"noise generators: {len(self.generators)} generators do not split a batch of {B} rows evenly")
            parts = [torch.randn((L, B // len(self.generators), D), generator=g, device=z.device) for g in self.generators]
            noise = torch.cat(parts, dim=1)
        return type(carry)(carry.y, z + (self.sigma * noise).to(z.dtype))


def run_members(model, inputs: np.ndarray, K: int, kind: str, sigma: float, N_sup: int, batch_size: int,
                device: torch.device, dtype: torch.dtype, transforms: list[tuple] | None = None, halt: bool = False,
                puzzle_ids: np.ndarray | None = None, seed: int = 0, progress: bool = False,
                first_member: int = 0) -> Members:
    """K members for each puzzle of inputs (N, S), batch_size rows (members x puzzles) per forward
    pass. transforms: K (forward, inverse) pairs (kind symmetry or both); sigma: the latent noise
    (kind noise or both; ignored for symmetry); first_member: the index of the first member (its
    noise stream). Restores train/eval mode."""
    return _run(model, inputs, K, kind, sigma, [N_sup], batch_size, device, dtype, transforms, halt, puzzle_ids,
                seed, progress, first_member, snapshots=False)[N_sup]


def run_members_at(model, inputs: np.ndarray, K: int, kind: str, sigma: float, steps: list[int], batch_size: int,
                   device: torch.device, dtype: torch.dtype, transforms: list[tuple] | None = None,
                   puzzle_ids: np.ndarray | None = None, seed: int = 0, progress: bool = False) -> dict[int, Members]:
    """{s: the members after s supervision steps} for every s in steps, from one run of max(steps)
    steps (no halting): each equals run_members with N_sup=s, since a step's answer does not depend
    on the steps after it. Wall time is shared out by steps (every step costs the same)."""
    return _run(model, inputs, K, kind, sigma, sorted(set(steps)), batch_size, device, dtype, transforms, False,
                puzzle_ids, seed, progress, 0, snapshots=True)


@torch.no_grad()
def _run(model, inputs: np.ndarray, K: int, kind: str, sigma: float, at: list[int], batch_size: int,
         device: torch.device, dtype: torch.dtype, transforms: list[tuple] | None, halt: bool,
         puzzle_ids: np.ndarray | None, seed: int, progress: bool, first_member: int,
         snapshots: bool) -> dict[int, Members]:
    """The members after each number of steps in at (snapshots: one run of max(at) steps that keeps
    every step; else at == [N_sup], one plain run)."""
    if kind in ("symmetry", "both") and transforms is None:
        raise ValueError(f"member kind {kind!r} needs the puzzle's transforms")
    noise = sigma if kind in ("noise", "both") else 0.0
    inputs = np.asarray(inputs)
    N, S = inputs.shape
    per_batch = max(1, batch_size // K)                                 # puzzles per forward pass
    fields = ("answers", "halt_answers", "logit", "first_halt", "steps")
    out = {s: {key: [] for key in fields} for s in at}
    member_steps, wall = {s: 0 for s in at}, 0.0
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, N, per_batch), desc="members", leave=False, disable=not progress):
            block = inputs[start:start + per_batch]
            b = len(block)
            views = [block if transforms is None else transforms[k][0](block) for k in range(K)]
            x = torch.from_numpy(np.concatenate(views).astype(np.int64)).to(device)       # (K*b, S)
            ids = None
            if puzzle_ids is not None:
                ids = torch.from_numpy(np.tile(np.asarray(puzzle_ids[start:start + b], np.int64), K)).to(device)
            gens = noise_generators(K, seed, start, device, first_member) if noise > 0 else None
            t0 = time.time()
            pred = model.predict(x, N_sup=max(at), halt=halt, dtype=dtype, puzzle_ids=ids,
                                 perturb=LatentNoise(noise, gens) if noise > 0 else None, keep_steps=snapshots)
            if snapshots:
                per_step = pred.per_step.cpu().numpy()                                # (max(at), K*b, S)
                per_logit = pred.per_step_logit.cpu().numpy()                         # (max(at), K*b)
            else:
                final = {"answers": pred.answers.cpu().numpy(), "halt_answers": pred.halt_answers.cpu().numpy(),
                         "logit": pred.logit.float().cpu().numpy(), "first_halt": pred.first_halt.cpu().numpy(),
                         "steps": pred.steps.cpu().numpy()}
            wall += time.time() - t0
            for s in at:
                got = _snapshot(per_step, per_logit, s) if snapshots else final
                got = {key: value.reshape((K, b) + value.shape[1:]) for key, value in got.items()}
                member_steps[s] += K * b * int(got["steps"].max())            # the batch runs until its last member stops
                if transforms is not None:
                    for key in ("answers", "halt_answers"):
                        got[key] = np.stack([transforms[k][1](got[key][k]) for k in range(K)])
                for key in fields:
                    out[s][key].append(got[key])
    finally:
        model.train(was_training)
    if N == 0:
        empty = np.zeros((K, 0, S), inputs.dtype)
        none = np.zeros((K, 0), np.int64)
        return {s: Members(empty, empty, np.zeros((K, 0)), none, none, 0, 0.0) for s in at}
    return {s: Members(*(np.concatenate(out[s][key], axis=1) for key in fields), member_steps=member_steps[s],
                       wall_s=wall * s / max(at)) for s in at}


def _snapshot(per_step: np.ndarray, per_logit: np.ndarray, s: int) -> dict:
    """What predict without halting returns after s steps, read off the answers (steps, B, S) and
    halting logits (steps, B) of every step."""
    halted = per_logit[:s] > 0                                                    # (s, B)
    first = np.where(halted.any(axis=0), halted.argmax(axis=0) + 1, 0)          # first step with logit > 0
    rows = np.arange(per_step.shape[1])
    answers = per_step[s - 1]
    halt_answers = np.where((first > 0)[:, None], per_step[np.maximum(first - 1, 0), rows], answers)
    return {"answers": answers, "halt_answers": halt_answers, "logit": per_logit[s - 1],
            "first_halt": first, "steps": np.full(len(rows), s, np.int64)}


def run_rounds(model, inputs: np.ndarray, K: int, kind: str, sigma: float, N_sup: int, batch_size: int,
               device: torch.device, dtype: torch.dtype, transforms: list[tuple] | None = None, halt: bool = False,
               puzzle_ids: np.ndarray | None = None, seed: int = 0, progress: bool = False, first_round: int = 0,
               valid_fn=None) -> tuple[Members, np.ndarray]:
    """run_members, with adaptive compute when 0 < first_round < K (see the module's docstring).
    Returns the members and (N,) bool: the puzzles settled by the first round (all False without one)."""
    inputs = np.asarray(inputs)
    args = dict(N_sup=N_sup, batch_size=batch_size, device=device, dtype=dtype, halt=halt, seed=seed,
                progress=progress)
    if not 0 < first_round < K:
        return (run_members(model, inputs, K, kind, sigma, transforms=transforms, puzzle_ids=puzzle_ids, **args),
                np.zeros(len(inputs), bool))
    k1 = first_round
    head = run_members(model, inputs, k1, kind, sigma, transforms=None if transforms is None else transforms[:k1],
                       puzzle_ids=puzzle_ids, **args)
    settled = (head.answers == head.answers[:1]).all(axis=(0, 2))
    if valid_fn is not None and len(inputs):
        settled &= np.asarray(valid_fn(inputs, head.answers[0]), bool)
    rest = np.flatnonzero(~settled)
    tail = run_members(model, inputs[rest], K - k1, kind, sigma,
                       transforms=None if transforms is None else transforms[k1:],
                       puzzle_ids=None if puzzle_ids is None else np.asarray(puzzle_ids)[rest], first_member=k1, **args)

    def whole(first: np.ndarray, second: np.ndarray) -> np.ndarray:
        out = np.concatenate([first, first[np.arange(K - k1) % k1]])    # settled: the first round again
        out[k1:, rest] = second
        return out

    members = Members(*(whole(getattr(head, f), getattr(tail, f)) for f in
                        ("answers", "halt_answers", "logit", "first_halt", "steps")),
                      member_steps=head.member_steps + tail.member_steps, wall_s=head.wall_s + tail.wall_s)
    return members, settled


def _best(score: np.ndarray, logit: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(N,) member with the highest score, then the highest logit, then the lowest index, among allowed (K, N)."""
    K = score.shape[0]
    order = np.lexsort((np.arange(K)[:, None].repeat(score.shape[1], 1) * -1, logit, score, allowed), axis=0)
    return order[-1]


def vote(answers: np.ndarray, logit: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """(N,) index of the chosen member: the answer given by most allowed members (K, N) of answers
    (K, N, S); ties to the highest halting logit, then the lowest member index. A puzzle without an
    allowed member votes over all of them."""
    K, N, S = answers.shape
    allowed = np.ones((K, N), bool) if allowed is None else np.asarray(allowed, bool)
    allowed = allowed | ~allowed.any(axis=0, keepdims=True)               # none allowed: all are
    counts = np.zeros((K, N), np.int64)
    chunk = max(1, VOTE_CHUNK // max(1, K * K * S))
    for i in range(0, N, chunk):
        a = answers[:, i:i + chunk]                                       # (K, n, S)
        same = (a[:, None] == a[None, :]).all(axis=-1)                    # (K, K, n): member j gives member k's answer
        counts[:, i:i + chunk] = (same & allowed[None, :, i:i + chunk]).sum(axis=1)
    return _best(counts, logit, allowed)


def select(members: Members, rule: str, valid: np.ndarray | None = None) -> dict:
    """One answer per puzzle by a rule (RULES): {answers (N, S), member (N,), logit (N,), steps (N,),
    agreement (N,): the share of members whose answer equals the chosen one}. valid (K, N): the rule
    check of every member's answer, needed by 'valid'."""
    K, N, _ = members.answers.shape
    everyone = np.ones((K, N), bool)
    if rule == "vote":
        chosen = vote(members.answers, members.logit)
    elif rule == "valid":
        if valid is None:
            raise ValueError("select 'valid' needs a rule check (the puzzle type has no valid_fn)")
        chosen = vote(members.answers, members.logit, valid)
    elif rule == "halt":
        chosen = _best(np.zeros((K, N)), members.logit, everyone)
    elif rule == "first":
        when = np.where(members.first_halt > 0, members.first_halt, np.iinfo(np.int64).max)
        chosen = _best(-when.astype(np.float64), members.logit, everyone)
    else:
        raise ValueError(f"select: {rule!r} is not one of {', '.join(RULES)}")
    cols = np.arange(N)
    source = members.halt_answers if rule == "first" else members.answers
    answers = source[chosen, cols]
    agreement = (members.answers == answers[None]).all(axis=-1).mean(axis=0) if N else np.zeros(0)
    return {"answers": answers, "member": chosen, "logit": members.logit[chosen, cols],
            "steps": members.steps[chosen, cols], "agreement": agreement}


def member_validity(members: Members, inputs: np.ndarray, valid_fn) -> np.ndarray | None:
    """(K, N) bool: each member's (mapped-back) answer obeys the rules of its puzzle (None: no check)."""
    if valid_fn is None:
        return None
    K, N, S = members.answers.shape
    if N == 0:
        return np.zeros((K, 0), bool)
    return np.asarray(valid_fn(np.tile(np.asarray(inputs), (K, 1)), members.answers.reshape(K * N, S))).reshape(K, N)


def rules_for(valid_fn) -> tuple[str, ...]:
    """The rules that apply: 'valid' only with a rule check."""
    return RULES if valid_fn is not None else tuple(r for r in RULES if r != "valid")


def predict_ensemble(model, inputs: np.ndarray, K: int, kind: str, sigma: float, N_sup: int, batch_size: int,
                     device: torch.device, dtype: torch.dtype, hooks=None, meta=None, valid_fn=None,
                     halt: bool = False, puzzle_ids: np.ndarray | None = None, seed: int = 0,
                     progress: bool = False, first_round: int = 0) -> dict:
    """Members, then every applicable rule's choice: {"members": Members, "valid": (K, N) | None,
    "rules": {rule: select(...)}, "member_steps", "wall_s", "settled": (N,) bool (first_round)}."""
    transforms = transforms_for(hooks, meta, kind, K, seed)
    members, settled = run_rounds(model, inputs, K, kind, sigma, N_sup, batch_size, device, dtype, transforms,
                                  halt=halt, puzzle_ids=puzzle_ids, seed=seed, progress=progress,
                                  first_round=first_round, valid_fn=valid_fn)
    return choose(members, inputs, valid_fn, settled)


def choose(members: Members, inputs: np.ndarray, valid_fn=None, settled: np.ndarray | None = None) -> dict:
    """Every applicable rule's choice among members (predict_ensemble's dict)."""
    valid = member_validity(members, inputs, valid_fn)
    chosen = {rule: select(members, rule, valid) for rule in rules_for(valid_fn)}
    settled = np.zeros(len(inputs), bool) if settled is None else settled
    return {"members": members, "valid": valid, "rules": chosen, "member_steps": members.member_steps,
            "wall_s": members.wall_s, "settled": settled}


def rule_scores(out: dict, inputs: np.ndarray, labels: np.ndarray, valid_fn=None) -> dict:
    """{rule: exact/token accuracy, validity and agreement} of choose()'s choices."""
    from metrics import puzzle_metrics

    rules = {}
    for rule, chosen in out["rules"].items():
        m = puzzle_metrics(inputs, labels, chosen["answers"], valid_fn=valid_fn)
        rules[rule] = {key: m[key] for key in ("exact_acc", "token_acc", "validity") if key in m}
        rules[rule]["agreement"] = float(chosen["agreement"].mean()) if len(inputs) else 0.0
    return rules


def evaluate_ensemble(model, inputs: np.ndarray, labels: np.ndarray, K: int, kind: str, sigma: float, select_rule: str,
                      N_sup: int, batch_size: int, device: torch.device, dtype: torch.dtype, hooks=None, meta=None,
                      valid_fn=None, halt: bool = False, puzzle_ids: np.ndarray | None = None, seed: int = 0,
                      breakdowns: dict | None = None, progress: bool = False, first_round: int = 0) -> dict:
    """puzzle_metrics of the answers select_rule picks, plus "test_time": the settings, every applicable
    rule's exact/token accuracy (and validity), member-steps per puzzle and seconds in the model."""
    from metrics import puzzle_metrics

    check_members(K, kind, sigma, select_rule, first_round=first_round)
    if select_rule == "valid" and valid_fn is None:
        raise ValueError("select 'valid' needs a rule check; this puzzle type has none (use vote, halt or first)")
    out = predict_ensemble(model, inputs, K, kind, sigma, N_sup, batch_size, device, dtype, hooks, meta, valid_fn,
                           halt=halt, puzzle_ids=puzzle_ids, seed=seed, progress=progress, first_round=first_round)
    chosen = out["rules"][select_rule]
    confidence = 1.0 / (1.0 + np.exp(-chosen["logit"].astype(np.float64)))
    metrics = puzzle_metrics(inputs, labels, chosen["answers"], confidence, chosen["steps"], valid_fn, breakdowns)
    metrics["test_time"] = test_time_record(out, inputs, labels, valid_fn, K, kind, sigma, select_rule, seed, halt,
                                            N_sup, first_round)
    return metrics


def test_time_record(out: dict, inputs: np.ndarray, labels: np.ndarray, valid_fn, K: int, kind: str, sigma: float,
                     select_rule: str, seed: int, halt: bool, N_sup: int, first_round: int = 0) -> dict:
    """The "test_time" record of an ensemble: its settings, every rule's scores, the compute it used."""
    n = max(len(inputs), 1)
    return {"members": K, "member_kind": kind, "sigma": sigma, "select": select_rule, "seed": seed,
            "halt": halt, "N_sup": N_sup, "rules": rule_scores(out, inputs, labels, valid_fn),
            "first_round": first_round, "settled": float(out["settled"].mean()) if len(inputs) else 0.0,
            "member_steps_per_puzzle": out["member_steps"] / n, "wall_s": out["wall_s"]}


def format_rules(test_time: dict) -> str:
    """The rules' accuracies as a small text table."""
    lines = [f"ensemble: {test_time['members']} {test_time['member_kind']} members"
             + (f", sigma {test_time['sigma']:g}" if test_time["member_kind"] != "symmetry" else "")
             + f", {test_time['member_steps_per_puzzle']:.1f} member-steps per puzzle"
             + (f" ({100 * test_time['settled']:.0f}% settled by the first {test_time['first_round']})"
                if test_time.get("first_round") else "")
             + f"; chosen by {test_time['select']}",
             f"  {'rule':<7} {'exact':>7} {'token':>7} {'valid':>7} {'agree':>7}"]
    for rule, m in test_time["rules"].items():
        valid = f"{m['validity']:.4f}" if "validity" in m else "-"
        lines.append(f"  {rule:<7} {m['exact_acc']:>7.4f} {m['token_acc']:>7.4f} {valid:>7} {m['agreement']:>7.4f}")
    return "\n".join(lines)
