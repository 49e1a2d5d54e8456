"""Our TRM against an independent reference written in this file from the official code's formulas
(SamsungSAILMontreal/TinyRecursiveModels: models/layers.py, models/recursive_reasoning/trm.py).

The reference is batch-first, (B, L, D), as the official code: the mlp_t block transposes to
(B, D, L), applies a SwiGLU over L, normalises over the last axis (the sequence) and transposes
back; the attention block uses RoPE on the first/second half split; every norm is an RMS norm
over the last axis in fp32. Weights are read from our modules, so any difference is in the maths.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from trm import TRM, Carry, TRMConfig

TOL = dict(atol=1e-5, rtol=1e-5)


# -- the reference, from the official formulas ----------------------------------------------------

def ref_rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Over the last axis, computed in fp32, cast back."""
    x32 = x.to(torch.float32)
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


def ref_swiglu(x: torch.Tensor, gate_up_w: torch.Tensor, down_w: torch.Tensor) -> torch.Tensor:
    """Over the last axis: down(silu(gate) * up), gate and up the two halves of one projection."""
    gate, up = F.linear(x, gate_up_w).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down_w)


def ref_cos_sin(L: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(L, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)                           # (L, hd)
    return emb.cos(), emb.sin()


def ref_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, L, H, hd); rotate the first half of hd against the second."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def ref_attention(x: torch.Tensor, qkv_w: torch.Tensor, o_w: torch.Tensor, heads: int, cos_sin) -> torch.Tensor:
    B, L, D = x.shape
    hd = D // heads
    qkv = F.linear(x, qkv_w).view(B, L, 3 * heads, hd)
    q, k, v = qkv[:, :, :heads], qkv[:, :, heads:2 * heads], qkv[:, :, 2 * heads:]
    if cos_sin is not None:
        q, k = ref_rope(q, *cos_sin), ref_rope(k, *cos_sin)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))                  # (B, H, L, hd)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    return F.linear((weights @ v).transpose(1, 2).reshape(B, L, D), o_w)


def ref_block(x: torch.Tensor, block, cfg: TRMConfig, cos_sin, first_norm: str = "sequence") -> torch.Tensor:
    """One post-norm block on (B, L, D)."""
    eps = cfg.rms_norm_eps
    if cfg.mlp_t:
        h = x.transpose(1, 2)                                          # (B, D, L)
        h = h + ref_swiglu(h, block.mix.gate_up, block.mix.down)
        if first_norm == "sequence":                                   # official: over L, per channel
            x = ref_rms_norm(h, eps).transpose(1, 2)
        else:                                                          # the per-token option
            x = ref_rms_norm(h.transpose(1, 2), eps)
    else:
        attn = ref_attention(x, block.mix.qkv.weight, block.mix.out.weight, cfg.num_heads, cos_sin)
        x = ref_rms_norm(x + attn, eps)
    return ref_rms_norm(x + ref_swiglu(x, block.mlp.gate_up.weight, block.mlp.down.weight), eps)


