"""Model tests: shapes, parameter count, the gradient boundary, learning, prediction."""
import math

import pytest
import torch
import torch.nn.functional as F

from arch import build_model, model_config
from trm import (TRM, Carry, TRMConfig, count_parameters, rms_norm, softmax_cross_entropy, stablemax_cross_entropy,
                 swiglu_width, trunc_normal_, truncated_normal_std)


def tiny_config(**overrides) -> TRMConfig:
    base = dict(vocab_size=6, seq_len=16, hidden_size=32, num_layers=2, num_heads=2, T=2, n=2, N_sup=4)
    return model_config({**base, **overrides})  # checked, as a config from a file is


def random_batch(cfg: TRMConfig, B: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, cfg.vocab_size, (B, cfg.seq_len), generator=g)
    labels = torch.randint(2, cfg.vocab_size, (B, cfg.seq_len), generator=g)
    return inputs, labels


@pytest.mark.parametrize("mlp_t,pos", [(False, "rope"), (False, "learned"), (False, "none"), (True, "none"), (True, "learned")])
def test_shapes(mlp_t, pos):
    cfg = tiny_config(mlp_t=mlp_t, pos_encoding=pos)
    torch.manual_seed(0)
    model = TRM(cfg)
    inputs, _ = random_batch(cfg, B=3)
    carry = model.initial_carry(3)
    L = cfg.n_prefix + cfg.seq_len
    assert carry.y.shape == carry.z.shape == (L, 3, cfg.hidden_size)
    new_carry, logits, q = model(inputs, carry)
    assert logits.shape == (3, cfg.seq_len, cfg.vocab_size)
    assert q.shape == (3,)
    assert new_carry.y.shape == carry.y.shape
    assert torch.isfinite(logits).all()
    pred = model.predict(inputs, N_sup=3, keep_steps=True)
    assert pred.answers.shape == (3, cfg.seq_len)
    assert pred.per_step.shape == (3, 3, cfg.seq_len)
    assert pred.steps.tolist() == [3, 3, 3]
    assert ((pred.confidence > 0) & (pred.confidence < 1)).all()


def test_parameter_count_by_hand():
    cfg = tiny_config()  # D=32, vocab 6, seq 16, 1 prefix, 2 attention blocks, rope
    D, V, W = 32, 6, swiglu_width(32, 4.0)
    assert W == 256
    block = 3 * D * D + D * D + D * 2 * W + W * D   # qkv, out, gate+up, down (no biases)
    expected = V * D + 1 * D + 2 * block + D * V + (D + 1)  # embed, prefix, blocks, output head, Q head
    assert count_parameters(TRM(cfg)) == expected

    cfg_t = tiny_config(mlp_t=True, pos_encoding="learned")
    L, Wt = 17, swiglu_width(17, 4.0)
    block_t = 2 * Wt * L + L * Wt + D * 2 * W + W * D
    expected_t = V * D + D + L * D + 2 * block_t + D * V + D + 1
    assert count_parameters(TRM(cfg_t)) == expected_t


def test_parameter_count_with_the_official_prefix():
    """16 prefix positions: one learned vector ("first", official) or 16 ("all")."""
    base = count_parameters(TRM(tiny_config(n_prefix=1)))
    assert count_parameters(TRM(tiny_config(n_prefix=16))) == base
    assert count_parameters(TRM(tiny_config(n_prefix=16, prefix_learned="all"))) == base + 15 * 32


@pytest.mark.parametrize("n_prefix,width", [(1, 256), (16, 512)])
def test_mlp_t_width_follows_the_sequence_length(n_prefix, width):
    """As in the official code: SwiGLU width of L = n_prefix + 81 at 9x9 (97 -> 512 with 16 positions)."""
    model = TRM(TRMConfig(vocab_size=11, seq_len=81, hidden_size=32, mlp_t=True, pos_encoding="none", n_prefix=n_prefix))
    mix = model.net.blocks[0].mix
    assert mix.width == width and mix.gate_up.shape == (2 * width, 81 + n_prefix)


def test_official_prefix_layout_is_one_learned_vector_then_zeros():
    cfg = tiny_config(n_prefix=16, mlp_t=True, pos_encoding="none")
    model = TRM(cfg)
    assert model.prefix.shape == (1, cfg.hidden_size)
    with torch.no_grad():
        model.prefix.normal_()
    inputs, labels = random_batch(cfg)
    x = model.input_embedding(inputs)                                   # (L, B, D)
    assert x.shape == (16 + cfg.seq_len, 3, cfg.hidden_size)
    torch.testing.assert_close(x[0], math.sqrt(cfg.hidden_size) * model.prefix[0].expand(3, -1))
    assert torch.all(x[1:16] == 0)
    _, logits, q = model(inputs, model.initial_carry(3))
    (softmax_cross_entropy(logits, labels).mean() + q.sum()).backward()
    assert model.prefix.grad.abs().sum() > 0


