"""Crash consistency: a run killed with SIGKILL at any moment (a step, an evaluation, a checkpoint
write, a log append, the final test) and then resumed ends with the weights, checkpoints and log of
an uninterrupted run, bit for bit (times aside).

The kills are exact, not timed: a launcher (written into tmp_path, test-only) wraps the loop's
pieces so that the k-th call of a point sends SIGKILL to its own process, some of them half-way
through writing a file, as a crash during a write leaves it. It imports torch once and runs each
attempt in a forked process, so that about ninety runs take some fifteen seconds; each attempt is
train_trm.py's command line, `--config FILE [--resume]`, in a process of its own.

Kill points, "point:k" for the k-th call in a process: step (a training step, after its forward),
eval (an evaluation, or the final test), write (a file written atomically: config.json, a
checkpoint, a resume's log rewrite; killed half-way through its temporary file), replace and
replaced (before and after that file's rename), lock (taking run.lock), log (a log append, killed
half-way through its line: a torn line) and logged (right after a log append).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import loggers
import train_trm
from test_train import tiny_run_config

IMPL = Path(__file__).resolve().parents[1] / "impl"

LAUNCHER = r'''
"""python launcher.py IMPL PLAN.json RESULTS.json: run each case's attempts in forked processes,
each `train_trm.cli(argv)` with the kill point `kill` ("point:k": SIGKILL at the k-th call of point).
The plan's warm_up argv runs here first, unhooked: the forks then skip a first run's one-time costs
(lazy imports, first calls into torch), about 2 s each."""
import io, json, os, signal, sys, traceback
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import checkpoint, loggers, loop, train_trm

armed, counts = {"point": None, "k": 0}, {}


def reached(point):
    counts[point] = counts.get(point, 0) + 1
    return point == armed["point"] and counts[point] == armed["k"]


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def wrap(module, name, before=None, after=None):
    real = getattr(module, name)
    def hooked(*args, **kwargs):
        if before and reached(before):
            die()
        result = real(*args, **kwargs)
        if after and reached(after):
            die()
        return result
    setattr(module, name, hooked)


wrap(loop, "trm_loss", before="step")        # during a training step: after its forward, before the update
wrap(loop, "evaluate", before="eval")        # during an evaluation (during training or the final test)
wrap(os, "replace", before="replace", after="replaced")  # a complete temporary file, before or after its rename
wrap(os, "link", before="lock")              # while taking run.lock (its temporary file written)
real_write_atomic, real_log_write = checkpoint.write_atomic, loggers.RunLog.write


def write_atomic(path, write, binary=True):
    """"write": the k-th file written atomically (config, checkpoint, log rewrite) stops half-way."""
    if not reached("write"):
        return real_write_atomic(path, write, binary)
    def half(f):
        buffer = io.BytesIO() if binary else io.StringIO()
        write(buffer)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        die()
    return real_write_atomic(path, half, binary)


def log_write(self, record):
    """"log": the k-th log append stops half-way through its line; "logged": right after it."""
    if reached("log"):
        line = (json.dumps(record) + "\n").encode()
        with open(self.path, "ab") as f:
            f.write(line[: len(line) // 2])
        die()
    real_log_write(self, record)
    if reached("logged"):
        die()


checkpoint.write_atomic, loggers.RunLog.write = write_atomic, log_write


def attempt(argv, kill, out, err):
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            for fd, path in ((1, out), (2, err)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            counts.clear()
            if kill:
                point, k = kill.split(":")
                armed.update(point=point, k=int(k))
            train_trm.cli(argv)
            code = 0
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else 1 if e.code else 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "out": open(out).read(), "err": open(err).read()}


plan, results = json.load(open(sys.argv[2])), {}
train_trm.cli(plan["warm_up"])
for case in plan["cases"]:
    results[case["name"]] = [attempt(a["argv"], a["kill"], f"{sys.argv[3]}.out", f"{sys.argv[3]}.err")
                             for a in case["attempts"]]
json.dump(results, open(sys.argv[3], "w"))
'''

# The reference run, 4x4 Sudoku: a log line every 2 steps, last.pt every 2, an evaluation every 4
# (best.pt on each, as the exact accuracy ties at 0), and patience 2: it stops early at step 12.
# Its calls, numbered as the kill points count them:
#   lock 1 | write 1 config.json
#   steps 1-2:   log 1 train@2   | write 2 last@2
#   steps 3-4:   log 2 train@4   | eval 1 | log 3 eval@4   | write 3 best@4, write 4 last@4
#   steps 5-6:   log 4 train@6   | write 5 last@6
#   steps 7-8:   log 5 train@8   | eval 2 | log 6 eval@8   | write 6 best@8, write 7 last@8
#   steps 9-10:  log 7 train@10  | write 8 last@10
#   steps 11-12: log 8 train@12  | eval 3 | log 9 eval@12  | write 9 best@12, write 10 last@12
#   log 10 early_stop | eval 4 (final test) | log 11, 12 test last and best | log 13 timing
# (replace k and replaced k are the rename of write k.)
EXPECTED_LOG = [("train", 2), ("train", 4), ("eval", 4), ("train", 6), ("train", 8), ("eval", 8), ("train", 10),
                ("train", 12), ("eval", 12), ("early_stop", 12), ("test", 12), ("test", 12), ("timing", 12)]

# Killed before the first last.pt: --resume says there is none, and a fresh start (the same command
# without --resume) trains from the beginning, moving what the killed run left to previous-1/.
BEFORE_CHECKPOINT = ["lock:1", "write:1", "replaced:1", "step:1", "log:1", "write:2", "replace:2"]
# Killed later: --resume continues from last.pt. (Torn log lines: log:k.)
AFTER_CHECKPOINT = ["replaced:2", "step:3", "logged:2", "eval:1", "log:3", "write:3", "replaced:3", "write:4",
                    "replaced:4", "log:4", "step:7", "eval:2", "replaced:7", "log:7", "write:10", "replaced:10",
                    "log:10", "logged:10", "eval:4", "log:11", "logged:12", "log:13", "logged:13"]
# A resumed run killed again: during its rewrite of the log (write 1), after it, in a step.
CHAINS = [["log:5", "write:1"], ["replaced:7", "replaced:1", "step:2"]]

# A run to max_steps (no early stop), killed in its final test: eval 3 is the final test, log 7 and 8
# its records, log 9 the timing record.
PLAIN = dict(max_steps=8, patience=0)
PLAIN_LOG = [("train", 2), ("train", 4), ("eval", 4), ("train", 6), ("train", 8), ("eval", 8), ("test", 8),
             ("test", 8), ("timing", 8)]
PLAIN_KILLS = ["eval:3", "logged:7", "log:9", "logged:9"]

TIME_KEYS = {"time_s", "eval_s", "elapsed", "eval_time", "train_loop_s", "eval_during_s", "test_s", "eval_share"}
IGNORED = TIME_KEYS | {"runs_dir"}  # each run has its own folder


def crash_config(tmp_path, name: str, **training) -> dict:
    config = tiny_run_config(tmp_path, runs_dir=str(tmp_path / name), run_name="crash", batch_size=8, max_steps=24,
                             eval_every=4, ckpt_every=2, log_every=2, patience=2, eval_batch_size=16, dtype="float32")
    config["model"]["hidden_size"] = 16
    config["data"].update(n_train=64, n_val=8, n_test=16)
    config["training"].update(training)
    return config


def config_file(tmp_path, name: str, **training) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(crash_config(tmp_path, name, **training)))
    return str(path)


def launch(tmp_path, cases: list[dict]) -> dict:
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    warm_up = ["--config", config_file(tmp_path, "warm-up"), "--no-progress"]
    (tmp_path / "plan.json").write_text(json.dumps({"warm_up": warm_up, "cases": cases}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(tmp_path / "launcher.py"), str(IMPL), str(tmp_path / "plan.json"),
                           str(tmp_path / "results.json")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


def same(a, b, where: str) -> None:
    """a and b equal bit for bit, tensors included, apart from IGNORED keys."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) - IGNORED == set(b) - IGNORED, where
        for key in set(a) - IGNORED:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_like_reference(run_dir: Path, reference: Path) -> None:
    """Checkpoints (model, EMA, optimizer, data position, RNG states, counters) and the log."""
    for name in ("last.pt", "best.pt"):
        same(torch.load(reference / name, weights_only=True), torch.load(run_dir / name, weights_only=True),
             f"{run_dir.name}/{name}")
    same(records(reference), records(run_dir), f"{run_dir.name}/log.jsonl")


