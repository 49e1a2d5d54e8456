"""Test-time compute: symmetries and their inverses, noisy members, batching, selection rules, the
final-test ensemble, local Sudoku CSVs and the accuracy-against-compute sweep."""
import copy
import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import data_maze
import data_sudoku
import ensemble
import evaluate
import maze_rules
import puzzles
import solve
import sudoku_gen
import sudoku_rules
import train_trm
import ttc
from errors import ConfigError, DataError
from train_trm import RUN_CONFIG
from trm import TRM, TRMConfig


def tiny_model(vocab_size: int = 6, seq_len: int = 16, mlp_t: bool = True, seed: int = 0) -> TRM:
    """An untrained tiny TRM whose halting head says something (random weights, bias 0)."""
    torch.manual_seed(seed)
    model = TRM(TRMConfig(vocab_size=vocab_size, seq_len=seq_len, hidden_size=16, num_layers=1, T=2, n=2, N_sup=3,
                          mlp_t=mlp_t, pos_encoding="none" if mlp_t else "rope", width_multiple=1))
    with torch.no_grad():
        model.q_head.weight.normal_(0, 1.0)
        model.q_head.bias.zero_()
    return model.eval()


def random_tokens(rng, n: int, S: int, vocab: int) -> np.ndarray:
    return rng.integers(1, vocab, size=(n, S)).astype(np.uint8)


