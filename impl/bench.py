"""Measure TRM training and inference speed, model FLOP utilisation and peak memory.

    python impl/bench.py                                   # 9x9, D=128 and 256, mlp_t and attention, fp32 and bf16
    python impl/bench.py --hidden 256 --variants mlp_t --dtypes bfloat16 --json bench.json
    python impl/bench.py --dtypes bfloat16 --setups eager,compile,compile+fused,compile:reduce-overhead,compile/model

For each configuration it times training steps (forward through T cycles, backward through the
last, AdamW step: one supervision step) and inference (puzzles per second at --infer-steps
supervision steps), after warm-up, as the median over --repeats. Model FLOPs are counted from the
shapes (matrix products only, see model_flops) and divided by the measured time; the machine's
peak is measured in the same run with a large matrix product of the same dtype, so the model
FLOP utilisation (MFU) compares like with like. Puzzles are random tokens: speed does not depend
on their content. --setups compares ways to run the same step (compile mode and scope, the AdamW
implementation), each case in a fresh process; a setup that fails is reported and the rest go on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from arch import rules as model_rules
from cli_args import check_options, int_list, name_list, output_file_rule
from device import cpu_description, pick_device
from errors import fail, run_cli
from flops import model_flops
from trm import TRM, TRMConfig, trm_loss


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a large square matrix product."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync(device)
    return 2 * size ** 3 * reps / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


VARIANTS = ("mlp_t", "attention")
ADAM = {"default": {}, "loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def bench_one(cfg: TRMConfig, batch: int, dtype: torch.dtype, device: torch.device, repeats: int,
              steps_per_repeat: int, infer_steps: int, compile_net: bool, compile_mode: str = "default",
              compile_scope: str = "net", adam: str = "default") -> dict:
    """compile_scope "net" compiles the tiny network f (training.compile), "model" the whole
    supervision step's forward (the official code compiles its whole model); compile_mode
    "reduce-overhead" replays the compiled graphs as CUDA graphs. adam: torch's choice of AdamW
    implementation (default), a per-parameter loop, foreach, or fused kernels."""
    torch.manual_seed(0)
    model = TRM(cfg).to(device)
    if compile_net:
        (model.net if compile_scope == "net" else model).compile(mode=None if compile_mode == "default" else compile_mode)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **ADAM[adam])
    inputs = torch.randint(1, cfg.vocab_size, (batch, cfg.seq_len), device=device)
    labels = torch.randint(2, cfg.vocab_size, (batch, cfg.seq_len), device=device)
    carry = model.initial_carry(batch, device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def train_step(carry):
        if compile_mode in ("reduce-overhead", "max-autotune") and compile_net:
            torch.compiler.cudagraph_mark_step_begin()  # the replayed graphs' outputs are reused
        carry, logits, q = model(inputs, carry)
        trm_loss(logits, q, labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return carry

    t_compile = time.perf_counter()
    for _ in range(2):  # warm-up (and compilation, when asked for)
        carry = train_step(carry)
    sync(device)
    warmup_s = time.perf_counter() - t_compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps_per_repeat):
            carry = train_step(carry)
        sync(device)
        times.append((time.perf_counter() - t0) / steps_per_repeat)
    step_s = statistics.median(times)

    model.eval()
    model.predict(inputs, N_sup=1, dtype=dtype)
    infer = []
    for _ in range(max(1, repeats // 2)):
        sync(device)
        t0 = time.perf_counter()
        model.predict(inputs, N_sup=infer_steps, dtype=dtype)
        sync(device)
        infer.append(time.perf_counter() - t0)
    flops = model_flops(cfg, batch)
    return {
        "train_step_ms": 1000 * step_s,
        "sup_steps_per_s": 1 / step_s,
        "puzzle_steps_per_s": batch / step_s,
        "train_tflops": flops["train"] / step_s / 1e12,
        "infer_puzzles_per_s": batch / statistics.median(infer),
        "infer_tflops": flops["forward"] * infer_steps / statistics.median(infer) / 1e12,
        "gflop_per_step": flops["train"] / 1e9,
        "warmup_s": warmup_s,
        "peak_mem_mb": peak_memory_mb(device),
    }


def setup_name(r: dict) -> str:
    """eager, compile, or compile:<mode>/<scope>, with +<adam> where AdamW is not torch's default."""
    name = "eager"
    if r["compile"]:
        name = ("compile" + ("" if r["compile_mode"] == "default" else f":{r['compile_mode']}")
                + ("" if r["compile_scope"] == "net" else f"/{r['compile_scope']}"))
    return name + ("" if r["adam"] == "default" else f"+{r['adam']}")


