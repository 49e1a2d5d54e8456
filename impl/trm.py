"""Tiny Recursive Model (TRM), after "Less is More: Recursive Reasoning with Tiny Networks"
(Jolicoeur-Martineau, 2025, arXiv 2510.04871) and its official code. Model code only: no I/O.

One tiny network f (a couple of post-norm blocks) is reused for two updates:

    repeat n times:  z <- f(x + y + z)      # latent reasoning state
    then once:       y <- f(y + z)          # current answer

That is one cycle (latent_recursion). A supervision step (deep_recursion) runs T cycles, the first
T-1 under torch.no_grad(), and hands on the carry (y, z) detached; training takes up to N_sup
supervision steps per puzzle (deep supervision). The halting head predicts "y is right".

Shapes: B batch, L = n_prefix + cells, D hidden size, V vocabulary; states are sequence-first,
(L, B, D). The compute dtype follows the carry. Variants: subclasses chosen by model.arch (arch.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class TRMConfig:
    vocab_size: int = 11             # PAD, blank, digits (see data_sudoku.py)
    seq_len: int = 81                # puzzle cells, without the prefix positions
    hidden_size: int = 128           # D (paper: 512)
    num_layers: int = 2              # blocks in the tiny network f (paper: 2)
    num_heads: int = 2               # attention heads (unused with mlp_t)
    expansion: float = 4.0           # SwiGLU width factor
    width_multiple: int = 256        # SwiGLU widths rounded up to a multiple of this (official 256; 1: exact)
    T: int = 3                       # T in paper (official: H_cycles); T-1 cycles run without grad
    n: int = 6                       # n in paper (official: L_cycles); z updates per cycle
    gradient: str = "last_cycle"     # last_cycle (paper; what TRM does) | one_step (arch.build_model: trm_variants.py)
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
    arch: str = "trm"                # the model class; arch.model_config checks every value of this config

    @property
    def total_len(self) -> int:
        return self.n_prefix + self.seq_len

    @property
    def f_layers(self) -> int:  # blocks of self.net (a variant's config may say otherwise)
        return self.num_layers


def swiglu_width(size: int, expansion: float, multiple: int = 256) -> int:
    """Hidden width of a SwiGLU layer: 2/3 * expansion * size, rounded up to a multiple (official 256)."""
    width = round(expansion * size * 2 / 3)
    return -(width // -multiple) * multiple


def truncated_normal_std(bound: float = 2.0) -> float:
    """Standard deviation of a standard normal truncated to [-bound, bound] (about 0.8796 at 2)."""
    pdf = math.exp(-0.5 * bound ** 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1 - 2 * bound * pdf / math.erf(bound / math.sqrt(2)))


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float, bound: float = 2.0) -> torch.Tensor:
    """Fill tensor from a normal truncated to [-bound, bound] and rescaled so that its realised std
    is std (official, after JAX's truncated_normal; torch's trunc_normal_ realises about 0.88 std)."""
    scale = std / truncated_normal_std(bound)
    edge = math.erf(bound / math.sqrt(2))                              # erf(x / sqrt2) = 2 Phi(x) - 1
    tensor.uniform_(-edge, edge).erfinv_().mul_(math.sqrt(2) * scale)  # inverse CDF: N(0, 1) within +-bound
    return tensor.clamp_(-bound * scale, bound * scale)                # guards the rounding at the edges


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
    """mlp_t: a SwiGLU across the sequence, shared over D (official: over L of a (B, D, L) transpose)."""

    def __init__(self, length: int, expansion: float, multiple: int = 256) -> None:
        super().__init__()
        self.width = swiglu_width(length, expansion, multiple)
        self.gate_up = nn.Parameter(torch.empty(2 * self.width, length))  # like nn.Linear(L, 2W).weight
        self.down = nn.Parameter(torch.empty(length, self.width))         # like nn.Linear(W, L).weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        L, B, D = h.shape
        gate_up = self.gate_up.to(h.dtype) @ h.reshape(L, B * D)      # (2W, L) @ (L, B*D) -> (2W, B*D)
        gate, up = gate_up.split(self.width, dim=0)
        out = self.down.to(h.dtype) @ (F.silu(gate) * up)             # (L, W) @ (W, B*D) -> (L, B*D)
        return out.view(L, B, D)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """Non-causal multi-head self-attention with a fused qkv projection and optional RoPE."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = CastedLinear(dim, 3 * dim, bias=False)
        self.out = CastedLinear(dim, dim, bias=False)

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        qkv = rearrange(self.qkv(h), "l b (three h d) -> three b h l d", three=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)                                      # each (B, H, L, hd)
        if rope is not None:
            cos, sin = (t.to(q.dtype) for t in rope)                 # each (L, hd)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        if q.device.type != "cpu":
            o = F.scaled_dot_product_attention(q, k, v)             # (B, H, L, hd)
        else:  # explicit products with an fp32 softmax measured faster on CPU at these short lengths
            scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)  # (B, H, L, L)
            o = torch.softmax(scores.float(), dim=-1).to(v.dtype) @ v
        return self.out(rearrange(o, "b h l d -> l b (h d)"))