# -- symmetries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, 6, 9])
def test_every_sudoku_symmetry_is_undone_by_its_inverse_and_keeps_validity(size):
    rng = np.random.default_rng(size)
    meta = SimpleNamespace(seq_len=size * size)
    pairs = data_sudoku.symmetries(meta, 12, rng)
    answers = rng.integers(0, size + 2, size=(20, size * size)).astype(np.uint8)   # any token, as a model may answer
    if size == 9:
        sample = data_sudoku.builtin_sample()
    else:
        sample = sudoku_gen.generate_puzzles(size, 3, (size * size // 2, size * size // 2), seed=size, progress=False)
    puzzles_, solutions = sample["inputs"], sample["labels"]
    assert (pairs[0][0](answers) == answers).all()                                # member 0: the puzzle itself
    moved = 0
    for forward, inverse in pairs:
        assert (inverse(forward(answers)) == answers).all()
        assert (forward(inverse(answers)) == answers).all()
        image_p, image_s = forward(puzzles_), forward(solutions)
        assert sudoku_rules.valid_grids(image_p, image_s, size).all()            # a symmetry keeps the rules
        moved += int((image_s != solutions).any())
    assert moved >= 10                                                             # and most of them move the grid


@pytest.mark.parametrize("size", [5, 8])
def test_every_maze_symmetry_is_undone_by_its_inverse(size):
    rng = np.random.default_rng(size)
    meta = SimpleNamespace(seq_len=size * size)
    pairs = data_maze.symmetries(meta, 10, rng)                                   # past 8 they repeat
    answers = rng.integers(0, maze_rules.VOCAB_SIZE, size=(15, size * size)).astype(np.uint8)
    images = set()
    for forward, inverse in pairs:
        assert (inverse(forward(answers)) == answers).all()
        images.add(forward(answers).tobytes())
    assert len(images) == 8 and (pairs[0][0](answers) == answers).all()


def test_hooks_offer_symmetries_for_sudoku_and_maze_only():
    meta = SimpleNamespace(seq_len=16)
    rng = np.random.default_rng(0)
    assert len(puzzles.Hooks("sudoku", data_sudoku).symmetries(meta, 3, rng)) == 3
    assert len(puzzles.Hooks("maze", data_maze).symmetries(meta, 3, rng)) == 3
    import data_arc
    hooks = puzzles.Hooks("arc", data_arc)
    assert hooks.symmetries(meta, 3, rng) is None
    with pytest.raises(ValueError, match="arc offers no symmetries; use member kind 'noise'"):
        ensemble.transforms_for(hooks, meta, "symmetry", 3, 0)
    assert ensemble.transforms_for(hooks, meta, "noise", 3, 0) is None


# -- members --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mlp_t", [True, False])
def test_sigma_zero_members_equal_plain_predict_bit_for_bit(mlp_t):
    model = tiny_model(mlp_t=mlp_t)
    inputs = random_tokens(np.random.default_rng(1), 7, 16, 6)
    x = torch.from_numpy(inputs.astype(np.int64))
    plain = model.predict(x, N_sup=3)
    one = ensemble.run_members(model, inputs, 1, "noise", 0.0, 3, 64, torch.device("cpu"), torch.float32)
    assert np.array_equal(one.answers[0], plain.answers.numpy()) and np.array_equal(one.logit[0], plain.logit.numpy())
    # K members are one batch of K x 7 rows: the plain prediction of that batch, bit for bit (another
    # batch shape may round the last bits differently, so the comparison is on the same rows)
    plain_rows = model.predict(x.repeat(3, 1), N_sup=3)
    for kind in ("noise", "both"):
        transforms = ensemble.transforms_for(puzzles.Hooks("sudoku", data_sudoku), SimpleNamespace(seq_len=16),
                                             "symmetry", 3, 0)
        transforms = [transforms[0]] * 3 if kind == "both" else None             # identity transforms
        m = ensemble.run_members(model, inputs, 3, kind, 0.0, 3, 64, torch.device("cpu"), torch.float32, transforms)
        assert np.array_equal(m.answers.reshape(21, 16), plain_rows.answers.numpy())
        assert np.array_equal(m.logit.reshape(21), plain_rows.logit.numpy())     # bit for bit, not close
        assert np.array_equal(m.answers[1], plain.answers.numpy())
    noisy = model.predict(x, N_sup=3, perturb=ensemble.LatentNoise(0.0, [torch.Generator().manual_seed(1)]))
    assert torch.equal(noisy.answers, plain.answers) and torch.equal(noisy.logit, plain.logit)


def test_noise_changes_the_trajectory_and_is_seeded():
    model = tiny_model()
    inputs = random_tokens(np.random.default_rng(2), 5, 16, 6)
    run = lambda seed: ensemble.run_members(model, inputs, 4, "noise", 1.0, 3, 64, torch.device("cpu"),
                                            torch.float32, seed=seed)
    a, b, c = run(0), run(0), run(1)
    assert np.array_equal(a.logit, b.logit) and np.array_equal(a.answers, b.answers)   # same seed, same draws
    assert not np.array_equal(a.logit, c.logit)
    assert len({a.logit[k].tobytes() for k in range(4)}) == 4                          # each member its own noise
    plain = model.predict(torch.from_numpy(inputs.astype(np.int64)), N_sup=3)
    assert not np.allclose(a.logit[0], plain.logit.numpy())


def test_batched_members_equal_members_run_one_at_a_time():
    model = tiny_model()
    hooks, meta = puzzles.Hooks("sudoku", data_sudoku), SimpleNamespace(seq_len=16)
    inputs = random_tokens(np.random.default_rng(3), 6, 16, 6)
    K, sigma, seed = 4, 0.3, 5
    transforms = ensemble.transforms_for(hooks, meta, "both", K, seed)
    batched = ensemble.run_members(model, inputs, K, "both", sigma, 3, 64, torch.device("cpu"), torch.float32,
                                   transforms, seed=seed)
    gens = ensemble.noise_generators(K, seed, 0, torch.device("cpu"))             # the one batch starts at puzzle 0
    for k, (forward, inverse) in enumerate(transforms):
        x = torch.from_numpy(forward(inputs).astype(np.int64))
        alone = model.predict(x, N_sup=3, perturb=ensemble.LatentNoise(sigma, [gens[k]]))
        assert np.array_equal(batched.answers[k], inverse(alone.answers.numpy()))
        np.testing.assert_allclose(batched.logit[k], alone.logit.numpy(), rtol=0, atol=1e-4)  # batch shape: last bits
        assert np.array_equal(batched.first_halt[k], alone.first_halt.numpy())


@pytest.mark.parametrize("kind", ["symmetry", "noise", "both"])
def test_members_read_off_one_long_run_equal_shorter_runs_bit_for_bit(kind):
    model = tiny_model()
    hooks, meta = puzzles.Hooks("sudoku", data_sudoku), SimpleNamespace(seq_len=16)
    inputs = random_tokens(np.random.default_rng(4), 9, 16, 6)
    K, sigma, seed = 3, 0.5, 2
    transforms = None if kind == "noise" else ensemble.transforms_for(hooks, meta, kind, K, seed)
    cpu = torch.device("cpu")
    at = ensemble.run_members_at(model, inputs, K, kind, sigma, [5, 1, 3], 12, cpu, torch.float32, transforms,
                                 seed=seed)
    assert sorted(at) == [1, 3, 5]
    for steps, got in at.items():
        alone = ensemble.run_members(model, inputs, K, kind, sigma, steps, 12, cpu, torch.float32, transforms, seed=seed)
        for field in ("answers", "halt_answers", "logit", "first_halt", "steps"):
            assert np.array_equal(getattr(got, field), getattr(alone, field)), (steps, field)
        assert got.member_steps == alone.member_steps == K * len(inputs) * steps
    assert at[1].wall_s == pytest.approx(at[5].wall_s / 5)                       # wall time shared out by steps
    assert (at[5].first_halt > 0).any() and (at[5].first_halt > 1).any()         # the halting record is exercised


def test_adaptive_first_round_spends_only_on_puzzles_its_members_disagree_on():
    """first_round=2 of K=4 symmetry members: puzzles whose two first members agree (here: those
    the model answers alike, reversed or not) get no more members; the others get members 2 and
    3, the full ensemble's, so their vote is the full ensemble's vote. The compute counted is what ran."""
    model = tiny_model(vocab_size=4, seq_len=3)                        # short answers: some views agree
    inputs = random_tokens(np.random.default_rng(6), 40, 3, 4)
    K, cpu = 4, torch.device("cpu")
    same, flip = (lambda a: a), (lambda a: a[:, ::-1])                  # each its own inverse
    transforms = [(same, same), (flip, flip), (flip, flip), (same, same)]
    full = ensemble.run_members(model, inputs, K, "symmetry", 0.0, 3, 256, cpu, torch.float32, transforms)
    members, settled = ensemble.run_rounds(model, inputs, K, "symmetry", 0.0, 3, 256, cpu, torch.float32, transforms,
                                           first_round=2)
    agree = (full.answers[0] == full.answers[1]).all(axis=1)
    assert np.array_equal(settled, agree) and 0 < settled.sum() < len(inputs)       # both cases occur
    rest = ~settled
    assert np.array_equal(members.answers[:, rest], full.answers[:, rest])
    assert np.array_equal(ensemble.select(members, "vote")["answers"][rest], ensemble.select(full, "vote")["answers"][rest])
    assert (ensemble.select(members, "vote")["answers"][settled] == full.answers[0][settled]).all()
    assert members.member_steps == 3 * (2 * len(inputs) + 2 * int(rest.sum()))
    same, none = (ensemble.run_rounds(model, inputs, K, "symmetry", 0.0, 3, 256, cpu, torch.float32, transforms,
                                      first_round=r)[0] for r in (K, 0))
    assert np.array_equal(same.answers, full.answers) and same.member_steps == none.member_steps == full.member_steps
    noise = ensemble.run_rounds(model, inputs, K, "noise", 0.0, 3, 256, cpu, torch.float32, first_round=1)
    assert noise[1].all() and noise[0].member_steps == 3 * len(inputs)                 # sigma 0: one member decides
    valid = lambda x, answers: np.zeros(len(x), bool)                                   # no answer obeys the rules
    assert not ensemble.run_rounds(model, inputs, K, "noise", 0.0, 3, 256, cpu, torch.float32, first_round=1,
                                   valid_fn=valid)[1].any()


def test_halting_record_of_predict():
    model = tiny_model()
    x = torch.from_numpy(random_tokens(np.random.default_rng(4), 9, 16, 6).astype(np.int64))
    full = model.predict(x, N_sup=3, keep_steps=True)
    halts = full.per_step_confidence > 0.5                                              # (K, B)
    first = torch.where(halts.any(0), halts.int().argmax(0) + 1, 0)
    assert torch.equal(full.first_halt, first)
    for b in range(9):
        k = int(first[b])
        assert torch.equal(full.halt_answers[b], full.per_step[k - 1, b] if k else full.answers[b])
    halted = model.predict(x, N_sup=3, halt=True)
    assert torch.equal(halted.answers, full.halt_answers)


# -- selection rules --------------------------------------------------------------------------------


def hand_members(answers, logit, first_halt=None):
    answers = np.asarray(answers)[:, None, :]                                   # (K, 1, S): one puzzle
    K = len(answers)
    first_halt = np.zeros((K, 1), np.int64) if first_halt is None else np.asarray(first_halt)[:, None]
    return ensemble.Members(answers, answers.copy(), np.asarray(logit, float)[:, None], first_halt,
                            np.full((K, 1), 3), 3 * K, 0.0)


def test_majority_vote_and_its_tie_break():
    a, b, c = [2, 3], [3, 2], [4, 4]
    m = hand_members([a, b, a, c, b, a], [0.0, 9.0, 0.0, 5.0, 0.0, -1.0])
    chosen = ensemble.select(m, "vote")
    assert chosen["answers"].tolist() == [a] and chosen["member"][0] in (0, 2, 5)
    assert chosen["member"][0] == 0 and chosen["agreement"][0] == 0.5
    tie = hand_members([a, b, b, a, c], [1.0, 0.5, 3.0, 2.0, 9.0])              # a and b twice each: b's best logit 3 wins
    assert ensemble.select(tie, "vote")["answers"].tolist() == [b]
    assert ensemble.select(tie, "vote")["member"][0] == 2
    assert ensemble.select(tie, "halt")["answers"].tolist() == [c]              # the highest logit alone
    even = hand_members([a, b], [1.0, 1.0])                                     # all equal: the lowest index
    assert ensemble.select(even, "vote")["member"][0] == 0 and ensemble.select(even, "halt")["member"][0] == 0


def test_first_to_halt_takes_the_answer_at_its_halting_step():
    m = hand_members([[2, 2], [3, 3], [4, 4]], [5.0, 1.0, 2.0], first_halt=[0, 2, 2])
    m.halt_answers[2, 0] = [5, 5]                                               # member 2's answer when it halted
    chosen = ensemble.select(m, "first")
    assert chosen["member"][0] == 2 and chosen["answers"].tolist() == [[5, 5]]  # step 2 tie: logit 2 > 1
    never = hand_members([[2, 2], [3, 3]], [0.5, 3.0], first_halt=[0, 0])
    assert ensemble.select(never, "first")["member"][0] == 1                    # none halted: the highest logit


def test_rule_valid_first_drops_broken_answers_without_labels():
    first_row = np.array([2, 3, 4, 5] + [1] * 12, np.uint8)                     # a 4x4 puzzle: first row 1 2 3 4
    good = np.array([2, 3, 4, 5, 4, 5, 2, 3, 3, 2, 5, 4, 5, 4, 3, 2], np.uint8)
    broken = good.copy()
    broken[[4, 5]] = broken[[5, 4]]                                             # columns break
    m = hand_members([broken, broken, good, broken, good], [0.0, 0.0, -3.0, 0.0, -4.0])
    valid_fn = lambda inputs, answers: sudoku_rules.valid_grids(inputs, answers, 4)  # puzzle and answer, no label
    valid = ensemble.member_validity(m, first_row[None], valid_fn)
    assert valid[:, 0].tolist() == [False, False, True, False, True]
    assert ensemble.select(m, "vote")["answers"].tolist() == [broken.tolist()]
    picked = ensemble.select(m, "valid", valid)
    assert picked["answers"].tolist() == [good.tolist()] and picked["member"][0] == 2
    none_valid = np.zeros_like(valid)                                           # nothing valid: vote over all
    assert ensemble.select(m, "valid", none_valid)["answers"].tolist() == [broken.tolist()]
    with pytest.raises(ValueError, match="needs a rule check"):
        ensemble.select(m, "valid")


def test_vote_in_chunks_equals_vote_at_once(monkeypatch):
    rng = np.random.default_rng(7)
    answers = rng.integers(0, 2, size=(6, 40, 3))
    logit = rng.normal(size=(6, 40))
    whole = ensemble.vote(answers, logit)
    monkeypatch.setattr(ensemble, "VOTE_CHUNK", 6 * 6 * 3 * 7)                 # 7 puzzles per chunk
    assert np.array_equal(ensemble.vote(answers, logit), whole)


# -- local Sudoku CSVs ------------------------------------------------------------------------------


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "question", "answer", "rating"])
        writer.writerows(rows)
    return str(path)


