"""Model FLOPs of a TRM from its shapes alone: what a supervision step costs, for benchmarks
(model FLOP utilisation) and for studies that give every run the same compute budget."""
from __future__ import annotations

from trm import TRMConfig, swiglu_width


def model_flops(cfg: TRMConfig, batch: int) -> dict:
    """FLOPs of one supervision step, counting matrix products only (2 FLOPs per multiply-add).

    One call of f runs num_layers blocks; a block is the mixer (attention: qkv, scores, weighted
    sum, output projection; mlp_t: gate+up and down across the sequence) plus the SwiGLU over the
    hidden dimension. A supervision step calls f T*(n+1) times forward; the last cycle's n+1
    calls are also back-propagated, at twice the forward cost (input and weight gradients); with
    gradient="one_step" only its last two.
    Elementwise work (norms, activations, rotary) is left out, as is usual for MFU.
    """
    L, B, D = cfg.total_len, batch, cfg.hidden_size
    W = swiglu_width(D, cfg.expansion, cfg.width_multiple)
    tokens = L * B
    if cfg.mlp_t:
        Wt = swiglu_width(L, cfg.expansion, cfg.width_multiple)
        mixer = 2 * (2 * Wt) * L * (B * D) + 2 * L * Wt * (B * D)
    else:
        mixer = 2 * tokens * D * 3 * D + 2 * tokens * D * D + 2 * 2 * B * L * L * D
    ffn = 2 * tokens * D * 2 * W + 2 * tokens * W * D
    per_call = cfg.num_layers * (mixer + ffn)
    heads = 2 * B * cfg.seq_len * D * cfg.vocab_size + 2 * B * D
    forward = cfg.T * (cfg.n + 1) * per_call + heads
    backward_calls = 2 if cfg.gradient == "one_step" else cfg.n + 1
    train = forward + 2 * (backward_calls * per_call + heads)
    return {"forward": forward, "train": train, "per_f_call": per_call}