def ref_cos_sin_for(model: TRM):
    cfg = model.config
    if cfg.mlp_t or cfg.pos_encoding != "rope":
        return None
    return ref_cos_sin(cfg.total_len, cfg.hidden_size // cfg.num_heads, cfg.rope_theta)


def ref_supervision_step(model: TRM, inputs: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor):
    """The official inner forward: input embedding with the puzzle-embedding prefix, T cycles of
    (n updates of z_L, one of z_H), then the heads. Returns (z_H, z_L, logits, halting logit)."""
    cfg = model.config
    B, D, P = inputs.shape[0], cfg.hidden_size, cfg.n_prefix
    emb = F.embedding(inputs, model.embed.weight)                      # (B, seq_len, D)
    if P > 0:
        if cfg.prefix_learned == "first":   # puzzle_emb_ndim = D, zero-padded to puzzle_emb_len * D
            puzzle = F.pad(model.prefix[0].expand(B, D), (0, P * D - D)).view(B, P, D)
        else:
            puzzle = model.prefix.expand(B, P, D)
        emb = torch.cat((puzzle, emb), dim=1)
    if cfg.pos_encoding == "learned":
        emb = 0.707106781 * (emb + model.pos)
    x = math.sqrt(D) * emb
    cos_sin = ref_cos_sin_for(model)

    def net(h, injection):
        h = h + injection
        for block in model.net.blocks:
            h = ref_block(h, block, cfg, cos_sin, cfg.mlp_t_norm)
        return h

    for _ in range(cfg.T):
        for _ in range(cfg.n):
            z_L = net(z_L, z_H + x)
        z_H = net(z_H, z_L)
    logits = F.linear(z_H, model.output_head.weight)[:, P:]
    q = F.linear(z_H[:, 0], model.q_head.weight, model.q_head.bias)[..., 0]
    return z_H, z_L, logits, q


# -- the comparisons --------------------------------------------------------------------------------

VARIANTS = [dict(mlp_t=True, pos_encoding="none"), dict(mlp_t=True, pos_encoding="learned"),
            dict(mlp_t=False, pos_encoding="rope"), dict(mlp_t=False, pos_encoding="learned")]


def make_model(n_prefix: int, seed: int = 0, **overrides) -> TRM:
    cfg = TRMConfig(vocab_size=6, seq_len=16, hidden_size=32, num_heads=2, T=3, n=2, N_sup=4,
                    n_prefix=n_prefix, **overrides)
    torch.manual_seed(seed)
    model = TRM(cfg).eval()
    with torch.no_grad():  # make the zero-initialised parts matter
        model.prefix.normal_()
        model.q_head.weight.normal_(std=0.3)
    return model


@pytest.mark.parametrize("n_prefix", [1, 16])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{'mlp_t' if v['mlp_t'] else 'attn'}-{v['pos_encoding']}")
def test_one_block_matches_the_official_formula(variant, n_prefix):
    model = make_model(n_prefix, **variant)
    L, D = model.config.total_len, model.config.hidden_size
    h = torch.randn(3, L, D, generator=torch.Generator().manual_seed(1))   # (B, L, D)
    block = model.net.blocks[0]
    with torch.no_grad():
        ours = block(h.transpose(0, 1), model._rope()).transpose(0, 1)
        ref = ref_block(h, block, model.config, ref_cos_sin_for(model))
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("n_prefix", [1, 16])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{'mlp_t' if v['mlp_t'] else 'attn'}-{v['pos_encoding']}")
def test_supervision_steps_match_the_official_formula(variant, n_prefix):
    """Two supervision steps (T=3, n=2, the carry handed on): carry, logits and halting logit agree."""
    model = make_model(n_prefix, **variant)
    inputs = torch.randint(1, 6, (3, 16), generator=torch.Generator().manual_seed(2))
    carry = model.initial_carry(3)
    z_H, z_L = carry.y.transpose(0, 1), carry.z.transpose(0, 1)         # (B, L, D), official layout
    with torch.no_grad():
        for _ in range(2):
            carry, logits, q = model(inputs, carry)
            z_H, z_L, ref_logits, ref_q = ref_supervision_step(model, inputs, z_H, z_L)
            torch.testing.assert_close(carry.y.transpose(0, 1), z_H, **TOL)
            torch.testing.assert_close(carry.z.transpose(0, 1), z_L, **TOL)
            torch.testing.assert_close(logits, ref_logits, **TOL)
            torch.testing.assert_close(q, ref_q, **TOL)
    assert (q - model.q_head.bias).abs().max() > 0.1  # the halting logit reads the state, not just its bias


@pytest.mark.parametrize("n_prefix", [1, 16])
def test_all_prefix_learned_option_matches_its_reference(n_prefix):
    model = make_model(n_prefix, mlp_t=True, pos_encoding="none", prefix_learned="all")
    assert model.prefix.shape == (n_prefix, 32)
    inputs = torch.randint(1, 6, (3, 16), generator=torch.Generator().manual_seed(2))
    carry = model.initial_carry(3)
    with torch.no_grad():
        _, logits, q = model(inputs, carry)
        _, _, ref_logits, ref_q = ref_supervision_step(model, inputs, carry.y.transpose(0, 1), carry.z.transpose(0, 1))
    torch.testing.assert_close(logits, ref_logits, **TOL)
    torch.testing.assert_close(q, ref_q, **TOL)


def test_hidden_norm_option_is_the_per_token_norm_and_differs_from_the_official():
    model = make_model(16, mlp_t=True, pos_encoding="none", mlp_t_norm="hidden")
    h = torch.randn(3, model.config.total_len, 32, generator=torch.Generator().manual_seed(1))
    block = model.net.blocks[0]
    with torch.no_grad():
        ours = block(h.transpose(0, 1), None).transpose(0, 1)
        per_token = ref_block(h, block, model.config, None, first_norm="hidden")
        official = ref_block(h, block, model.config, None, first_norm="sequence")
    torch.testing.assert_close(ours, per_token, **TOL)
    assert (ours - official).abs().max() > 0.1


def test_the_carry_format_matches_the_official_one_after_transposition():
    """Sanity of the comparison itself: our (L, B, D) carry is the official (B, L, D) transposed."""
    model = make_model(16, mlp_t=True, pos_encoding="none")
    carry = model.initial_carry(2)
    assert isinstance(carry, Carry) and carry.y.shape == (16 + 16, 2, 32)
    assert torch.equal(carry.y.transpose(0, 1)[1, 5], model.y_init)