def csv_config(tmp_path, train="", test=""):
    cfg = copy.deepcopy(RUN_CONFIG["data"])
    cfg.update(source="csv", csv_train=train, csv_test=test, data_dir=str(tmp_path / "data"), train_subset=0,
               test_subset=0)
    return cfg


def sample_rows():
    return [("builtin", p, s, 3) for _, p, s in data_sudoku._BUILTIN]


def test_a_local_csv_by_path_loads_with_the_hf_row_checks(tmp_path):
    rows = sample_rows()
    train = write_csv(tmp_path / "mine_train.csv", rows[:6])
    test = write_csv(tmp_path / "mine_test.csv", rows[6:])
    data = puzzles.load(csv_config(tmp_path, train, test), progress=False)
    assert data.train.n_examples == 6 and data.test.n_examples == len(rows) - 6
    assert np.array_equal(np.asarray(data.test.inputs[0]), sudoku_rules.parse_puzzle(rows[6][1], 9))
    alone = puzzles.load(csv_config(tmp_path, "", test), progress=False)         # evaluation only: train = test
    assert "train = test" in alone.description and alone.train.n_examples == alone.test.n_examples


def test_an_override_may_set_a_data_key_newer_than_the_checkpoint(tmp_path):
    import eval_data
    old = copy.deepcopy(RUN_CONFIG)
    del old["data"]["held_out_from"]                                         # a checkpoint written before the key
    override = tmp_path / "hard.json"
    override.write_text(json.dumps({"data": {"grid_size": 6, "held_out_from": str(tmp_path / "model_data")}}))
    data, _ = eval_data.data_section({"config": old}, str(override))
    assert data["held_out_from"] == str(tmp_path / "model_data") and data["grid_size"] == 6
    override.write_text(json.dumps({"data": {"grid_size": 6, "givens": [9, 11]}}))
    data, _ = eval_data.data_section({"config": old}, str(override))
    assert data["held_out_from"] == "" and data["givens"] == [9, 11]
    override.write_text(json.dumps({"data": {"held_out_frm": "x"}}))
    with pytest.raises(ConfigError, match="unknown key 'data.held_out_frm'"):
        eval_data.data_section({"config": old}, str(override))


