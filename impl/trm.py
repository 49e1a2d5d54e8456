"""Tiny Recursive Model (TRM), after "Less is More: Recursive Reasoning with Tiny Networks"
(Jolicoeur-Martineau, 2025, arXiv 2510.04871) and its official code.

One tiny network f (a couple of post-norm blocks) is reused for two updates:

    repeat n times:  z <- f(x + y + z)      # latent reasoning state
    then once:       y <- f(y + z)          # current answer

That is one cycle. A supervision step runs T cycles, the first T-1 under torch.no_grad(), and
returns the carry (y, z) detached, so each supervision step back-propagates through exactly one
cycle (gradient="one_step": through its last z update and the y update only, HRM's approximation,
for the paper's ablation). Training repeats supervision steps (deep supervision, up to N_sup per puzzle), one
optimizer step each. The output head reads y; the halting (Q) head predicts from y whether the
current answer is entirely right.

Each block of f is post-norm: h = norm(h + mix(h)), then h = norm_D(h + SwiGLU(h)), where mix is
self-attention or, for TRM-MLP (mlp_t), a SwiGLU across the sequence. The norms are RMS norms
without weights, computed in fp32 and cast back (official rms_norm). norm is over D for attention;
for mlp_t it is over the L sequence positions, per hidden channel, as in the official code (which
transposes to (B, D, L) and normalises over the last axis); mlp_t_norm="hidden" keeps a per-token
norm over D instead, as an option.

The input is n_prefix prefix positions, then the puzzle cells. With prefix_learned="first" (the
official layout: puzzle_emb_len=16, puzzle_emb_ndim=D) only position 0 is a learned vector (zero
init; the official per-puzzle embedding) and the others are fixed zeros; with "all" every prefix
position is learned. The halting head reads position 0. With one puzzle identifier (Sudoku)
position 0 is one shared parameter, `prefix`. With several (ARC: one per augmented version of a
task), position 0 is the row of the example's identifier in `puzzle_emb` (PuzzleEmbedding), a
buffer trained sparsely by sign-SGD outside the main optimiser (sign_sgd.py), as official.

Initialisation follows the official code: a truncated normal whose realised standard deviation is
the requested one (trunc_normal_ below), LeCun-scaled for linear layers.

Shapes: B = batch, L = sequence (n_prefix + puzzle cells), D = hidden size, V = vocabulary.
Inside the model, states are laid out sequence-first, (L, B, D): the MLP across cells (mlp_t) is
then one plain matrix product over a (L, B*D) view, and its norm is over dim 0. The public inputs
and outputs are batch-first. The compute dtype follows the carry: a bf16 carry runs the network in
bf16 with fp32 weights cast at use (as the official code's forward_dtype); an fp32 carry runs in fp32.
Variants, each off by default: separate_nets gives the y update its own network (f_H, with f as
f_L for z: the paper's "separate f_H, f_L" ablation); single_z keeps one state s (official
trm_singlez: n updates s <- f(s + x), then s <- f(s), heads on s; carried where y is); z_slots=K
makes z K states z_1..z_K (official trm_hier6, K=6): the j-th z update of a cycle replaces
z_(j mod K) with f(z_1 + ... + z_K + x + y), and y <- f(y + z_1 + ... + z_K); the carry holds them
side by side, (L, B, K*D), each starting from its own random vector. The other
architectures on the same loop (arch: hrm, transformer) subclass TRM in hrm.py and transformer.py.
This file holds model code only: no I/O, no data, no training loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


ARCHS = ("trm", "hrm", "transformer")  # model.arch: the models that share this config, the loop and the heads


@dataclass
class TRMConfig:
    vocab_size: int = 11             # PAD, blank, digits (see data_sudoku.py)
    seq_len: int = 81                # puzzle cells, without the prefix tokens
    hidden_size: int = 128           # D (paper: 512)
    num_layers: int = 2              # blocks in the tiny network f (paper: 2)
    num_heads: int = 2               # attention heads (unused with mlp_t)
    expansion: float = 4.0           # SwiGLU width factor
    width_multiple: int = 256        # SwiGLU widths rounded up to a multiple of this (official 256; 1: exact)
    T: int = 3                       # T in paper (official: H_cycles); T-1 cycles run without grad
    gradient: str = "last_cycle"     # last_cycle (paper, official: through the last cycle's n + 1 calls of f) |
                                     # one_step (HRM's 1-step approximation: through the last z and y updates only)
    n: int = 6                       # n in paper (official: L_cycles); z updates per cycle
    N_sup: int = 16                  # N_sup in paper (official: halt_max_steps)
    halt_exploration_prob: float = 0.1  # chance a puzzle gets a random minimum number of steps
    pos_encoding: str = "rope"       # rope | learned | none
    mlp_t: bool = False              # MLP across the sequence instead of self-attention (TRM-MLP)
    mlp_t_norm: str = "sequence"     # mlp_t's first norm: sequence (official: over L, per channel) | hidden
    n_prefix: int = 1                # prefix positions (official: puzzle_emb_len, 16); the Q head reads the first
    prefix_learned: str = "first"    # first (official: position 0 learned, the rest zeros) | all (all learned)
    num_puzzle_identifiers: int = 1  # puzzle embeddings at position 0: 1 = one shared vector; more = a row each (ARC)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    arch: str = "trm"                # trm | hrm (impl/hrm.py) | transformer (impl/transformer.py)
    separate_nets: bool = False      # trm: a second network f_H for the y update (paper's ablation); f stays f_L for z
    single_z: bool = False           # trm: one latent state, no separate y (official trm_singlez), carried in y
    z_slots: int = 1                 # trm: z as this many states whose sum f reads (official trm_hier6: 6)
    H_layers: int = 0                # hrm: blocks in f_H (0: num_layers, the blocks of f_L)
    depth: int = 0                   # transformer: blocks of its one network (0: num_layers * T * (n + 1))

    def __post_init__(self) -> None:
        checks = [
            ("width_multiple", self.width_multiple >= 1, "must be >= 1"),
            ("vocab_size", self.vocab_size >= 2, "must be >= 2"),
            ("seq_len", self.seq_len >= 1, "must be >= 1"),
            ("hidden_size", self.hidden_size >= 1, "must be >= 1"),
            ("num_layers", self.num_layers >= 1, "must be >= 1"),
            ("num_heads", self.num_heads >= 1, "must be >= 1"),
            ("expansion", self.expansion > 0, "must be > 0"),
            ("T", self.T >= 1, "must be >= 1"),
            ("n", self.n >= 1, "must be >= 1"),
            ("gradient", self.gradient in ("last_cycle", "one_step"), "must be last_cycle or one_step"),
            ("N_sup", self.N_sup >= 1, "must be >= 1"),
            ("halt_exploration_prob", 0.0 <= self.halt_exploration_prob <= 1.0, "must be in [0, 1]"),
            ("pos_encoding", self.pos_encoding in ("rope", "learned", "none"), "must be rope, learned or none"),
            ("n_prefix", self.n_prefix >= 0, "must be >= 0"),
            ("mlp_t_norm", self.mlp_t_norm in ("sequence", "hidden"), "must be sequence or hidden"),
            ("prefix_learned", self.prefix_learned in ("first", "all"), "must be first or all"),
            ("num_puzzle_identifiers", self.num_puzzle_identifiers >= 1, "must be >= 1"),
            ("arch", self.arch in ARCHS, f"must be one of {', '.join(ARCHS)}"),
            ("H_layers", self.H_layers >= 0, "must be >= 0 (0: num_layers)"),
            ("depth", self.depth >= 0, "must be >= 0 (0: num_layers * T * (n + 1))"),
            ("separate_nets", not self.separate_nets or self.arch == "trm", f"is a trm option (model.arch is {self.arch!r})"),
            ("single_z", not self.single_z or self.arch == "trm", f"is a trm option (model.arch is {self.arch!r})"),
            ("single_z", not (self.single_z and self.separate_nets), "cannot be combined with model.separate_nets"),
            ("z_slots", self.z_slots >= 1, "must be >= 1 (1: the paper's single z)"),
            ("z_slots", self.z_slots == 1 or self.arch == "trm", f"is a trm option (model.arch is {self.arch!r})"),
            ("z_slots", self.z_slots == 1 or not self.single_z, "cannot be combined with model.single_z"),
        ]
        if self.num_puzzle_identifiers > 1:
            checks.append(("n_prefix", self.n_prefix >= 1,
                           f"must be >= 1: the {self.num_puzzle_identifiers} puzzle identifiers' embeddings go there"))
        if not self.mlp_t:
            checks.append(("hidden_size", self.hidden_size % self.num_heads == 0,
                           f"must be divisible by num_heads={self.num_heads}"))
            if self.pos_encoding == "rope":
                checks.append(("hidden_size", (self.hidden_size // self.num_heads) % 2 == 0,
                               "hidden_size / num_heads must be even for rope"))
        for key, ok, why in checks:
            if not ok:
                raise ValueError(f"model.{key}: {getattr(self, key)!r} {why}")

    @property
    def total_len(self) -> int:
        return self.n_prefix + self.seq_len

    @property
    def f_layers(self) -> int:
        """Blocks of the network self.net: f (trm), f_L (hrm), or the transformer's whole depth."""
        if self.arch == "transformer":
            return self.depth or self.num_layers * self.T * (self.n + 1)
        return self.num_layers