HEADER = (f"{'setup':<16} {'variant':<9} {'D':>4} {'dtype':<8} {'step ms':>8} {'sup st/s':>8} {'puz*st/s':>8} "
          f"{'TFLOP/s':>7} {'MFU':>5} {'infer puz/s':>11} {'GFLOP/st':>8} {'peak MB':>8} {'warmup s':>8}")


def format_row(r: dict) -> str:
    return (f"{r['setup']:<16} {r['variant']:<9} {r['hidden']:>4} {r['dtype']:<8} {r['train_step_ms']:>8.1f} "
            f"{r['sup_steps_per_s']:>8.2f} {r['puzzle_steps_per_s']:>8.1f} {r['train_tflops']:>7.3f} "
            f"{r['mfu']:>5.0%} {r['infer_puzzles_per_s']:>11.1f} {r['gflop_per_step']:>8.1f} "
            f"{r['peak_mem_mb']:>8.0f} {r['warmup_s']:>8.1f}")


def parse_setup(text: str) -> dict:
    """A --setups entry, as the table's setup column writes it: eager or compile[:<mode>][/model],
    then +<adam> (e.g. compile:reduce-overhead+fused, compile/model)."""
    body, _, adam = text.partition("+")
    body, _, scope = body.partition("/")
    head, colon, mode = body.partition(":")
    setup = {"compile": head == "compile", "compile_mode": mode or "default",
             "compile_scope": scope or "net", "adam": adam or "default"}
    ok = (head in ("eager", "compile") and setup["compile_mode"] in COMPILE_MODES
          and setup["compile_scope"] in ("net", "model") and setup["adam"] in ADAM
          and (setup["compile"] or not (colon or scope)))
    if not ok:
        raise ValueError(f"--setups: {text!r} is not a setup: eager or compile[:<mode>][/model], then "
                         f"+<adam>; modes {', '.join(COMPILE_MODES)}; adam {', '.join(ADAM)}")
    return setup