def official_trunc_normal(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """The official trunc_normal_init_ (models/common.py), from its formula: uniform in
    [erf(-2/sqrt2), erf(2/sqrt2)], erfinv, times sqrt2 * std / sigma, clipped at +-2 std / sigma."""
    sigma = math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2)))
    lo, hi = math.erf(-math.sqrt(2)), math.erf(math.sqrt(2))
    comp = std / sigma
    return tensor.uniform_(lo, hi).erfinv_().mul_(math.sqrt(2) * comp).clip_(-2 * comp, 2 * comp)


def test_init_realises_the_requested_std():
    torch.manual_seed(0)
    w = trunc_normal_(torch.empty(1_000_000), std=0.02)
    assert abs(w.std().item() / 0.02 - 1) < 0.01
    assert abs(w.mean().item()) < 1e-4
    bound = 2 * 0.02 / truncated_normal_std()                          # about 2.27 std
    assert w.abs().max() <= bound * (1 + 1e-6) and w.abs().max() > 0.999 * bound
    torch.manual_seed(0)
    plain = torch.nn.init.trunc_normal_(torch.empty(1_000_000), std=0.02, a=-0.04, b=0.04)
    assert abs(plain.std().item() / 0.02 - 0.88) < 0.01                # what the old init realised
    assert abs(truncated_normal_std() - 0.8796) < 1e-4


def test_init_draws_the_official_values():
    torch.manual_seed(1)
    ours = trunc_normal_(torch.empty(10_000), std=0.5)
    torch.manual_seed(1)
    torch.testing.assert_close(ours, official_trunc_normal(torch.empty(10_000), std=0.5))


def test_model_init_uses_the_corrected_std():
    """The model's weights: LeCun std 1/sqrt(fan_in) realised (large SwiGLU matrix), embeddings 1/sqrt(D)."""
    torch.manual_seed(0)
    model = TRM(tiny_config(hidden_size=256, num_heads=4, vocab_size=2000))
    gate_up = model.net.blocks[0].mlp.gate_up.weight                  # (2W, 256): 393k values
    assert abs(gate_up.std().item() * math.sqrt(256) - 1) < 0.01
    assert abs(model.embed.weight.std().item() * math.sqrt(256) - 1) < 0.01   # 512k values
    std_yz = torch.cat((model.y_init, model.z_init)).std().item()
    assert 0.9 < std_yz < 1.1 and torch.cat((model.y_init, model.z_init)).abs().max() <= 2.28


def test_rms_norm_is_computed_in_fp32_and_cast_back():
    x = torch.randn(7, 3, 5, generator=torch.Generator().manual_seed(0)).mul(40).to(torch.bfloat16)
    x32 = x.float()
    for dim in (0, -1):
        out = rms_norm(x, dim, 1e-5)
        assert out.dtype == torch.bfloat16
        ref = (x32 * torch.rsqrt(x32.square().mean(dim, keepdim=True) + 1e-5)).to(torch.bfloat16)
        torch.testing.assert_close(out, ref, atol=0, rtol=2 ** -8)  # at most one bf16 rounding step
    assert torch.equal(rms_norm(x, 0, 1e-5), (x32 * torch.rsqrt(x32.square().mean(0, keepdim=True) + 1e-5)).to(torch.bfloat16))


def test_halting_head_starts_at_never_halt():
    model = TRM(tiny_config())
    assert torch.all(model.q_head.weight == 0) and model.q_head.bias.item() == -5.0
    inputs, _ = random_batch(model.config)
    _, _, q = model(inputs, model.initial_carry(3))
    assert torch.allclose(q, torch.full_like(q, -5.0))


