"""Data-parallel launch helper for torchrun.

    torchrun --standalone --nproc_per_node=2 impl/train_trm.py --config tiny.json

A process group is started only when torchrun's RANK, LOCAL_RANK and WORLD_SIZE are all set;
otherwise everything here is a no-op for a single process, so `python impl/train_trm.py` is
unchanged. Backend: nccl on CUDA (gloo for CPU tensors), gloo on CPU.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
# What gloo's error says when the process at the other end of a connection has gone.
PEER_LOSS_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> Dist:
    """The torchrun placement of this process, or a single process when any variable is missing."""
    if not all(key in os.environ for key in ENV_KEYS):
        return Dist()
    world = int(os.environ["WORLD_SIZE"])
    return Dist(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), world,
                int(os.environ.get("LOCAL_WORLD_SIZE", world)))


def init(d: Dist, device: torch.device) -> None:
    """Start the process group for d (nothing for a single process)."""
    if not d.enabled or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # On CUDA, tensors on the GPU go through nccl and the loop's small CPU tensors (flags, log
    # scalars) through gloo; nccl alone refuses CPU tensors.
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def gather_cat(t: torch.Tensor, d: Dist, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's tensor along dim, in rank order (same shape on every rank)."""
    if not d.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(d.world_size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=dim)


def mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Average of a tensor over ranks."""
    if not d.enabled:
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / d.world_size


def peer_loss(e: BaseException) -> str | None:
    """The words of a collective's error that say another process has gone ("gloo: Connection
    reset by peer"), or None when the error says something else."""
    text = str(e)
    sign = next((sign for sign in PEER_LOSS_SIGNS if sign.lower() in text.lower()), None)
    return None if sign is None else f"{'gloo' if 'gloo' in text else type(e).__name__}: {sign}"


def other_process(d: Dist) -> str:
    """The process this one lost contact with: named when there is only one other, since the
    error does not say which (it names a host and port, not a rank)."""
    return f"rank {1 - d.rank}" if d.world_size == 2 else "another process"


def relaunch_command(d: Dist, resume: bool) -> str:
    """The torchrun command that starts this run's processes again (resume: with --resume)."""
    args = [arg for arg in sys.argv if arg != "--resume"] + (["--resume"] if resume else [])
    where = "--standalone" if d.world_size == d.local_world_size else f"--nnodes={d.world_size // d.local_world_size} ..."
    return f"torchrun {where} --nproc_per_node={d.local_world_size} {shlex.join(args)}"