def test_a_bad_row_in_a_local_csv_names_the_file_and_line(tmp_path):
    rows = sample_rows()[:3]
    q, a = rows[1][1], rows[1][2]
    rows[1] = ("x", q, a[:40] + ("1" if a[40] != "1" else "2") + a[41:], 3)      # answer breaks the rules or a given
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=r"bad\.csv line 3: "):
        puzzles.load(csv_config(tmp_path, "", path), progress=False)
    with pytest.raises(DataError, match=r"data\.csv_test: .*missing\.csv is not a file"):
        puzzles.load(csv_config(tmp_path, "", str(tmp_path / "missing.csv")), progress=False)
    with pytest.raises(ValueError, match="data.csv_test: a CSV file is needed"):
        puzzles.check_data_config(csv_config(tmp_path))


# -- the command lines and the final test, on a tiny checkpoint --------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ttc")
    config = copy.deepcopy(RUN_CONFIG)
    config["model"].update(hidden_size=16, num_layers=1, T=1, n=1, N_sup=3, width_multiple=1)
    config["data"].update(grid_size=4, n_train=60, n_test=12, givens=[8, 10], data_dir=str(tmp / "data"))
    config["training"].update(runs_dir=str(tmp / "runs"), run_name="tiny", batch_size=8, max_steps=4, eval_every=4,
                              log_every=2, warmup_steps=1, eval_batch_size=32, dtype="float32", device="cpu")
    config["training"]["test_time"].update(members=3, member_kind="both", sigma=0.2, select="valid")
    result = train_trm.main(config, progress=False)
    return {"tmp": tmp, "config": config, "result": result, "ckpt": str(tmp / "runs" / "tiny" / "last.pt")}