@pytest.mark.parametrize("mlp_t", [False, True])
def test_gradient_flows_through_last_cycle_only(mlp_t):
    """The gradient of one supervision step equals the gradient of the last cycle alone, run
    from the states the no-grad cycles produced; full back-propagation through all T cycles
    gives a different gradient, so the test would notice a missing torch.no_grad()."""
    cfg = tiny_config(mlp_t=mlp_t, pos_encoding="none" if mlp_t else "rope", T=3, n=2)
    torch.manual_seed(0)
    model = TRM(cfg)
    with torch.no_grad():  # make the halting head matter for the gradient too
        model.q_head.weight.normal_()
    inputs, labels = random_batch(cfg)
    carry0 = model.initial_carry(3)

    def loss_of(logits, q):
        return softmax_cross_entropy(logits, labels).mean() + F.binary_cross_entropy_with_logits(q, torch.ones_like(q))

    def grads():
        g = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return g

    new_carry, logits, q = model(inputs, carry0)
    loss_of(logits, q).backward()
    g_step = grads()
    assert new_carry.y.grad_fn is None and new_carry.z.grad_fn is None
    assert not new_carry.y.requires_grad and not new_carry.z.requires_grad

    # By hand: T-1 cycles without gradient, then one cycle with it.
    x = model.input_embedding(inputs)
    y, z = carry0.y, carry0.z
    with torch.no_grad():
        for _ in range(cfg.T - 1):
            y, z = model.latent_recursion(x, y, z)
    y, z = model.latent_recursion(x, y, z)
    loss_of(*model.heads(y)).backward()
    g_manual = grads()
    for a, b in zip(g_step, g_manual):
        torch.testing.assert_close(a, b)

    # Full back-propagation through every cycle differs.
    x = model.input_embedding(inputs)
    y, z = carry0.y, carry0.z
    for _ in range(cfg.T):
        y, z = model.latent_recursion(x, y, z)
    loss_of(*model.heads(y)).backward()
    g_full = grads()
    assert any(not torch.allclose(a, b) for a, b in zip(g_step, g_full))


@pytest.mark.parametrize("mlp_t", [False, True])
def test_one_step_gradient_goes_through_the_last_z_and_y_updates_only(mlp_t):
    """gradient="one_step" computes the same outputs as the default; its gradient is that of the
    last z update and the y update alone, run from the states everything before them produced
    without gradient, and differs from the last-cycle gradient."""
    cfg = tiny_config(mlp_t=mlp_t, pos_encoding="none" if mlp_t else "rope", T=2, n=3)
    torch.manual_seed(0)
    model = TRM(cfg)
    one = build_model(TRMConfig(**{**cfg.__dict__, "gradient": "one_step"}))
    one.load_state_dict(model.state_dict())
    inputs, labels = random_batch(cfg)

    def grads(m, logits):
        softmax_cross_entropy(logits, labels).mean().backward()
        g = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in m.parameters()]
        m.zero_grad()
        return g

    carry, logits, _ = model(inputs, model.initial_carry(3))
    g_cycle = grads(model, logits)
    carry1, logits1, _ = one(inputs, one.initial_carry(3))
    g_one = grads(one, logits1)
    torch.testing.assert_close(logits1, logits)
    torch.testing.assert_close(carry1.z, carry.z)

    x = one.input_embedding(inputs)
    c0 = one.initial_carry(3)
    y, z = c0.y, c0.z
    rope = one._rope()
    with torch.no_grad():
        for _ in range(cfg.T - 1):
            y, z = one.latent_recursion(x, y, z)
        for _ in range(cfg.n - 1):
            z = one.net(z, x + y, rope)
    z = one.net(z, x + y, rope)
    y = one.net(y, z, rope)
    g_manual = grads(one, one.heads(y)[0])
    for a, b in zip(g_one, g_manual):
        torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(g_one, g_cycle))


def test_carry_is_detached_between_supervision_steps():
    """A loss on the second supervision step gives the same gradient whether or not the first
    step was run with autograd on: nothing flows back into step one."""
    cfg = tiny_config()
    torch.manual_seed(0)
    model = TRM(cfg)
    inputs, labels = random_batch(cfg)
    carry1, _, _ = model(inputs, model.initial_carry(3))
    _, logits, q = model(inputs, carry1)
    (softmax_cross_entropy(logits, labels).mean() + q.sum()).backward()
    g_chained = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with torch.no_grad():
        carry1_ng, _, _ = model(inputs, model.initial_carry(3))
    _, logits, q = model(inputs, Carry(carry1_ng.y.clone(), carry1_ng.z.clone()))
    (softmax_cross_entropy(logits, labels).mean() + q.sum()).backward()
    for a, p in zip(g_chained, model.parameters()):
        torch.testing.assert_close(a, p.grad)


