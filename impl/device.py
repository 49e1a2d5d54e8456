"""Device and compute dtype: "auto" picks CUDA, then MPS, then CPU, and says why; and whether a
model and batch can fit in the device's memory at all."""
from __future__ import annotations

import functools
import os
import platform
import shutil
import time

import torch

from errors import ConfigError
from flops import block_calls, model_kind
from trm import TRMConfig, swiglu_width

DTYPES = ("auto", "float32", "bfloat16")  # compute dtypes a run may ask for


def pick_device(name: str, local_rank: int = 0, key: str = "training.device",
                local_processes: int = 1) -> tuple[torch.device, str]:
    """The device for name; under torchrun, "auto" and "cuda" mean this process's own GPU, so the
    machine needs one GPU per process (local_processes) or the run stops here, saying what to do."""
    if name in ("auto", "cuda") and local_processes > 1 and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_processes > count:
            raise ConfigError(f"{key}: torchrun started {local_processes} processes on this machine, but it has "
                              f"{count} GPU{'s' if count != 1 else ''}: one GPU per process. Start at most {count} "
                              f"(--nproc_per_node={count}), or set {key}: \"cpu\" to run them on the CPU (gloo)")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"{key}: unknown device {name!r} (auto, cpu, cuda, cuda:N or mps)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{key}: {name!r} asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(f"{key}: {name!r} asked for, but MPS is not available here")
        return device, "set in the config"
    if torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}"), f"auto: CUDA is available ({torch.cuda.get_device_name(local_rank)})"
    if torch.backends.mps.is_available():
        return torch.device("mps"), "auto: Apple MPS is available"
    return torch.device("cpu"), "auto: no CUDA or MPS device found"


def cpu_description() -> str:
    """This machine's CPU by name, with the flags that decide bf16 speed, for speed tables: a user
    matches their machine to the figures measured on a CPU of the same kind."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:  # not Linux: the name platform gives
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2" if flags else "?"
    bf16 = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    limit = os.environ.get("ATEN_CPU_CAPABILITY", "")  # torch's kernels held to a lesser instruction set
    return (f"{name}, {os.cpu_count()} cores, {simd}, native bf16: {'yes' if native else 'no'}"
            + (f" ({', '.join(bf16)})" if bf16 else "")
            + (f", kernels limited to {limit} (ATEN_CPU_CAPABILITY)" if limit else ""))


def pick_dtype(name: str, device: torch.device, key: str = "training.dtype") -> tuple[torch.dtype, str]:
    if name not in DTYPES:
        raise ConfigError(f"{key}: {name!r} is not one of {', '.join(DTYPES)}")
    if name != "auto":
        return getattr(torch, name), "set in the config"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: the GPU supports bf16"
        return torch.float32, "auto: this GPU has no bf16"
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # Native bf16 is not always faster: measured on 2-core CPUs, bf16 matmuls ran ~4x float32 on an
        # AMD AVX-512 BF16 part and 0.5x on an Intel one without AMX. So auto times both, here.
        speedup = cpu_bf16_speedup()
        if speedup >= BF16_MIN_SPEEDUP:
            return torch.bfloat16, f"auto: this CPU has native bf16, measured {speedup:.1f}x float32 matmuls"
        return torch.float32, (f"auto: this CPU has native bf16, but its bf16 matmuls measured {speedup:.1f}x "
                               f"float32 (set dtype bfloat16 to use it anyway)")
    return torch.float32, "auto: no fast bf16 on this device"


BF16_MIN_SPEEDUP = 1.2  # bf16 is chosen on a CPU only when its matmuls are at least this much faster


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(rows: int = 2048, inner: int = 256, cols: int = 512, repeats: int = 5) -> float:
    """How many times faster a bf16 matrix product of model-like shape runs than a float32 one on
    this CPU, the best of a few tries each (about 0.1 s in all; measured once per process)."""
    g = torch.Generator().manual_seed(0)  # its own generator: a run's random stream is left as it was

    def best(dtype: torch.dtype) -> float:
        a, b = (torch.randn(rows, inner, generator=g).to(dtype), torch.randn(inner, cols, generator=g).to(dtype))
        a @ b  # warm-up: the kernel is chosen and its code loaded
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)
    return best(torch.float32) / best(torch.bfloat16)


def pick_device_dtype(device_name: str, dtype_name: str) -> tuple[torch.device, torch.dtype, str]:
    """Device and dtype for a command line's --device and --dtype, with a line that says which and why."""
    device, device_why = pick_device(device_name, key="--device")
    dtype, dtype_why = pick_dtype(dtype_name, device, key="--dtype")
    return device, dtype, f"device: {device} ({device_why}); dtype: {str(dtype).replace('torch.', '')} ({dtype_why})"