class Block(nn.Module):
    """Post-norm block: h = norm(h + mix(h)); h = norm_D(h + swiglu(h)), RMS norms without weights.
    The first norm is over D for attention, over the L positions per channel for mlp_t (official)."""

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
    """One vector per puzzle identifier (official CastedSparseEmbedding), a buffer the optimizer and EMA
    never see: a training forward lists the batch's rows in `looked_up` for sign_sgd.SparseSignSGD."""

    def __init__(self, num_identifiers: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_identifiers, dim))
        self.looked_up: list[tuple[torch.Tensor, torch.Tensor]] = []  # (rows (B, D) with .grad, ids (B,))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight[ids]                                         # (B, D), a copy (advanced indexing)
        if self.training and torch.is_grad_enabled():
            rows.requires_grad_(True)
            self.looked_up.append((rows, ids))
        return rows


@dataclass
class Carry:
    """The recurrent state handed from one supervision step to the next: y (answer), z (latent)."""
    y: torch.Tensor  # (L, B, D), sequence-first
    z: torch.Tensor  # (L, B, D)


@dataclass
class Prediction:
    answers: torch.Tensor                     # (B, seq_len) predicted tokens at each puzzle's final step
    steps: torch.Tensor                       # (B,) supervision steps used
    logit: torch.Tensor                       # (B,) halting logit at the final step
    first_halt: torch.Tensor                  # (B,) first step whose halting logit is > 0 (0: none)
    halt_answers: torch.Tensor                # (B, seq_len) the answer at that step (no halt: the final answer)
    per_step: torch.Tensor | None = None      # (K, B, seq_len) answers after every step, when asked for
    per_step_logit: torch.Tensor | None = None  # (K, B) halting logit after every step, when asked for
    confidence = property(lambda self: torch.sigmoid(self.logit))  # (B,) halting probability at the final step
    per_step_confidence = property(lambda self: None if self.per_step_logit is None else self.per_step_logit.sigmoid())


