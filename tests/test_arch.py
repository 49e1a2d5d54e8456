"""The comparison models on the shared loop: HRM, the direct transformer, the TRM variants
(separate f_H/f_L, single latent), their FLOP counts, and early stopping by patience."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

import checkpoint
import train_trm
from arch import build_model, model_config
from errors import ConfigError
from flops import block_flops, model_flops
from hrm import HRM
from loop import Slots
from train_cli import check_config
from transformer import DirectTransformer
from trm_variants import SeparateNets, SingleZ, ZSlots
from trm import TRM, TRMConfig, softmax_cross_entropy, trm_loss

VARIANTS = {"trm": {}, "hrm": {"arch": "hrm"}, "transformer": {"arch": "transformer", "depth": 3},
            "separate_nets": {"separate_nets": True}, "single_z": {"single_z": True}, "z_slots": {"z_slots": 3}}


def tiny_config(**overrides) -> TRMConfig:
    base = dict(vocab_size=6, seq_len=16, hidden_size=32, num_layers=2, num_heads=2, T=2, n=2, N_sup=4)
    return model_config({**base, **overrides})  # old variant keys upgraded, values checked


def random_batch(cfg: TRMConfig, B: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, cfg.vocab_size, (B, cfg.seq_len), generator=g)
    labels = torch.randint(2, cfg.vocab_size, (B, cfg.seq_len), generator=g)
    return inputs, labels


# -- each architecture learns through the training script's step function ------------------------

@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_arch_loss_falls_through_the_step_function(name):
    cfg = tiny_config(**VARIANTS[name])
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs, _ = random_batch(cfg)
    labels = 2 + inputs % (cfg.vocab_size - 2)                         # a rule the model can learn
    config = {"model": {"arch": cfg.arch}, "training": {"halt_loss_weight": 0.5}}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        slots = Slots(inputs, labels, model.initial_carry(len(inputs)), torch.zeros(len(inputs), dtype=torch.long),
                      torch.zeros(len(inputs), dtype=torch.bool))
        out = train_trm.trm_step(model, slots, config)
        halt_logit = out.q_logit if out.halt_logit is None else out.halt_logit
        parts = trm_loss(out.logits, halt_logit, labels)
        loss = parts.loss + sum(out.extra_losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(parts.ce.item())
    assert set(out.extra_losses) == ({"q_continue"} if cfg.arch in ("hrm", "transformer") else set())
    assert losses[-1] < 0.2 * losses[0], losses                        # cross entropy (the halting terms
    # rise once answers come right: the halting heads start at "never halt")


def test_build_model_picks_the_class_of_the_arch():
    assert type(build_model(tiny_config())) is TRM
    assert type(build_model(tiny_config(arch="hrm"))) is HRM
    transformer = build_model(tiny_config(arch="transformer"))
    assert type(transformer) is DirectTransformer
    assert len(transformer.net.blocks) == 2 * 2 * (2 + 1)             # default depth: num_layers * T * (n + 1)
    assert len(build_model(tiny_config(arch="hrm", H_layers=3)).net_H.blocks) == 3


# -- HRM: two networks, one-step gradient, Q-learning halting --------------------------------------

def test_hrm_gradient_flows_through_the_last_f_L_and_f_H_calls_only():
    """The gradient of one HRM step equals that of the last f_L and f_H calls alone, run from the
    states the no-grad calls produced (by hand); back-propagating through every call differs."""
    cfg = tiny_config(arch="hrm", T=2, n=3, mlp_t=True, pos_encoding="none")
    torch.manual_seed(0)
    model = HRM(cfg)
    with torch.no_grad():
        model.q_head.weight.normal_()
    inputs, labels = random_batch(cfg)
    carry0 = model.initial_carry(len(inputs))

    def loss_of(logits, q):
        return softmax_cross_entropy(logits, labels).mean() + F.binary_cross_entropy_with_logits(q, torch.ones_like(q))

    def grads():
        g = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        model.zero_grad()
        return g

    new_carry, logits, q = model(inputs, carry0)
    loss_of(logits, q).backward()
    g_step = grads()
    assert not new_carry.y.requires_grad and not new_carry.z.requires_grad

    def by_hand(no_grad_calls: bool):
        x = model.input_embedding(inputs)
        z_H, z_L = carry0.y, carry0.z
        calls = []                                                    # T * n f_L calls, T f_H calls, in order
        for cycle in range(cfg.T):
            calls += [("L", None)] * cfg.n + [("H", None)]
        with torch.no_grad() if no_grad_calls else torch.enable_grad():
            for kind, _ in calls[:-2]:
                if kind == "L":
                    z_L = model.net(z_L, z_H + x, None)
                else:
                    z_H = model.net_H(z_H, z_L, None)
        z_L = model.net(z_L, z_H + x, None)
        z_H = model.net_H(z_H, z_L, None)
        loss_of(*model.heads(z_H)).backward()
        return grads()

    for a, b in zip(g_step, by_hand(no_grad_calls=True)):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(g_step, by_hand(no_grad_calls=False)))


def test_hrm_continue_target_bootstraps_from_the_next_step():
    cfg = tiny_config(arch="hrm", N_sup=3)
    torch.manual_seed(0)
    model = HRM(cfg)
    with torch.no_grad():
        model.q_head.weight.normal_()
    inputs, _ = random_batch(cfg)
    carry0 = model.initial_carry(len(inputs))
    steps = torch.tensor([0, 1, 2, 2])                                  # the last two take their last step (N_sup 3)
    new_carry, logits, q_logit, q = model(inputs, carry0, steps=steps)
    _, q_halt, q_continue = model.q_values(model.deep_recursion(inputs, carry0)[0])
    torch.testing.assert_close(q.halt, q_halt)
    torch.testing.assert_close(q_logit, q_halt - q_continue)         # halts when q_halt > q_continue
    _, next_halt, next_continue = model.q_values(model.deep_recursion(inputs, new_carry)[0])
    expected = torch.sigmoid(torch.where(steps + 1 >= 3, next_halt, torch.maximum(next_halt, next_continue)))
    torch.testing.assert_close(q.target, expected)
    assert not q.target.requires_grad
    torch.testing.assert_close(q.continue_loss, F.binary_cross_entropy_with_logits(q_continue, expected))


def test_transformer_is_one_pass_of_its_network():
    cfg = tiny_config(arch="transformer", depth=3)
    torch.manual_seed(0)
    model = DirectTransformer(cfg)
    inputs, _ = random_batch(cfg)
    carry0 = model.initial_carry(len(inputs))
    new_carry, logits, _ = model(inputs, carry0)
    y = model.net(carry0.y, model.input_embedding(inputs), model._rope())
    torch.testing.assert_close(new_carry.y, y)
    torch.testing.assert_close(logits, model.heads(y)[0])
    assert torch.equal(new_carry.z, carry0.z)


# -- TRM variants ------------------------------------------------------------------------------

def test_variant_flags_off_leave_the_default_trm_unchanged():
    """Flags off: the same parameters and the same output, bit for bit, as the plain config; with
    separate_nets on and f_H a copy of f, the output is again the same (f_H only does the y update)."""
    torch.manual_seed(0)
    plain = TRM(tiny_config())
    torch.manual_seed(0)
    flags_off = build_model(tiny_config(separate_nets=False, single_z=False, z_slots=1, arch="trm", H_layers=0, depth=0))
    assert plain.state_dict().keys() == flags_off.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), flags_off.state_dict().values()))
    inputs, _ = random_batch(plain.config)
    carry = plain.initial_carry(len(inputs))
    out_plain, out_off = plain(inputs, carry), flags_off(inputs, carry)
    assert torch.equal(out_plain[1], out_off[1]) and torch.equal(out_plain[0].y, out_off[0].y)

    separate = build_model(tiny_config(separate_nets=True))
    state = dict(plain.state_dict())
    state.update({k.replace("net.", "net_y.", 1): v for k, v in plain.state_dict().items() if k.startswith("net.")})
    separate.load_state_dict(state)
    assert torch.equal(separate(inputs, carry)[1], out_plain[1])
    separate.net_y.blocks[0].mlp.down.weight.data.mul_(2)              # now f_H differs: so does the output
    assert not torch.equal(separate(inputs, carry)[1], out_plain[1])


def test_single_z_matches_a_by_hand_recursion():
    cfg = tiny_config(single_z=True, T=2, n=3)
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs, _ = random_batch(cfg)
    carry0 = model.initial_carry(len(inputs))
    new_carry, logits, q = model(inputs, carry0)
    x, s = model.input_embedding(inputs), carry0.y
    for _ in range(cfg.T):
        for _ in range(cfg.n):
            s = model.net(s, x, model._rope())
        s = model.net(s, None, model._rope())
    torch.testing.assert_close(new_carry.y, s)
    torch.testing.assert_close(logits, model.heads(s)[0])
    assert torch.equal(new_carry.z, carry0.z)                          # no second state


@pytest.mark.parametrize("gradient", ["last_cycle", "one_step"])
@pytest.mark.parametrize("n", [2, 4])
def test_z_slots_match_a_by_hand_recursion_over_separate_states(gradient, n):
    """z_slots=3 (official trm_hier6 with 3 states): the j-th z update replaces state j mod 3 with
    f of the sum of the states plus x + y, and y reads the sum; computed here with three separate
    tensors. With n=2 the third state is never written and keeps its own initial vector."""
    cfg = tiny_config(z_slots=3, T=2, n=n, gradient=gradient)
    torch.manual_seed(0)
    model = build_model(cfg)
    inputs, _ = random_batch(cfg)
    carry0 = model.initial_carry(len(inputs))
    L, B, D = carry0.y.shape
    assert carry0.z.shape == (L, B, 3 * D)
    states = [model.z_init[k * D:(k + 1) * D].expand(L, B, D) for k in range(3)]
    assert not torch.equal(states[0], states[1])                        # each state its own start
    new_carry, logits, q = model(inputs, carry0)
    x, y, rope = model.input_embedding(inputs), carry0.y, model._rope()
    for _ in range(cfg.T):
        for j in range(cfg.n):
            states[j % 3] = model.net(states[0] + states[1] + states[2], x + y, rope)
        y = model.net(y, states[0] + states[1] + states[2], rope)
    torch.testing.assert_close(new_carry.y, y)
    torch.testing.assert_close(new_carry.z, torch.cat(states, dim=-1))
    torch.testing.assert_close(logits, model.heads(y)[0])
    if n == 2:
        assert torch.equal(new_carry.z[..., 2 * D:], carry0.z[..., 2 * D:])


@pytest.mark.parametrize("overrides,key", [({"arch": "hrmm"}, "model.arch"),
                                           ({"arch": "hrm", "separate_nets": True}, "model.separate_nets"),
                                           ({"single_z": True, "separate_nets": True}, "model.single_z"),
                                           ({"z_slots": 0}, "model.z_slots"), ({"arch": "hrm", "z_slots": 2}, "model.z_slots"),
                                           ({"single_z": True, "z_slots": 2}, "model.z_slots"),
                                           ({"depth": -1}, "model.depth"), ({"H_layers": -1}, "model.H_layers"),
                                           ({"arch": "../x"}, "model.arch"), ({"arch": "hrm", "gradient": "one_step"},
                                                                              "model.gradient"),
                                           ({"arch": "separate_nets", "separate_nets": False}, "model.separate_nets")])
def test_bad_arch_config_names_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        tiny_config(**overrides)


# -- FLOPs -------------------------------------------------------------------------------------

def test_flops_count_each_arch_by_hand():
    B = 4
    trm = tiny_config(T=2, n=3)
    block = block_flops(trm, B)
    heads = 2 * B * 16 * 32 * 6 + 2 * B * 32
    heads2 = heads + 2 * B * 32                                          # two Q outputs
    assert model_flops(trm, B)["forward"] == 2 * 4 * 2 * block + heads
    assert model_flops(tiny_config(T=2, n=3, single_z=True), B) == model_flops(trm, B)
    assert model_flops(tiny_config(T=2, n=3, separate_nets=True), B) == model_flops(trm, B)
    assert model_flops(tiny_config(T=2, n=3, z_slots=3), B) == model_flops(trm, B)
    hrm = model_flops(tiny_config(arch="hrm", T=2, n=3, H_layers=1), B)
    forward = (2 * 3 * 2 + 2 * 1) * block + heads2                      # T*n f_L calls (2 blocks), T f_H calls (1 block)
    assert hrm["forward"] == forward
    assert hrm["train"] == forward + 2 * ((2 + 1) * block + heads2) + forward  # last f_L and f_H; Q target pass
    tf = model_flops(tiny_config(arch="transformer", depth=5), B)
    assert tf["train"] == 3 * (5 * block + heads2) + (5 * block + heads2)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_memory_estimate_of_each_arch_counts_its_own_networks(name):
    """The parameter part is a lower bound on each arch's parameter bytes (x5: weights, gradient,
    two Adam moments, EMA) and within 5% of it: it counts every network the arch has."""
    from device import memory_estimate
    cfg = tiny_config(**VARIANTS[name], mlp_t=True)
    params, activations = memory_estimate(cfg, 8, torch.float32)
    actual = 5 * 4 * sum(p.numel() for p in build_model(cfg).parameters())
    assert 0.95 * actual <= params <= actual and activations > 0


# -- on the loop: checkpoints of each arch, patience -----------------------------------------------

def run_config(tmp_path, data_dir, model: dict, **training) -> dict:
    config = copy.deepcopy(train_trm.RUN_CONFIG)
    config["model"].update(hidden_size=16, T=2, n=2, N_sup=2, **model)
    config["data"].update(grid_size=4, n_train=64, n_test=16, givens=[8, 10], data_dir=str(data_dir))
    config["training"].update(runs_dir=str(tmp_path / "runs"), run_name="run", batch_size=8, max_steps=4,
                              device="cpu", eval_every=2, log_every=2, warmup_steps=1, eval_batch_size=16)
    config["training"].update(training)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.mark.parametrize("name,cls", [("hrm", HRM), ("transformer", DirectTransformer), ("single_z", SingleZ), ("z_slots", ZSlots)])
def test_checkpoint_of_each_arch_loads_in_the_evaluator_and_solver(tmp_path, data_dir, name, cls, capsys):
    import evaluate
    import solve
    config = run_config(tmp_path, data_dir, dict(VARIANTS[name]))
    check_config(config)
    train_trm.main(config, progress=False)
    best = tmp_path / "runs" / "run" / "best.pt"
    model, ckpt, weights = checkpoint.load_trained(best, torch.device("cpu"))
    assert type(model) is cls and weights == "EMA"
    assert ckpt["model_config"]["arch"] == model.config.arch
    inputs = torch.randint(1, 6, (3, 16))
    pred = model.predict(inputs, N_sup=3, halt=True)
    assert pred.answers.shape == (3, 16) and ((pred.steps >= 1) & (pred.steps <= 3)).all()
    result = evaluate.main(["--checkpoint", str(best), "--depth", "3", "--no-progress", "--out", str(tmp_path / "e")])
    assert result["metrics"]["n"] == 16 and len(result["depth"]) == 3
    assert solve.main(["--checkpoint", str(best), "--steps", "12.4...2....4..1"]) == 0
    assert "answer" in capsys.readouterr().out.lower()


def test_patience_stops_a_run_whose_validation_metric_is_flat(tmp_path, data_dir):
    """lr 1e-12: the weights do not move, so the validation exact accuracy never improves after the
    first evaluation; with patience 2 the run stops at the third evaluation. The three tie, and a tie
    goes to the later checkpoint: best.pt is the third."""
    config = run_config(tmp_path, data_dir, {}, max_steps=50, eval_every=1, lr=1e-12, patience=2, ema=False)
    config["data"]["n_val"] = 16
    result = train_trm.main(config, progress=False)
    assert result["step"] == 3 and result["best_step"] == 3
    log = [json.loads(line) for line in (tmp_path / "runs" / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2, 3] and len({r["exact_acc"] for r in evals}) == 1
    assert [r for r in log if r["kind"] == "early_stop"][0]["best_step"] == 3
    assert checkpoint.load_checkpoint(tmp_path / "runs" / "run" / "best.pt")["step"] == 3


@pytest.mark.parametrize("stop_exact", [1.0, 0.0])
def test_stop_exact_ends_a_run_at_the_first_evaluation_that_reaches_it(tmp_path, data_dir, monkeypatch, stop_exact):
    """The evaluations report validation exact 0.5, 1.0, 1.0, ...: with stop_exact 1.0 the run stops
    at the second evaluation (step 4 of 20), with best.pt and last.pt from that step; with 0 (off)
    it trains all 20 steps."""
    import loop
    real, calls = loop.evaluate, []

    def scripted(*args, **kwargs):
        metrics = real(*args, **kwargs)
        calls.append(1)
        return {**metrics, "exact_acc": 0.5 if len(calls) == 1 else 1.0}

    monkeypatch.setattr(loop, "evaluate", scripted)
    config = run_config(tmp_path, data_dir, {}, max_steps=20, eval_every=2, stop_exact=stop_exact)
    config["data"]["n_val"] = 16
    check_config(config)
    result = train_trm.main(config, progress=False)
    log = [json.loads(line) for line in (tmp_path / "runs" / "run" / "log.jsonl").read_text().splitlines()]
    stops = [r for r in log if r["kind"] == "early_stop"]
    if stop_exact:
        assert result["step"] == 4 and result["best_step"] == 4
        assert stops == [{"kind": "early_stop", "step": 4, "best_step": 4, "stop_exact": 1.0}]
        assert [r["step"] for r in log if r["kind"] == "test"] == [4, 4]
        for name in ("best.pt", "last.pt"):
            assert checkpoint.load_checkpoint(tmp_path / "runs" / "run" / name)["step"] == 4
    else:
        assert result["step"] == 20 and not stops


def test_patience_and_arch_config_errors_name_the_key(tmp_path, data_dir):
    config = run_config(tmp_path, data_dir, {}, patience=-1)
    with pytest.raises(ConfigError, match="training.patience"):
        check_config(config)
    config = run_config(tmp_path, data_dir, {}, stop_exact=1.5)
    with pytest.raises(ConfigError, match="training.stop_exact"):
        check_config(config)
    config = run_config(tmp_path, data_dir, {"arch": "hrm", "single_z": True})
    with pytest.raises(ConfigError, match="model.single_z"):
        check_config(config)


def test_the_jepa_script_refuses_another_arch():
    import train_trm_jepa
    config = copy.deepcopy(train_trm_jepa.RUN_CONFIG)
    config["model"]["arch"] = "hrm"
    with pytest.raises(ConfigError, match="model.arch"):
        train_trm_jepa.check_jepa_config(config)


@pytest.mark.parametrize("name", ["separate_nets", "z_slots"])
def test_a_checkpoint_written_when_variants_were_flags_resumes_exactly(tmp_path, data_dir, name):
    """Before model.arch named the variants, a checkpoint's config and model_config held the flags
    (arch "trm", separate_nets true, ...). Such a last.pt resumes through the command line, and the
    resumed run ends with the weights of an uninterrupted one; evaluation builds the variant's class."""
    flags = {"separate_nets": False, "single_z": False, "z_slots": 1, "H_layers": 0, "depth": 0}
    flags.update(separate_nets=True) if name == "separate_nets" else flags.update(z_slots=3)
    whole = run_config(tmp_path, data_dir, dict(flags), run_name="whole", max_steps=6, eval_every=3)
    train_trm.main(whole, progress=False)
    part = run_config(tmp_path, data_dir, dict(flags), run_name="part", max_steps=3, eval_every=3)
    train_trm.main(part, progress=False)
    last = tmp_path / "runs" / "part" / "last.pt"
    ckpt = checkpoint.load_checkpoint(last)
    ckpt["config"]["model"].update(flags, arch="trm")                 # as written then
    ckpt["model_config"].update(flags, arch="trm")
    checkpoint.save_checkpoint(last, ckpt)
    base = copy.deepcopy(train_trm.RUN_CONFIG)
    base["training"].update(runs_dir=str(tmp_path / "runs"), run_name="part")
    override = tmp_path / "more.json"
    saved = ckpt["config"]
    override.write_text(json.dumps({**saved, "training": {**saved["training"], "max_steps": 6}}))
    train_trm.cli(["--resume", "--config", str(override), "--no-progress"], base=base)
    a, b = (checkpoint.load_checkpoint(tmp_path / "runs" / run / "last.pt") for run in ("whole", "part"))
    assert b["step"] == 6 and b["config"]["model"]["arch"] == name
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    model, _, _ = checkpoint.load_trained(last, torch.device("cpu"))
    assert type(model) is {"separate_nets": SeparateNets, "z_slots": ZSlots}[name]