CPU_COMPILERS = ("c++", "g++", "clang++", "cl")  # torch.compile's CPU code needs one of these (or $CXX)


def compile_blocker(device: torch.device) -> str:
    """Why torch.compile cannot run on this device ("" when it can): on a CPU it writes C++ and
    needs a compiler on the PATH. A run that asks for compile then goes on uncompiled, saying so."""
    if device.type != "cpu" or any(shutil.which(c) for c in (os.environ.get("CXX", ""), *CPU_COMPILERS) if c):
        return ""
    return f"no C++ compiler found ({', '.join(CPU_COMPILERS)} or $CXX), which compiling for a CPU needs"


def network_blocks(mcfg: TRMConfig) -> int:
    """Blocks with parameters of their own: f (trm; twice with separate_nets), f_L and f_H (hrm),
    the transformer's depth."""
    kind = model_kind(mcfg)
    if kind == "hrm":
        return mcfg.num_layers + (mcfg.H_layers or mcfg.num_layers)
    if kind == "transformer":
        return mcfg.f_layers
    return mcfg.num_layers * (2 if kind == "separate_nets" else 1)


def weight_count(mcfg: TRMConfig) -> int:
    """A lower bound, from the shapes alone, on the parameters of a model: the SwiGLUs and the mixer
    of each arch's networks, the embedding and the head (the puzzle-embedding table apart)."""
    D, L, V = mcfg.hidden_size, mcfg.total_len, mcfg.vocab_size
    W = swiglu_width(D, mcfg.expansion, mcfg.width_multiple)
    mixer = 3 * L * swiglu_width(L, mcfg.expansion, mcfg.width_multiple) if mcfg.mlp_t else 4 * D * D
    return network_blocks(mcfg) * (3 * D * W + mixer) + 2 * V * D


def table_bytes(mcfg: TRMConfig) -> int:
    """The puzzle-embedding table when there are several identifiers (one fp32 copy), else 0."""
    return 4 * mcfg.num_puzzle_identifiers * mcfg.hidden_size if mcfg.num_puzzle_identifiers > 1 else 0


def memory_estimate(mcfg: TRMConfig, batch: int, dtype: torch.dtype) -> tuple[int, int]:
    """A lower bound, from the shapes alone, on the bytes one training process needs: parameters
    (weight_count) with their gradient, two Adam moments and the EMA copy, plus the puzzle-embedding
    table (table_bytes, shared with the EMA); and the activations kept for the backward of
    the blocks a supervision step back-propagates (flops.block_calls: trm, the last cycle's n + 1
    calls of f): per block at least its input, two norm outputs and the SwiGLU's 3 x width values
    per position."""
    D, L = mcfg.hidden_size, mcfg.total_len
    W = swiglu_width(D, mcfg.expansion, mcfg.width_multiple)
    _, kept_blocks = block_calls(mcfg)
    activations = kept_blocks * batch * L * (3 * D + 3 * W) * torch.tensor([], dtype=dtype).element_size()
    return 5 * 4 * weight_count(mcfg) + table_bytes(mcfg), activations


def inference_memory(mcfg: TRMConfig) -> int:
    """A lower bound on the bytes a model takes for evaluation: its fp32 weights (weight_count) and
    the puzzle-embedding table, without gradients, Adam moments or an EMA copy."""
    return 4 * weight_count(mcfg) + table_bytes(mcfg)


def machine_memory(device: torch.device) -> int | None:
    """Bytes of memory on the device (CPU: physical memory), or None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None


def check_memory(mcfg: TRMConfig, batch: int, dtype: torch.dtype, device: torch.device) -> None:
    """Refuse, before allocating, a model and batch that cannot fit in the machine's memory."""
    params, activations = memory_estimate(mcfg, batch, dtype)
    have = machine_memory(device)
    if have is not None and params + activations > have:
        gib = 2 ** 30
        raise ConfigError(
            f"model.hidden_size {mcfg.hidden_size}, training.batch_size {batch}: this run needs at least "
            f"{(params + activations) / gib:,.1f} GiB ({params / gib:,.1f} GiB for parameters with gradients, Adam "
            f"and EMA, {activations / gib:,.1f} GiB of activations per supervision step), more than the "
            f"{have / gib:,.1f} GiB of this {device.type}; lower them")