@pytest.mark.parametrize("variant", [dict(mlp_t=True, pos_encoding="none"), dict(num_heads=4)])
def test_loss_goes_down_and_tiny_model_memorises_puzzles(variant):
    """Deep supervision on 8 fixed 4x4 puzzles: the loss falls and every puzzle is solved.
    (With the official init, attention with one 64-wide head memorised only 1 of 3 seeds in
    these 200 iterations; with 4 heads, and with mlp_t, 3 of 3.)"""
    import sudoku_gen
    data = sudoku_gen.generate_puzzles(4, 8, givens=(6, 8), seed=3, workers=1, progress=False)
    inputs = torch.from_numpy(data["inputs"]).long()
    labels = torch.from_numpy(data["labels"]).long()
    cfg = TRMConfig(vocab_size=6, seq_len=16, hidden_size=64, T=2, n=2, N_sup=2, **variant)
    torch.manual_seed(0)
    model = TRM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    for it in range(200):
        carry = model.initial_carry(len(inputs))
        for _ in range(cfg.N_sup):  # deep supervision: one optimizer step per supervision step
            carry, logits, q = model(inputs, carry)
            solved = (logits.argmax(-1) == labels).all(1).float()
            loss = softmax_cross_entropy(logits, labels).mean() + 0.5 * F.binary_cross_entropy_with_logits(q, solved)
            loss.backward()
            opt.step()
            opt.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.2 * sum(losses[:10]) / 10
    pred = model.predict(inputs, N_sup=cfg.N_sup)
    assert (pred.answers == labels).all(1).float().mean().item() == 1.0


def test_bf16_carry_runs_in_bf16():
    model = TRM(tiny_config())
    inputs, _ = random_batch(model.config)
    carry, logits, q = model(inputs, model.initial_carry(3, dtype=torch.bfloat16))
    assert carry.y.dtype == torch.bfloat16 and logits.dtype == torch.bfloat16 and q.dtype == torch.float32


def test_predict_with_halting_freezes_answers():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = TRM(cfg)
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # halting head says "done" at once
    inputs, _ = random_batch(cfg)
    pred = model.predict(inputs, N_sup=4, halt=True, keep_steps=True)
    assert pred.steps.tolist() == [1, 1, 1]
    assert torch.equal(pred.answers, pred.per_step[0])


def test_stablemax_matches_definition():
    logits = torch.tensor([[[1.0, -1.0, 0.0]]])
    labels = torch.tensor([[0]])
    s = torch.tensor([2.0, 0.5, 1.0])
    expected = -torch.log(s[0] / s.sum())
    torch.testing.assert_close(stablemax_cross_entropy(logits, labels)[0, 0], expected)


@pytest.mark.parametrize("key,value,message", [
    ("T", 0, "model.T"), ("n", 0, "model.n"), ("hidden_size", 30, "divisible by num_heads"),
    ("pos_encoding", "alibi", "model.pos_encoding"), ("N_sup", 0, "model.N_sup"),
    ("mlp_t_norm", "channel", "model.mlp_t_norm"), ("prefix_learned", "none", "model.prefix_learned"),
    ("gradient", "full", "model.gradient"),
])
def test_bad_model_config_names_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**{key: value, "num_heads": 4} if key == "hidden_size" else {key: value})


@pytest.mark.parametrize("loss", ["softmax", "stablemax"])
def test_ignored_positions_do_not_count_in_the_loss(loss):
    """trm_loss: positions labelled IGNORE_LABEL add nothing (their logits may be anything), and
    each puzzle's cross entropy is averaged over its own target positions, then over puzzles."""
    from trm import IGNORE_LABEL, LOSSES, trm_loss
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[1, 2, 3, 4, 0, 1], [2, 2, 2, 2, 2, 2]])
    labels[0, 3:] = IGNORE_LABEL                                    # puzzle 0 has 3 targets, puzzle 1 has 6
    q = torch.zeros(2)
    base = trm_loss(logits, q, labels, loss)
    noisy = logits.clone()
    noisy[0, 3:] = torch.randn(3, 5) * 100                          # anything at the ignored positions
    assert torch.allclose(trm_loss(noisy, q, labels, loss).ce, base.ce)
    per_element = LOSSES[loss](logits, labels)
    expected = (per_element[0, :3].mean() + per_element[1].mean()) / 2   # per puzzle, then over puzzles
    assert torch.allclose(base.ce, expected)
    right = torch.nn.functional.one_hot(labels.clamp_min(0), 5).float() * 10
    right[0, 3:] = torch.randn(3, 5)                                # wrong only where nothing counts
    solved = trm_loss(right, q, labels, loss)
    assert solved.solved.tolist() == [True, True] and solved.token_acc.tolist() == [1.0, 1.0]