def case_config(args: argparse.Namespace, variant: str, hidden: int) -> TRMConfig:
    return TRMConfig(vocab_size=args.grid + 2, seq_len=args.grid ** 2, hidden_size=hidden,
                     num_layers=args.layers, num_heads=max(1, hidden // 64), T=args.T, n=args.n,
                     mlp_t=variant == "mlp_t", pos_encoding="none" if variant == "mlp_t" else "rope",
                     n_prefix=args.prefix, width_multiple=args.width_multiple)


# the options that set a model config's keys, to name them in an error
OPTIONS = {"hidden_size": "--hidden", "num_heads": "--hidden", "num_layers": "--layers", "T": "--T", "n": "--n",
           "n_prefix": "--prefix", "width_multiple": "--width-multiple"}


def check_args(args: argparse.Namespace) -> tuple[list[str], list[int], list[str]]:
    """The variants, hidden sizes and dtypes asked for. A value that could give no result (a zero
    count, a list with a non-number, a model the variant cannot build, a --json path that cannot be
    written) ends the script in one line before any work."""
    hidden = int_list(args.hidden, "--hidden")
    variants = name_list(args.variants, "--variants", VARIANTS)
    dtypes = [name.strip() for name in args.dtypes.split(",")]
    check_options([(f"--{name.replace('_', '-')}", getattr(args, name), getattr(args, name) >= 1, "must be >= 1")
                   for name in ("batch", "T", "n", "layers", "width_multiple", "repeats", "steps_per_repeat",
                                "infer_steps")] + [
        ("--prefix", args.prefix, args.prefix >= 0, "must be >= 0"),
        ("--threads", args.threads, args.threads >= 0, "must be >= 0 (0: torch's default)"),
        output_file_rule("--json", args.json)])
    for name in dtypes:
        if not isinstance(getattr(torch, name, None), torch.dtype):
            fail(f"--dtypes: {name!r} is not a torch dtype (e.g. float32, bfloat16)")
        check_options([("--dtypes", name, getattr(torch, name).is_floating_point, "is not a floating-point dtype "
                        "(e.g. float32, bfloat16)")])
    for variant in variants:
        for size in hidden:
            cfg = case_config(args, variant, size)
            for key, ok, why in model_rules(cfg):
                if not ok:
                    fail(f"{OPTIONS.get(key, key)}: {getattr(cfg, key)!r} {why} (variant {variant}, "
                         f"hidden {size}, {cfg.num_heads} heads)")
    if not args.compile and (args.compile_mode != "default" or args.compile_scope != "net"):
        fail("--compile-mode and --compile-scope need --compile")
    for setup in [x for x in args.setups.split(",") if x]:
        try:
            parse_setup(setup)
        except ValueError as e:
            fail(str(e))
    return variants, hidden, dtypes


def run_case(args: argparse.Namespace, device: torch.device, variant: str, hidden: int, dtype_name: str,
             setup: str | None = None) -> dict:
    if setup is not None:
        args = argparse.Namespace(**{**vars(args), **parse_setup(setup)})
    cfg = case_config(args, variant, hidden)
    row = bench_one(cfg, args.batch, getattr(torch, dtype_name), device, args.repeats, args.steps_per_repeat,
                    args.infer_steps, args.compile, args.compile_mode, args.compile_scope, args.adam)
    row.update(setup=setup or setup_name(vars(args)), variant=variant, hidden=hidden, dtype=dtype_name,
               batch=args.batch, grid=args.grid,
               T=args.T, n=args.n, prefix=args.prefix, width_multiple=args.width_multiple, compile=args.compile,
               compile_mode=args.compile_mode, compile_scope=args.compile_scope, adam=args.adam, device=str(device))
    return row


def run_isolated(argv: list[str], case: tuple) -> dict:
    """One configuration in a fresh process, so that its peak memory is its own and
    torch.compile starts clean."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--one", json.dumps(case)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["(no message)"]
        return {"error": lines[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", type=int, default=9, choices=(4, 6, 9), help="Sudoku size: sequence of grid*grid cells")
    p.add_argument("--hidden", default="128,256", help="comma-separated hidden sizes D")
    p.add_argument("--variants", default="mlp_t,attention", help="comma-separated: mlp_t, attention")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated compute dtypes")
    p.add_argument("--batch", type=int, default=64, help="puzzles per batch")
    p.add_argument("--T", type=int, default=3, help="T in paper: cycles per supervision step")
    p.add_argument("--n", type=int, default=6, help="n in paper: latent updates per cycle")
    p.add_argument("--layers", type=int, default=2, help="blocks in f")
    p.add_argument("--prefix", type=int, default=1, help="prefix positions (official: 16)")
    p.add_argument("--width-multiple", type=int, default=256, help="SwiGLU widths rounded up to this (1: exact)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median is reported)")
    p.add_argument("--steps-per-repeat", type=int, default=3, help="training steps per timed repeat")
    p.add_argument("--infer-steps", type=int, default=16, help="supervision steps per inference call")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--compile", action="store_true", help="torch.compile the tiny network (or --compile-scope)")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                   help="torch.compile mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--compile-scope", default="net", choices=("net", "model"),
                   help="compile the tiny network f (as training.compile) or the whole model forward")
    p.add_argument("--adam", default="default", choices=list(ADAM), help="AdamW implementation")
    p.add_argument("--setups", default="", help="comma-separated setups to compare, each a fresh process, "
                   "e.g. eager,compile,compile+fused,compile:reduce-overhead,compile/model (overrides the four above)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case, print its row as JSON
    args = p.parse_args(argv)
    variants, hidden, dtypes = check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, why = run_cli(lambda: pick_device(args.device, key="--device"))
    if args.one is not None:
        print(json.dumps(run_case(args, device, *json.loads(args.one))))
        return []
    setups = [x for x in args.setups.split(",") if x] or [None]
    print(f"device {device} ({why}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"python {platform.python_version()}")
    print(f"cpu: {cpu_description()}" if device.type == "cpu" else f"gpu: {torch.cuda.get_device_name(device)}")
    cases = [(variant, size, name, setup) for variant in variants for size in hidden for name in dtypes
             for setup in setups]
    size = 8192 if device.type == "cuda" else 2048  # large enough to reach the chip's peak
    peaks = {name: matmul_peak(getattr(torch, name), device, size) for name in dtypes}
    for name, peak in peaks.items():
        print(f"measured matmul peak ({name}, {size}^3): {peak / 1e12:.3f} TFLOP/s")
    print(HEADER)
    rows, failed = [], []
    for case in cases:
        row = run_isolated(argv, case) if len(cases) > 1 else run_case(args, device, *case)
        if "error" in row:  # one failing setup (e.g. a compile mode this torch lacks) does not hide the others
            failed.append(case)
            print(f"{case[3] or 'this setup':<16} {case[0]:<9} {case[1]:>4} {case[2]:<8} failed: {row['error']}", flush=True)
            continue
        row.update(peak_tflops=peaks[case[2]] / 1e12, mfu=row["train_tflops"] * 1e12 / peaks[case[2]])
        rows.append(row)
        print(format_row(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"wrote {args.json}")
    if failed:
        sys.exit(f"error: {len(failed)} of {len(cases)} cases failed (above)")
    return rows


if __name__ == "__main__":
    main()