def swiglu_width(size: int, expansion: float, multiple: int = 256) -> int:
    """Hidden width of a SwiGLU layer: 2/3 * expansion * size, rounded up to a multiple of `multiple`
    (the official code: 256; at CPU sizes that pads a 37-cell mixer to 256 wide, and 1 keeps 99)."""
    width = round(expansion * size * 2 / 3)
    return -(width // -multiple) * multiple


def truncated_normal_std(bound: float = 2.0) -> float:
    """Standard deviation of a standard normal truncated to [-bound, bound] (about 0.8796 at 2)."""
    pdf = math.exp(-0.5 * bound ** 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))                             # P(|x| <= bound)
    return math.sqrt(1 - 2 * bound * pdf / mass)


def trunc_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """Fill tensor from a truncated normal whose realised standard deviation is std.

    As the official code (after JAX's truncated_normal): a standard normal truncated to
    [-bound, bound], drawn by inverting the CDF of a uniform draw, then scaled by
    std / truncated_normal_std(bound), so values lie within about +-2.27 std. torch's
    nn.init.trunc_normal_(std=s, a=-2s, b=2s) realises about 0.88 s.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        scale = std / truncated_normal_std(bound)
        edge = math.erf(bound / math.sqrt(2))                          # erf(x / sqrt2) = 2 Phi(x) - 1
        tensor.uniform_(-edge, edge).erfinv_().mul_(math.sqrt(2) * scale)  # N(0, 1) within +-bound, scaled
        return tensor.clamp_(-bound * scale, bound * scale)            # guards the rounding at the edges


def rms_norm(h: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """RMS norm without weight over one dimension, computed in fp32 and cast back (official rms_norm)."""
    h32 = h.float()
    if dim in (-1, h.dim() - 1):
        return F.rms_norm(h32, (h.shape[-1],), eps=eps).to(h.dtype)
    return (h32 * torch.rsqrt(h32.square().mean(dim, keepdim=True) + eps)).to(h.dtype)


class CastedLinear(nn.Linear):
    """nn.Linear whose weights are cast to the input's dtype (fp32 master weights, bf16 compute)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(h.dtype)
        return F.linear(h, self.weight.to(h.dtype), bias)