def test_final_test_runs_the_configured_ensemble(tiny_run):
    tt = tiny_run["result"]["test_time"]
    assert tt["members"] == 3 and tt["select"] == "valid" and set(tt["rules"]) == set(ensemble.RULES)
    assert tt["member_steps_per_puzzle"] == 3 * 3
    assert tiny_run["result"]["exact_acc"] == tt["rules"]["valid"]["exact_acc"]


def test_one_member_reproduces_the_plain_evaluation(tiny_run, tmp_path):
    plain = evaluate.main(["--checkpoint", tiny_run["ckpt"], "--depth", "0", "--no-progress", "--out", str(tmp_path / "a")])
    one = evaluate.main(["--checkpoint", tiny_run["ckpt"], "--depth", "0", "--no-progress", "--out", str(tmp_path / "b"),
                         "--members", "1", "--member-kind", "noise", "--sigma", "0.5"])
    assert one["metrics"] == plain["metrics"]
    many = evaluate.main(["--checkpoint", tiny_run["ckpt"], "--depth", "0", "--no-progress", "--out", str(tmp_path / "c"),
                          "--members", "4", "--member-kind", "symmetry", "--select", "first"])
    saved = json.loads((tmp_path / "c" / "eval_test.json").read_text())
    assert saved["test_time"]["members"] == 4 and saved["test_time"]["select"] == "first"
    assert many["metrics"]["exact_acc"] == saved["test_time"]["rules"]["first"]["exact_acc"]