class TRM(nn.Module):
    config_class = TRMConfig  # a variant with keys of its own names its subclass of TRMConfig here
    q_outputs = 1             # outputs of the Q head: the halting logit

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.config = config
        D = config.hidden_size
        self.embed_scale = math.sqrt(D)
        self.embed = nn.Embedding(config.vocab_size, D)
        # Learned prefix positions: 0 (official: the puzzle embedding; puzzle_emb's with several) or all.
        n_learned = config.n_prefix if config.prefix_learned == "all" else min(config.n_prefix, 1)
        self.puzzle_emb = None
        if config.num_puzzle_identifiers > 1:
            self.puzzle_emb = PuzzleEmbedding(config.num_puzzle_identifiers, D)
            n_learned -= 1
        self.prefix = nn.Parameter(torch.zeros(n_learned, D)) if self.puzzle_emb is None or n_learned else None
        self.pos = nn.Parameter(torch.empty(config.total_len, D)) if config.pos_encoding == "learned" else None
        angles = None
        if config.pos_encoding == "rope" and not config.mlp_t:
            head_dim = D // config.num_heads
            inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
            angles = torch.outer(torch.arange(config.total_len, dtype=torch.float32), inv_freq).repeat(1, 2)  # (L, hd)
        self.register_buffer("rope_cos", None if angles is None else angles.cos(), persistent=False)
        self.register_buffer("rope_sin", None if angles is None else angles.sin(), persistent=False)
        self.net = TinyNetwork(config, config.f_layers)                # f, shared by both updates
        self.output_head = CastedLinear(D, config.vocab_size, bias=False)
        self.q_head = CastedLinear(D, self.q_outputs)                   # the halting logit
        self.register_buffer("y_init", torch.empty(D))                 # fixed random vectors (official H_init, L_init)
        self.register_buffer("z_init", torch.empty(D))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """All initialisation in one place, as official: truncated normal, LeCun-scaled for linear layers."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=1.0 / math.sqrt(module.in_features))
            elif isinstance(module, SequenceMLP):
                trunc_normal_(module.gate_up, std=1.0 / math.sqrt(module.gate_up.shape[1]))
                trunc_normal_(module.down, std=1.0 / math.sqrt(module.down.shape[1]))
        trunc_normal_(self.embed.weight, std=1.0 / self.embed_scale)  # times embed_scale -> unit scale
        if self.pos is not None:
            trunc_normal_(self.pos, std=1.0 / self.embed_scale)
        for table in (self.prefix, None if self.puzzle_emb is None else self.puzzle_emb.weight):
            if table is not None:
                table.zero_()                                           # zero init (official)
        trunc_normal_(self.y_init, std=1.0)
        trunc_normal_(self.z_init, std=1.0)
        # Special case (official): the halting head starts at "never halt", so early training runs all N_sup steps.
        self.q_head.weight.zero_()
        self.q_head.bias.fill_(-5.0)

    def input_embedding(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, seq_len) tokens and (B,) puzzle identifiers (None: all 0) -> (L, B, D), prefix first."""
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
        """y_init and z_init broadcast to (L, B, D); dtype is the compute dtype of the recursion."""
        return Carry(*(init.to(device=device, dtype=dtype).expand(self.config.total_len, batch_size, len(init)).clone()
                       for init in (self.y_init, self.z_init)))

    def reset_carry(self, carry: Carry, reset: torch.Tensor) -> Carry:
        """Put y_init / z_init into the puzzles (batch entries) where reset (B,) is true."""
        mask = reset.view(1, -1, 1)
        return Carry(torch.where(mask, self.y_init.to(carry.y.dtype), carry.y),
                     torch.where(mask, self.z_init.to(carry.z.dtype), carry.z))

    def _rope(self):
        return None if self.rope_cos is None else (self.rope_cos, self.rope_sin)

    # -- one supervision step: the paper's algorithm -----------------------------------------------

    def latent_recursion(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One cycle: n latent updates z <- f(x + y + z), then one answer update y <- f(y + z)."""
        rope = self._rope()
        for _ in range(self.config.n):
            z = self.net(z, x + y, rope)                                # f(z, x + y) = blocks(z + x + y)
        y = self.net(y, z, rope)
        return y, z

    def deep_recursion(self, inputs: torch.Tensor, carry: Carry,
                       puzzle_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """T cycles from the carry; returns (y, z) after the last one, the only one with gradient."""
        y, z = carry.y, carry.z
        x = self.input_embedding(inputs, puzzle_ids).to(y.dtype)
        with torch.no_grad():                                           # T-1 cycles without gradient
            for _ in range(self.config.T - 1):
                y, z = self.latent_recursion(x, y, z)
        return self.latent_recursion(x, y, z)                           # the last cycle carries gradient

    def heads(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output logits (B, seq_len, V) and halting logit (B,) from the answer state y (L, B, D)."""
        p = self.config.n_prefix
        logits = self.output_head(y[p:]).transpose(0, 1)               # (B, seq_len, V)
        q_in = y[0] if p > 0 else y.mean(dim=0)  # deviation when n_prefix=0: mean over cells
        return logits, self.q_head(q_in).squeeze(-1).float()

    def forward(self, inputs: torch.Tensor, carry: Carry,
                puzzle_ids: torch.Tensor | None = None) -> tuple[Carry, torch.Tensor, torch.Tensor]:
        """One supervision step on tokens (B, seq_len) with puzzle identifiers (B,) (None: all 0):
        the new carry (detached), output logits (B, seq_len, V) and the halting logit (B,)."""
        y, z = self.deep_recursion(inputs, carry, puzzle_ids)
        logits, q_logit = self.heads(y)
        return Carry(y.detach(), z.detach()), logits, q_logit

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, N_sup: int | None = None, halt: bool = False,
                keep_steps: bool = False, dtype: torch.dtype = torch.float32, stop_unchanged: int = 0,
                puzzle_ids: torch.Tensor | None = None,
                perturb: Callable[[Carry], Carry] | None = None) -> Prediction:
        """Up to N_sup supervision steps on puzzles (B, seq_len) with identifiers (B,) (None: all 0).
        halt=False runs every puzzle N_sup steps (as the official evaluation); halt=True freezes a
        puzzle's answer at the first step whose halting logit is > 0; stop_unchanged=k once its answer
        has not changed for k steps (frozen puzzles leave the batch, unless keep_steps or perturb).
        keep_steps=True keeps every step's answer (all N_sup steps); perturb(carry) runs before each."""
        B = inputs.shape[0]
        carry = self.initial_carry(B, inputs.device, dtype)
        answers, halt_answers = torch.zeros_like(inputs), torch.zeros_like(inputs)
        steps, first_halt, unchanged = (inputs.new_zeros(B, dtype=torch.long) for _ in range(3))
        logit, done = inputs.new_zeros(B, dtype=torch.float32), inputs.new_zeros(B, dtype=torch.bool)
        history = []                                                    # (answers, halting logit) after each step
        compact = (halt or stop_unchanged > 0) and not keep_steps and perturb is None  # frozen puzzles leave
        for step in range(1, (N_sup or self.config.N_sup) + 1):
            if perturb is not None:
                carry = perturb(carry)
            if compact and bool(done.any()):                            # the live puzzles alone
                rows = (~done).nonzero().squeeze(1)
                ids = {} if puzzle_ids is None else {"puzzle_ids": puzzle_ids[rows]}
                part, logits, q_part = self(inputs[rows], Carry(carry.y[:, rows], carry.z[:, rows]), **ids)
                carry = Carry(carry.y.index_copy(1, rows, part.y), carry.z.index_copy(1, rows, part.z))
                current = answers.index_copy(0, rows, logits.argmax(dim=-1))
                q_logit = logit.index_copy(0, rows, q_part.float())
            else:
                ids = {} if puzzle_ids is None else {"puzzle_ids": puzzle_ids}
                carry, logits, q_logit = self(inputs, carry, **ids)
                current = logits.argmax(dim=-1)
            q_logit, live = q_logit.float(), ~done
            if stop_unchanged and step > 1:
                unchanged = torch.where((current == answers).all(dim=1), unchanged + 1, 0)
            answers = torch.where(live[:, None], current, answers)
            logit = torch.where(live, q_logit, logit)
            steps = torch.where(live, step, steps)
            first = live & (first_halt == 0) & (q_logit > 0)
            first_halt = torch.where(first, step, first_halt)
            halt_answers = torch.where(first[:, None], current, halt_answers)
            if keep_steps:
                history.append((current, q_logit))
            done = done | (halt & (q_logit > 0)) | (bool(stop_unchanged) & (unchanged >= stop_unchanged))
            if (halt or stop_unchanged) and bool(done.all()) and not keep_steps:
                break
        per_step = dict(zip(("per_step", "per_step_logit"), map(torch.stack, zip(*history)))) if keep_steps else {}
        return Prediction(answers=answers, steps=steps, logit=logit, first_halt=first_halt, **per_step,
                          halt_answers=torch.where((first_halt > 0)[:, None], halt_answers, answers))


IGNORE_LABEL = -100  # label of a position without a target (padding); torch's cross-entropy default


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy with stable-max (official): s(x) = x + 1 for x >= 0, 1 / (1 - x) otherwise."""
    logits = logits.double()
    # The negative branch sees min(x, 0): torch.where back-propagates 0 x d/dx of the branch not taken,
    # and 1/(1-x) has a pole at x = 1, which bf16 logits hit exactly (0 x inf = NaN; official: + 1e-30).
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
    """One supervision step's loss, as official: cross entropy averaged per puzzle over its target
    positions, then over puzzles; the halting head's BCE against "the whole answer is right"."""
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