# ----------------------------------------------------------------------------------------------
# Building blocks


class SwiGLU(nn.Module):
    """Feed-forward over the hidden dimension: down(silu(gate(h)) * up(h)), gate and up fused."""

    def __init__(self, dim: int, expansion: float, multiple: int = 256) -> None:
        super().__init__()
        width = swiglu_width(dim, expansion, multiple)
        self.gate_up = CastedLinear(dim, 2 * width, bias=False)
        self.down = CastedLinear(width, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class SequenceMLP(nn.Module):
    """mlp_t: a SwiGLU across the sequence (mixes cells, shared over the hidden dimension).

    The official code transposes (B, L, D) -> (B, D, L) and applies a SwiGLU over L; with the
    sequence-first layout the same map is one matrix product from the left, with no transposes.
    Its width follows from L = n_prefix + seq_len (swiglu_width: 512 at 9x9 with 16 prefix positions).
    """

    def __init__(self, length: int, expansion: float, multiple: int = 256) -> None:
        super().__init__()
        width = swiglu_width(length, expansion, multiple)
        self.width = width
        self.gate_up = nn.Parameter(torch.empty(2 * width, length))  # like nn.Linear(L, 2W).weight
        self.down = nn.Parameter(torch.empty(length, width))          # like nn.Linear(W, L).weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        L, B, D = h.shape
        gate_up = self.gate_up.to(h.dtype) @ h.reshape(L, B * D)      # (2W, L) @ (L, B*D) -> (2W, B*D)
        gate, up = gate_up.split(self.width, dim=0)
        out = self.down.to(h.dtype) @ (F.silu(gate) * up)             # (L, W) @ (W, B*D) -> (L, B*D)
        return out.view(L, B, D)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal attention over (B, H, L, hd). PyTorch's scaled_dot_product_attention, except on
    CPU, where explicit matrix products with an fp32 softmax measured faster at these short
    lengths (its bf16 backward was about 6x slower at L=37)."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)      # (B, H, L, L)
    return torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v


class Attention(nn.Module):
    """Non-causal multi-head self-attention with a fused qkv projection and optional RoPE."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = CastedLinear(dim, 3 * dim, bias=False)
        self.out = CastedLinear(dim, dim, bias=False)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        L, B, D = h.shape
        qkv = rearrange(self.qkv(h), "l b (three h d) -> three b h l d", three=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)                                      # each (B, H, L, hd)
        if rope is not None:
            cos, sin = (t.to(q.dtype) for t in rope)                 # each (L, hd)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        o = attention(q, k, v)                                       # (B, H, L, hd)
        return self.out(rearrange(o, "b h l d -> l b (h d)"))


class Block(nn.Module):
    """Post-norm block: h = norm(h + mix(h)); h = norm_D(h + swiglu(h)), norms without weights.

    The first norm is over D for attention; for mlp_t it is over the sequence (dim 0 of (L, B, D):
    all L positions, prefix included, per channel), as the official block, unless mlp_t_norm="hidden".
    """

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.mix_norm_dim = 0 if config.mlp_t and config.mlp_t_norm == "sequence" else -1
        if config.mlp_t:
            self.mix = SequenceMLP(config.total_len, config.expansion, config.width_multiple)
        else:
            self.mix = Attention(config.hidden_size, config.num_heads)
        self.mlp = SwiGLU(config.hidden_size, config.expansion, config.width_multiple)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        mixed = self.mix(h) if isinstance(self.mix, SequenceMLP) else self.mix(h, rope)
        h = rms_norm(h + mixed, self.mix_norm_dim, self.eps)
        return rms_norm(h + self.mlp(h), -1, self.eps)


class TinyNetwork(nn.Module):
    """f in the paper: f(state, injection) = blocks(state + injection); injection None: blocks(state)."""

    def __init__(self, config: TRMConfig, num_layers: int | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(num_layers or config.num_layers))

    def forward(self, state: torch.Tensor, injection: torch.Tensor | None,
                rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        h = state if injection is None else state + injection
        for block in self.blocks:
            h = block(h, rope)
        return h


class PuzzleEmbedding(nn.Module):
    """One vector per puzzle identifier (official CastedSparseEmbedding, zero init), read at prefix
    position 0. The table is a buffer, not a parameter: the main optimiser, the EMA and DDP's
    gradient averaging never see it (at ARC scale it holds about 10^6 rows). In a training forward
    with gradient, the rows of the batch are copied out as a leaf tensor that collects their
    gradient, and recorded in `looked_up`; sign_sgd.SparseSignSGD updates those rows only."""

    def __init__(self, num_identifiers: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_identifiers, dim))
        self.looked_up: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows (B, D) with .grad, ids (B,))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B,) identifiers -> (B, D) rows."""
        rows = self.weight[ids]                                         # a copy (advanced indexing)
        if self.training and torch.is_grad_enabled():
            rows.requires_grad_(True)
            self.looked_up.append((rows, ids))
        return rows


# ----------------------------------------------------------------------------------------------
# The model


@dataclass
class Carry:
    """The recurrent state handed from one supervision step to the next: y (answer), z (latent)."""
    y: torch.Tensor  # (L, B, D), sequence-first
    z: torch.Tensor  # (L, B, D)


@dataclass
class Prediction:
    answers: torch.Tensor           # (B, seq_len) predicted tokens at each puzzle's final step
    steps: torch.Tensor             # (B,) supervision steps used
    confidence: torch.Tensor        # (B,) sigmoid of the halting logit at the final step
    per_step: torch.Tensor | None   # (K, B, seq_len) answers after every step, when asked for
    per_step_confidence: torch.Tensor | None  # (K, B)
    per_step_logit: torch.Tensor | None = None  # (K, B) halting logit after every step, when asked for
    logit: torch.Tensor | None = None         # (B,) halting logit at the final step
    first_halt: torch.Tensor | None = None    # (B,) first step whose halting logit is > 0 (0: none)
    halt_answers: torch.Tensor | None = None  # (B, seq_len) the answer at that step (no halt: the final answer)


class TRM(nn.Module):
    q_outputs = 1  # outputs of the Q head: the halting logit

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.embed_scale = math.sqrt(D)
        self.embed = nn.Embedding(config.vocab_size, D)
        # Learned prefix positions (official: the puzzle embedding, zero init); with "first" the
        # other n_prefix - 1 positions are fixed zeros, added in input_embedding. With several
        # puzzle identifiers, position 0 comes from puzzle_emb, and prefix holds the shared rest ("all").
        n_learned = config.n_prefix if config.prefix_learned == "all" else min(config.n_prefix, 1)
        self.puzzle_emb = None
        if config.num_puzzle_identifiers > 1:
            self.puzzle_emb = PuzzleEmbedding(config.num_puzzle_identifiers, D)
            n_learned -= 1
        self.prefix = nn.Parameter(torch.zeros(n_learned, D)) if self.puzzle_emb is None or n_learned else None
        self.pos = nn.Parameter(torch.empty(config.total_len, D)) if config.pos_encoding == "learned" else None
        if config.pos_encoding == "rope" and not config.mlp_t:
            head_dim = D // config.num_heads
            inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
            angles = torch.outer(torch.arange(config.total_len, dtype=torch.float32), inv_freq)
            angles = torch.cat((angles, angles), dim=-1)                 # (L, hd)
            self.register_buffer("rope_cos", angles.cos(), persistent=False)
            self.register_buffer("rope_sin", angles.sin(), persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        self.net = TinyNetwork(config, config.f_layers)                # f, shared by both updates (f_L with separate_nets)
        self.net_y = TinyNetwork(config) if config.separate_nets else None  # f_H: the y update, with separate_nets
        self.output_head = CastedLinear(D, config.vocab_size, bias=False)
        self.q_head = CastedLinear(D, self.q_outputs)                   # halting logit (hrm, transformer: halt, continue)
        # y_init and z_init: fixed random vectors, as in the official code (H_init, L_init; with
        # z_slots, one per state, side by side: trm_hier6's L1_init..L6_init).
        self.register_buffer("y_init", torch.empty(D))
        self.register_buffer("z_init", torch.empty(config.z_slots * D))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """All initialisation in one place: truncated normal with the official std correction,
        LeCun-scaled (std 1/sqrt(fan_in)) for linear layers, as in the official code."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
            elif isinstance(module, SequenceMLP):
                trunc_normal_(module.gate_up, std=1.0 / math.sqrt(module.gate_up.shape[1]))
                trunc_normal_(module.down, std=1.0 / math.sqrt(module.down.shape[1]))
        trunc_normal_(self.embed.weight, std=1.0 / self.embed_scale)  # times embed_scale -> unit scale
        if self.pos is not None:
            trunc_normal_(self.pos, std=1.0 / self.embed_scale)
        if self.prefix is not None:
            self.prefix.zero_()
        if self.puzzle_emb is not None:
            self.puzzle_emb.weight.zero_()                                # zero init (official)
        trunc_normal_(self.y_init, std=1.0)
        trunc_normal_(self.z_init, std=1.0)
        # Special case: the halting head starts at "never halt" (weight 0, bias -5), so early
        # training runs all N_sup steps until the head has learned something (official code).
        self.q_head.weight.zero_()
        self.q_head.bias.fill_(-5.0)

    # -- pieces of one supervision step -----------------------------------------------------------

    def input_embedding(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, seq_len) tokens and (B,) puzzle identifiers (None: all 0) -> (L, B, D) with the
        prefix positions in front."""
        B = inputs.shape[0]
        tokens = self.embed(inputs.t())                                 # (seq_len, B, D)
        prefix = []
        if self.puzzle_emb is not None:                                 # position 0: each example's puzzle
            ids = puzzle_ids if puzzle_ids is not None else inputs.new_zeros(B)
            prefix.append(self.puzzle_emb(ids)[None])                   # (1, B, D)
        if self.prefix is not None:
            prefix.append(self.prefix[:, None].expand(-1, B, -1))       # (n_learned, B, D)
        fixed = tokens.new_zeros(self.config.n_prefix - sum(len(p) for p in prefix), B, tokens.shape[-1])
        x = torch.cat((*prefix, fixed, tokens), dim=0)                  # (L, B, D)
        if self.pos is not None:
            x = 0.707106781 * (x + self.pos[:, None])                  # keep unit variance
        return self.embed_scale * x

    def initial_carry(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> Carry:
        """y_init and z_init broadcast to (L, B, D) (z: (L, B, z_slots * D)); dtype is the compute
        dtype of the recursion."""
        L, D = self.config.total_len, self.config.hidden_size
        y = self.y_init.to(device=device, dtype=dtype).expand(L, batch_size, D).clone()
        z = self.z_init.to(device=device, dtype=dtype).expand(L, batch_size, len(self.z_init)).clone()
        return Carry(y, z)

    def reset_carry(self, carry: Carry, reset: torch.Tensor) -> Carry:
        """Put y_init / z_init into the puzzles (batch entries) where reset (B,) is true."""
        mask = reset.view(1, -1, 1)
        return Carry(torch.where(mask, self.y_init.to(carry.y.dtype), carry.y),
                     torch.where(mask, self.z_init.to(carry.z.dtype), carry.z))

    def _rope(self):
        return None if self.rope_cos is None else (self.rope_cos, self.rope_sin)

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One cycle: n latent updates z <- f(x + y + z), then one answer update y <- f(y + z)."""
        rope = self._rope()
        xy = x + y                                                      # fixed during the n updates
        for j in range(self.config.n):
            z = self.z_update(z, xy, rope, j)
        return self.y_update(y, z, rope), z

    def z_update(self, z: torch.Tensor, xy: torch.Tensor, rope, j: int) -> torch.Tensor:
        """The j-th latent update of a cycle, z <- f(z + x + y); with z_slots=K, the state
        z_(j mod K) <- f(z_1 + ... + z_K + x + y), the others kept."""
        K = self.config.z_slots
        if K == 1:
            return self.net(z, xy, rope)
        states = list(z.chunk(K, dim=-1))
        states[j % K] = self.net(self.z_total(z), xy, rope)
        return torch.cat(states, dim=-1)

    def z_total(self, z: torch.Tensor) -> torch.Tensor:
        """What f reads of z: z itself, or with z_slots the sum of the states, left to right (official)."""
        if self.config.z_slots == 1:
            return z
        states = z.chunk(self.config.z_slots, dim=-1)
        total = states[0]
        for state in states[1:]:
            total = total + state
        return total

    def y_update(self, y: torch.Tensor, z: torch.Tensor, rope) -> torch.Tensor:
        """The answer update y <- f(y + z), by f_H with separate_nets."""
        return (self.net if self.net_y is None else self.net_y)(y, self.z_total(z), rope)

    def single_recursion(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """One cycle with a single latent s (single_z): n updates s <- f(s + x), then s <- f(s)."""
        rope = self._rope()
        for _ in range(self.config.n):
            s = self.net(s, x, rope)
        return self.net(s, None, rope)

    def heads(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output logits (B, seq_len, V) and halting logit (B,) from the answer state y (L, B, D)."""
        p = self.config.n_prefix
        logits = self.output_head(y[p:]).transpose(0, 1)               # (B, seq_len, V)
        q_in = y[0] if p > 0 else y.mean(dim=0)  # deviation when n_prefix=0: mean over cells
        return logits, self.q_head(q_in).squeeze(-1).float()

    def deep_recursion(self, inputs: torch.Tensor, carry: Carry,
                       puzzle_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """T cycles from the carry; returns (y, z) after the last one, the only one with gradient."""
        y, z = carry.y, carry.z
        x = self.input_embedding(inputs, puzzle_ids).to(y.dtype)
        if self.config.single_z:                                        # one state, in y's place; z stays as it is
            return self.deep_single(x, y), z
        with torch.no_grad():                                           # T-1 cycles without gradient
            for _ in range(self.config.T - 1):
                y, z = self.latent_recursion(x, y, z)
            if self.config.gradient == "one_step":                      # and the last cycle's first n-1 z updates
                rope, xy = self._rope(), x + y
                for j in range(self.config.n - 1):
                    z = self.z_update(z, xy, rope, j)
        if self.config.gradient == "one_step":
            rope = self._rope()
            z = self.z_update(z, x + y, rope, self.config.n - 1)
            return self.y_update(y, z, rope), z
        return self.latent_recursion(x, y, z)                           # the last cycle carries gradient

    def deep_single(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """deep_recursion with one latent (single_z): T cycles, gradient through the last one (or,
        one_step, through its last s <- f(s + x) and the final s <- f(s))."""
        rope = self._rope()
        with torch.no_grad():
            for _ in range(self.config.T - 1):
                s = self.single_recursion(x, s)
            if self.config.gradient == "one_step":
                for _ in range(self.config.n - 1):
                    s = self.net(s, x, rope)
        if self.config.gradient == "one_step":
            return self.net(self.net(s, x, rope), None, rope)
        return self.single_recursion(x, s)

    def forward(self, inputs: torch.Tensor, carry: Carry,
                puzzle_ids: torch.Tensor | None = None) -> tuple[Carry, torch.Tensor, torch.Tensor]:
        """One supervision step: deep recursion, then the heads. puzzle_ids (B,): each example's
        puzzle identifier (None: all 0; ignored with one identifier).

        Returns the new carry (detached), output logits (B, seq_len, V) and the halting logit (B,).
        """
        y, z = self.deep_recursion(inputs, carry, puzzle_ids)
        logits, q_logit = self.heads(y)
        return Carry(y.detach(), z.detach()), logits, q_logit

    # -- inference ----------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, N_sup: int | None = None, halt: bool = False,
                keep_steps: bool = False, dtype: torch.dtype = torch.float32, stop_unchanged: int = 0,
                puzzle_ids: torch.Tensor | None = None, noise: float = 0.0,
                noise_generators: list[torch.Generator] | None = None) -> Prediction:
        """Run up to N_sup supervision steps on puzzles (B, seq_len) with puzzle identifiers (B,)
        (None: all 0).

        halt=False runs every puzzle for N_sup steps (as the official evaluation does); halt=True
        freezes a puzzle's answer at the first step where the halting head says "correct"
        (logit > 0). stop_unchanged=k freezes a puzzle once its answer has not changed for k steps
        (a cheaper evaluation). With halt or stop_unchanged, later steps run on the puzzles not yet
        frozen alone, and the batch ends when every puzzle is frozen. keep_steps=True also
        returns the answer after every step (and runs all N_sup steps).

        noise=sigma > 0 adds Gaussian noise of scale sigma to the latent z before every supervision
        step (each deep recursion), as Probabilistic TRM (arXiv 2605.19943) does to explore several
        trajectories; sigma = 0 draws nothing and is the deterministic prediction. With
        noise_generators [g_1..g_M] the batch is M equal blocks of rows, block m drawing its noise
        from g_m, so a block run alone with its generator gets the same noise.
        """
        steps_max = N_sup or self.config.N_sup
        B = inputs.shape[0]
        device = inputs.device
        carry = self.initial_carry(B, device, dtype)
        answers = torch.zeros_like(inputs)
        steps = torch.zeros(B, dtype=torch.long, device=device)
        confidence = torch.zeros(B, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        unchanged = torch.zeros(B, dtype=torch.long, device=device)  # steps the answer has not changed
        logit = torch.zeros(B, device=device)
        first_halt = torch.zeros(B, dtype=torch.long, device=device)
        halt_answers = torch.zeros_like(inputs)
        history, history_conf, history_logit = [], [], []
        # A frozen puzzle's answer can no longer change: later steps run on the live puzzles alone.
        compact = (halt or stop_unchanged > 0) and not keep_steps and noise == 0
        for step in range(1, steps_max + 1):
            if noise > 0:
                carry = Carry(carry.y, carry.z + self.latent_noise(carry.z, noise, noise_generators))
            rows = (~done).nonzero().squeeze(1) if compact and bool(done.any()) else None
            ids = puzzle_ids if rows is None or puzzle_ids is None else puzzle_ids[rows]
            extra = {} if ids is None else {"puzzle_ids": ids}  # subclasses may take (inputs, carry) only
            if rows is None:
                carry, logits, q_logit = self(inputs, carry, **extra)
                current = logits.argmax(dim=-1)
            else:
                part, logits, q_part = self(inputs[rows], Carry(carry.y[:, rows], carry.z[:, rows]), **extra)
                carry = Carry(carry.y.index_copy(1, rows, part.y), carry.z.index_copy(1, rows, part.z))
                current = answers.index_copy(0, rows, logits.argmax(dim=-1))
                q_logit = logit.index_copy(0, rows, q_part.float())
            prob = torch.sigmoid(q_logit.float())
            live = ~done
            if stop_unchanged and step > 1:
                unchanged = torch.where((current == answers).all(dim=1), unchanged + 1, 0)
            answers = torch.where(live[:, None], current, answers)
            confidence = torch.where(live, prob, confidence)
            logit = torch.where(live, q_logit.float(), logit)
            steps = torch.where(live, step, steps)
            first = live & (first_halt == 0) & (q_logit > 0)
            first_halt = torch.where(first, step, first_halt)
            halt_answers = torch.where(first[:, None], current, halt_answers)
            if keep_steps:
                history.append(current)
                history_conf.append(prob)
                history_logit.append(q_logit.float())
            if halt:
                done = done | (q_logit > 0)
            if stop_unchanged:
                done = done | (unchanged >= stop_unchanged)
            if (halt or stop_unchanged) and bool(done.all()) and not keep_steps:
                break
        return Prediction(
            answers=answers, steps=steps, confidence=confidence,
            per_step=torch.stack(history) if keep_steps else None,
            per_step_confidence=torch.stack(history_conf) if keep_steps else None,
            per_step_logit=torch.stack(history_logit) if keep_steps else None,
            logit=logit, first_halt=first_halt,
            halt_answers=torch.where((first_halt > 0)[:, None], halt_answers, answers),
        )

    @staticmethod
    def latent_noise(z: torch.Tensor, sigma: float, generators: list[torch.Generator] | None) -> torch.Tensor:
        """sigma * N(0, 1) shaped like z (L, B, D): one draw, or with M generators one draw of
        (L, B/M, D) each, laid side by side along the batch."""
        if not generators:
            return (sigma * torch.randn(z.shape, device=z.device)).to(z.dtype)
        L, B, D = z.shape
        if B % len(generators):
            raise ValueError(f"noise_generators: {len(generators)} generators do not split a batch of {B} rows evenly")
        parts = [torch.randn((L, B // len(generators), D), generator=g, device=z.device) for g in generators]
        return (sigma * torch.cat(parts, dim=1)).to(z.dtype)


# ----------------------------------------------------------------------------------------------
# Losses


IGNORE_LABEL = -100  # label of a position without a target (padding); torch's cross-entropy default


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy with stable-max in place of softmax (official code, from "Grokking at the
    edge of numerical stability"): s(x) = x + 1 for x >= 0, 1 / (1 - x) otherwise. Per-element
    loss, 0 where the label is IGNORE_LABEL."""
    logits = logits.double()
    # The negative branch sees min(x, 0): torch.where back-propagates 0 x d/dx of the branch it did not
    # take, and 1/(1-x) has a pole at x = 1, which bf16 logits hit exactly (0 x inf = NaN). The
    # official code adds 1e-30 inside for the same reason; values are the same either way.
    s = torch.where(logits < 0, 1.0 / (1.0 - logits.clamp(max=0.0)), logits + 1.0)
    logprobs = torch.log(s / s.sum(dim=-1, keepdim=True))
    valid = labels != IGNORE_LABEL
    picked = logprobs.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0.0).float()


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ordinary cross entropy, per element, computed in fp32; 0 where the label is IGNORE_LABEL."""
    return F.cross_entropy(logits.float().transpose(1, 2), labels.long(), reduction="none",
                           ignore_index=IGNORE_LABEL)


LOSSES = {"softmax": softmax_cross_entropy, "stablemax": stablemax_cross_entropy}


@dataclass
class StepLoss:
    loss: torch.Tensor      # total: ce + halt_weight * halt
    ce: torch.Tensor        # cross entropy, per puzzle over its positions with a target, averaged
    halt: torch.Tensor      # halting BCE against "the whole answer is right"
    token_acc: torch.Tensor  # (B,) fraction of target positions right (no gradient)
    solved: torch.Tensor    # (B,) bool: every target position right (the halting target)


def trm_loss(logits: torch.Tensor, q_logit: torch.Tensor, labels: torch.Tensor, loss: str = "softmax",
             halt_weight: float = 0.5) -> StepLoss:
    """The loss of one supervision step, as the official code computes it: the cross entropy is
    normalised per puzzle by its number of target positions (labels != IGNORE_LABEL) and averaged
    over puzzles; the halting head's BCE has as target whether the whole answer is right."""
    valid = labels != IGNORE_LABEL                                      # (B, seq_len)
    count = valid.sum(dim=1).clamp_min(1)
    ce = (LOSSES[loss](logits, labels).sum(dim=1) / count).mean()
    with torch.no_grad():
        hits = (logits.argmax(dim=-1) == labels) & valid
        solved = hits.sum(dim=1) == valid.sum(dim=1)
        token_acc = hits.sum(dim=1) / count
    halt = F.binary_cross_entropy_with_logits(q_logit, solved.float())
    return StepLoss(ce + halt_weight * halt, ce, halt, token_acc, solved)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