def test_stablemax_gradient_is_finite_where_a_logit_is_exactly_one():
    """bf16 logits land on 1.0 exactly; the stable-max loss must still have a finite gradient."""
    from trm import stablemax_cross_entropy
    logits = torch.tensor([[[1.0, -2.0, 0.5, 1.0]]], requires_grad=True)
    stablemax_cross_entropy(logits, torch.tensor([[2]])).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_stopping_on_unchanged_answers_gives_the_answers_of_all_steps_when_they_are_stable():
    """A model whose answers change for 3 steps and then stay (scripted): stop_unchanged=2 stops each
    puzzle 2 steps after its answer settled, with exactly the answers of all 12 steps."""

    class Settling(TRM):
        calls = 0

        def forward(self, inputs, carry):
            Settling.calls += 1
            step = min(Settling.calls, 3)
            answer = (inputs + step) % self.config.vocab_size        # changes at steps 1..3, then stays
            logits = torch.nn.functional.one_hot(answer, self.config.vocab_size).float()
            return carry, logits, torch.full((inputs.shape[0],), -5.0)

    model = Settling(TRMConfig(vocab_size=6, seq_len=16, hidden_size=32, num_heads=2, T=1, n=1, N_sup=12)).eval()
    x = torch.randint(1, 6, (8, 16))
    full = model.predict(x)
    Settling.calls = 0
    early = model.predict(x, stop_unchanged=2)
    assert Settling.calls == 5 and early.steps.tolist() == [5] * 8   # unchanged at steps 4 and 5
    assert torch.equal(early.answers, full.answers) and full.steps.tolist() == [12] * 8


def test_exact_widths_option():
    cfg = TRMConfig(vocab_size=8, seq_len=36, hidden_size=128, mlp_t=True, pos_encoding="none", width_multiple=1)
    block = TRM(cfg).net.blocks[0]
    assert block.mix.width == round(4 * 37 * 2 / 3) == 99                  # the official rounding makes 256
    assert block.mlp.down.weight.shape == (128, round(4 * 128 * 2 / 3))    # 341, officially 512
    assert TRM(TRMConfig(vocab_size=8, seq_len=36, hidden_size=128, mlp_t=True, pos_encoding="none")).net.blocks[0].mix.width == 256


def test_frozen_puzzles_leave_the_batch_and_the_answers_match_all_steps():
    """stop_unchanged with puzzles that settle at different steps (scripted: each row counts its own
    steps in its carry and its answer changes until its own settling step): the later steps run on
    the live puzzles alone, and every answer and step count is the one read off the full run."""
    settle = torch.tensor([1, 2, 3, 5, 8, 11, 4, 2] * 4)   # the step after which row b's answer stays

    class Settling(TRM):
        sizes = []

        def forward(self, inputs, carry, puzzle_ids):
            Settling.sizes.append(inputs.shape[0])
            count = carry.y[0, :, 0] + 1                            # this row's own step, kept in its carry
            y = carry.y.clone()
            y[0, :, 0] = count
            shift = torch.minimum(count.long(), settle[puzzle_ids])
            logits = torch.nn.functional.one_hot((inputs + shift[:, None]) % self.config.vocab_size,
                                                 self.config.vocab_size).float()
            return Carry(y, carry.z), logits, torch.full((inputs.shape[0],), -5.0)

    model = Settling(TRMConfig(vocab_size=6, seq_len=16, hidden_size=32, num_heads=2, T=1, n=1, N_sup=12)).eval()
    with torch.no_grad():
        model.y_init.zero_()
    x, ids = torch.randint(1, 6, (32, 16)), torch.arange(32)
    history = model.predict(x, keep_steps=True, puzzle_ids=ids).per_step          # (12, B, seq_len)
    k = 2
    want_steps = [min(int(s) + k, 12) for s in settle]                             # unchanged k steps after settling
    want = torch.stack([history[s - 1, b] for b, s in enumerate(want_steps)])
    Settling.sizes = []
    early = model.predict(x, stop_unchanged=k, puzzle_ids=ids)
    assert early.steps.tolist() == want_steps and torch.equal(early.answers, want)
    assert Settling.sizes[0] == 32 and Settling.sizes == sorted(Settling.sizes, reverse=True)
    assert sum(Settling.sizes) == sum(want_steps)                                 # each row ran exactly its own steps