def test_solve_shows_the_members_and_the_choice(tiny_run, capsys):
    puzzle = "12.4...2....4..1"                                          # one solution
    assert solve.main(["--checkpoint", tiny_run["ckpt"], "--members", "4", "--member-kind", "both", "--sigma",
                       "0.1", puzzle]) == 0
    out = capsys.readouterr().out
    assert "4 both members, sigma 0.1" in out and "chosen: vote -> member" in out and "valid ->" in out
    assert out.count("\n  ") >= 6                                                # header + 4 members + choices


def test_the_sweep_writes_its_table_and_files(tiny_run, tmp_path):
    out = tmp_path / "sweep"
    result = ttc.main(["--checkpoint", tiny_run["ckpt"], "--steps", "2,3", "--members", "1,2", "--kinds",
                       "symmetry,noise", "--limit", "6", "--out", str(out), "--no-progress"])
    rows = result["rows"]
    plain = [r for r in rows if r["kind"] == "plain"]
    assert [r["steps"] for r in plain] == [2, 3] and [r["baseline"] for r in plain] == [False, True]
    assert len(rows) == 2 + 2 * 2 * 4                                            # steps x kinds x rules, plus plain
    two = [r for r in rows if r["members"] == 2 and r["steps"] == 3]
    assert all(r["member_steps_per_puzzle"] == 6 and r["flops_per_puzzle"] == 2 * plain[1]["flops_per_puzzle"]
               for r in two)
    with open(out / "ttc_test.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert len(json.loads((out / "ttc_test.json").read_text())["rows"]) == len(rows)
    assert (out / "ttc_test.png").exists() == any(f.name.endswith(".png") for f in result["files"])


def test_the_sweep_read_off_one_run_equals_a_run_per_step_count(tiny_run, tmp_path):
    common = ["--checkpoint", tiny_run["ckpt"], "--steps", "1,2,3", "--members", "1,3", "--kinds", "symmetry,both",
              "--sigma", "0.3", "--limit", "8", "--no-progress"]
    one = ttc.main(common + ["--out", str(tmp_path / "one")])["rows"]
    each = ttc.main(common + ["--out", str(tmp_path / "each"), "--first-round", "99"])["rows"]  # >= K: no first round
    keys = ("steps", "members", "kind", "select", "exact_acc", "token_acc", "validity", "agreement",
            "member_steps_per_puzzle", "flops_per_puzzle")
    assert [tuple(r[k] for k in keys) for r in one] == [tuple(r[k] for k in keys) for r in each]
    assert {r["steps"] for r in one} == {1, 2, 3} and {r["kind"] for r in one} == {"plain", "symmetry", "both"}


def test_the_sweep_skips_settings_above_the_compute_cap(tiny_run, tmp_path):
    rows = ttc.main(["--checkpoint", tiny_run["ckpt"], "--steps", "2,3", "--members", "1,2,4", "--kinds", "noise",
                     "--max-member-steps", "6", "--limit", "4", "--out", str(tmp_path), "--no-progress"])["rows"]
    settings = sorted({(r["members"], r["steps"]) for r in rows})
    assert settings == [(1, 2), (1, 3), (2, 2), (2, 3)]                          # 4 x 2 = 8 > 6: skipped
    assert max(r["member_steps_per_puzzle"] for r in rows) == 6
    with pytest.raises(SystemExit):
        ttc.parse_args(["--max-member-steps", "-1"])


def test_bad_ensemble_settings_are_named(tiny_run):
    config = copy.deepcopy(tiny_run["config"])
    config["training"]["test_time"]["member_kind"] = "mirror"
    with pytest.raises(ConfigError, match="training.test_time.member_kind: 'mirror' is not one of symmetry"):
        train_trm.main(config, progress=False)
    with pytest.raises(SystemExit):
        ttc.parse_args(["--members", "0,2"])
    config["training"]["test_time"].update(member_kind="symmetry", first_round=-1)
    from train_cli import check_config
    with pytest.raises(ConfigError, match="training.test_time.first_round: -1 must be >= 0"):
        check_config(config)


def test_evaluate_with_a_first_round_counts_what_ran(tiny_run, tmp_path):
    out = evaluate.main(["--checkpoint", tiny_run["ckpt"], "--depth", "0", "--no-progress", "--out", str(tmp_path),
                         "--members", "4", "--member-kind", "noise", "--sigma", "0", "--first-round", "2"])
    tt = out["metrics"]["test_time"]
    plain = evaluate.main(["--checkpoint", tiny_run["ckpt"], "--depth", "0", "--no-progress", "--out", str(tmp_path)])
    # sigma 0: the members agree on every puzzle; Sudoku has a rule check, so the valid answers settle
    assert tt["first_round"] == 2 and tt["settled"] == plain["metrics"]["validity"]
    assert tt["member_steps_per_puzzle"] == pytest.approx(2 * 3 + (1 - tt["settled"]) * 2 * 3)
