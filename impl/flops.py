"""Model FLOPs of a TRM (or of the other model.arch choices) from its shapes alone: what a
supervision step costs, for benchmarks (model FLOP utilisation) and for studies that give every
run the same compute budget."""
from __future__ import annotations

from arch import model_class
from hrm import HRM, QLearningModel
from transformer import DirectTransformer
from trm import TRMConfig, swiglu_width
from trm_variants import SeparateNets


def block_flops(cfg: TRMConfig, batch: int) -> int:
    """One post-norm block: the mixer (attention: qkv, scores, weighted sum, output projection;
    mlp_t: gate+up and down across the sequence) plus the SwiGLU over the hidden dimension."""
    L, B, D = cfg.total_len, batch, cfg.hidden_size
    W = swiglu_width(D, cfg.expansion, cfg.width_multiple)
    tokens = L * B
    if cfg.mlp_t:
        Wt = swiglu_width(L, cfg.expansion, cfg.width_multiple)
        mixer = 2 * (2 * Wt) * L * (B * D) + 2 * L * Wt * (B * D)
    else:
        mixer = 2 * tokens * D * 3 * D + 2 * tokens * D * D + 2 * 2 * B * L * L * D
    ffn = 2 * tokens * D * 2 * W + 2 * tokens * W * D
    return mixer + ffn


def model_kind(cfg: TRMConfig) -> str:
    """How the model of cfg.arch spends compute: "hrm", "transformer", "separate_nets" (two networks
    of num_layers) or "trm"; a variant in a model_X.py counts as the built-in class it extends."""
    cls = model_class(cfg.arch)
    for kind, base in (("hrm", HRM), ("transformer", DirectTransformer), ("separate_nets", SeparateNets)):
        if issubclass(cls, base):
            return kind
    return "trm"


def block_calls(cfg: TRMConfig) -> tuple[int, int]:
    """Blocks run forward, and blocks back-propagated, in one supervision step.

    trm: T*(n+1) calls of f (num_layers blocks each), the last cycle's n+1 back-propagated (one_step:
    its last two); separate_nets, single_z and z_slots make as many calls. hrm: T*n calls of f_L and T of f_H,
    the last of each back-propagated. transformer: one pass of its depth blocks, all back-propagated.
    """
    T, n, layers = cfg.T, cfg.n, cfg.num_layers
    kind = model_kind(cfg)
    if kind == "hrm":
        h_layers = cfg.H_layers or layers  # an HRMConfig
        return T * n * layers + T * h_layers, layers + h_layers
    if kind == "transformer":
        return cfg.f_layers, cfg.f_layers
    backward_calls = 2 if cfg.gradient == "one_step" else n + 1
    return T * (n + 1) * layers, backward_calls * layers


def model_flops(cfg: TRMConfig, batch: int) -> dict:
    """FLOPs of one supervision step, counting matrix products only (2 FLOPs per multiply-add).

    forward: the step's blocks and heads; train adds the backward of the blocks with gradient and of
    the heads, at twice the forward cost (input and weight gradients), and, for the Q-learning
    archs (hrm, transformer), the extra forward that computes the continue head's target.
    Elementwise work (norms, activations, rotary) is left out, as is usual for MFU.
    """
    per_block = block_flops(cfg, batch)
    forward_blocks, backward_blocks = block_calls(cfg)
    cls = model_class(cfg.arch)
    heads = 2 * batch * cfg.seq_len * cfg.hidden_size * cfg.vocab_size + 2 * batch * cfg.hidden_size * cls.q_outputs
    forward = forward_blocks * per_block + heads
    train = forward + 2 * (backward_blocks * per_block + heads)
    if issubclass(cls, QLearningModel):
        train += forward                                                # the bootstrapped Q target
    return {"forward": forward, "train": train, "per_f_call": cfg.num_layers * per_block}