def case(tmp_path, name: str, kills: list[str], reference: str, **training) -> dict:
    """A case of the plan, in its own run folder: the run killed at kills[0], then --resume killed
    at each later kill, then --resume to the end. Killed before its first last.pt, --resume is
    refused and the run starts again (without --resume) before that; the last --resume then finds
    a finished run, and must change nothing."""
    config = config_file(tmp_path, f"case{len(list(tmp_path.glob('case*.json')))}", **training)
    start, resume = ["--config", config, "--no-progress"], ["--config", config, "--no-progress", "--resume"]
    fresh = [{"argv": resume, "kill": None}, {"argv": start, "kill": None}] if kills[0] in BEFORE_CHECKPOINT else []
    attempts = [{"argv": start, "kill": kills[0]}, *fresh, *({"argv": resume, "kill": kill} for kill in kills[1:]),
                {"argv": resume, "kill": None}]
    return {"name": name, "attempts": attempts, "kills": kills, "reference": reference,
            "run_dir": str(Path(config).with_suffix("") / "crash")}


def check_case(case: dict, attempts: list[dict], reference: Path) -> None:
    """Each kill happened; a refused --resume said so in one line; every other attempt ended well,
    without a traceback; a torn log line was reported; the end is the reference's."""
    run_dir, kills, said = Path(case["run_dir"]), case["kills"], "\n".join(a["out"] + a["err"] for a in attempts)
    assert [a["signal"] for a in attempts].count(9) == len(kills), f"a kill point was not reached:\n{said[-3000:]}"
    finished = [a for a in attempts if a["signal"] is None]
    if kills[0] in BEFORE_CHECKPOINT:
        refused = finished.pop(0)
        assert refused["code"] == 1 and refused["err"].splitlines() == [
            f"error: {run_dir}/last.pt: no checkpoint there (train first: python impl/train_trm.py "
            f"(writes runs/<run_name>/best.pt))"], refused["err"]
    assert [a["code"] for a in finished] == [0] * len(finished) and "Traceback" not in said, said[-3000:]
    if kills[0].startswith("log:") and kills[0] not in BEFORE_CHECKPOINT:
        assert f"resume: dropped a torn last line of {run_dir}/log.jsonl (an interrupted write)" in said
    assert_like_reference(run_dir, reference)


def test_runs_killed_at_any_moment_resume_to_the_uninterrupted_run(tmp_path):
    references = {"reference": {}, "plain": PLAIN}
    plan = [{"name": name, "attempts": [{"argv": ["--config", config_file(tmp_path, name, **training), "--no-progress"],
                                         "kill": None}]} for name, training in references.items()]
    plan += [case(tmp_path, kill, [kill], "reference") for kill in BEFORE_CHECKPOINT + AFTER_CHECKPOINT]
    plan += [case(tmp_path, ",".join(kills), kills, "reference") for kills in CHAINS]
    plan += [case(tmp_path, f"plain {kill}", [kill], "plain", **PLAIN) for kill in PLAIN_KILLS]
    results = launch(tmp_path, plan)

    for name, expected in (("reference", EXPECTED_LOG), ("plain", PLAIN_LOG)):
        assert results[name][0]["code"] == 0, results[name][0]["err"]
        assert [(r["kind"], r["step"]) for r in records(tmp_path / name / "crash")] == expected  # the numbering holds
    failed = []
    for c in plan[2:]:
        try:
            check_case(c, results[c["name"]], tmp_path / c["reference"] / "crash")
        except AssertionError as e:
            failed.append(f"killed at {c['name']}: {e}")
    assert not failed, "\n".join(failed)


def test_a_damaged_log_line_before_the_last_stops_the_resume_with_one_line_and_changes_nothing(tmp_path):
    config = config_file(tmp_path, "damaged", max_steps=8, patience=0)
    train_trm.cli(["--config", config, "--no-progress"])
    run_dir = tmp_path / "damaged" / "crash"
    lines = (run_dir / "log.jsonl").read_bytes().split(b"\n")
    lines[2] = lines[2][:40] + b"\x00\x00" + lines[2][40:]
    (run_dir / "log.jsonl").write_bytes(b"\n".join(lines))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(SystemExit) as e:
        train_trm.cli(["--config", config, "--no-progress", "--resume"])
    assert e.value.code == (
        f"error: {run_dir}/log.jsonl: line 3 is not JSON: Expecting value at column 41, and 6 line(s) follow "
        f"it: the file is damaged (an interrupted write tears only the last line); nothing was changed. Delete or "
        f"repair line 3, or move {run_dir}/log.jsonl away to start a new log, then resume again")
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


@pytest.mark.parametrize("text, kept, torn", [
    (b"", 0, False),                                    # an empty log
    (b'{"kind": "train", "st', 0, True),                # only a torn line
    (b'{"kind": "train", "step": 2}\n\x00\x00\x00', 1, True),   # a tail of zeros (a power cut)
    (b'{"kind": "train", "step": 2}\n{"kind": "eval", "step": 2}', 2, False),  # whole, without the last newline
])
def test_the_log_a_resume_reads(tmp_path, text, kept, torn):
    path = tmp_path / "log.jsonl"
    path.write_bytes(text)
    records, was_torn = loggers.read_log(path)
    assert len(records) == kept and was_torn == torn


def test_a_resume_keeps_the_records_written_before_its_checkpoint():
    """Those of later steps go, and so do the end-of-run records after the checkpoint's own."""
    log = [("train", 2), ("eval", 4), ("train", 6), ("eval", 8), ("early_stop", 8), ("test", 8), ("test", 4),
           ("timing", 8)]
    records = [("", {"kind": kind, "step": step}) for kind, step in log]
    assert [r["step"] for _, r in loggers.records_before(records, 6)] == [2, 4, 6]
    assert [r["kind"] for _, r in loggers.records_before(records, 8)] == ["train", "eval", "train", "eval"]


def test_the_other_files_a_resume_meets_empty(tmp_path):
    """A power cut can leave any file empty. config.json: a resume does not read it (last.pt holds
    the config) and goes on; run.lock: an unreadable lock may still be someone's, so the resume
    stops in one line that says how to go on."""
    config = config_file(tmp_path, "empty", max_steps=8, patience=0)
    train_trm.cli(["--config", config, "--no-progress"])
    run_dir = tmp_path / "empty" / "crash"
    (run_dir / "config.json").write_bytes(b"")
    assert train_trm.cli(["--config", config, "--no-progress", "--resume"])["step"] == 8
    (run_dir / "run.lock").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        train_trm.cli(["--config", config, "--no-progress", "--resume"])
    assert e.value.code == (f"error: {run_dir} is in use by another training (an unreadable lock file); wait for it "
                            f"to end or choose another training.run_name. If no training uses it, delete "
                            f"{run_dir}/run.lock")
