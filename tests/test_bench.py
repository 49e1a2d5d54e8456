"""The benchmark script runs on a tiny config and reports non-zero figures (no timing assertions)."""
import bench
from trm import TRMConfig, swiglu_width


def test_bench_prints_a_table_with_nonzero_figures(capsys):
    rows = bench.main(["--grid", "4", "--hidden", "32", "--variants", "mlp_t", "--dtypes", "float32",
                       "--repeats", "1", "--steps-per-repeat", "1", "--T", "2", "--n", "2", "--infer-steps", "2"])
    out = capsys.readouterr().out
    assert "MFU" in out and "measured matmul peak" in out
    (row,) = rows
    for key in ("train_step_ms", "puzzle_steps_per_s", "train_tflops", "mfu", "infer_puzzles_per_s", "peak_mem_mb"):
        assert row[key] > 0, key


def test_flop_count_by_hand():
    cfg = TRMConfig(vocab_size=6, seq_len=16, hidden_size=32, num_heads=1, T=2, n=3, mlp_t=False, pos_encoding="none")
    B, L, D, W = 4, 17, 32, swiglu_width(32, 4.0)
    block = 2 * B * L * (D * 3 * D + D * D + D * 2 * W + W * D) + 2 * 2 * B * L * L * D
    heads = 2 * B * 16 * D * 6 + 2 * B * D
    flops = bench.model_flops(cfg, B)
    assert flops["per_f_call"] == 2 * block
    assert flops["forward"] == 2 * 4 * 2 * block + heads           # T * (n + 1) calls of f
    assert flops["train"] == flops["forward"] + 2 * (4 * 2 * block + heads)  # backward of the last cycle


def test_setups_are_compared_in_one_table_and_a_bad_one_is_named(capsys):
    import re

    import pytest
    rows = bench.main(["--grid", "4", "--hidden", "32", "--variants", "mlp_t", "--dtypes", "float32",
                       "--repeats", "1", "--steps-per-repeat", "1", "--T", "2", "--n", "2", "--infer-steps", "2",
                       "--setups", "eager,eager+fused"])
    assert [(r["setup"], r["adam"], r["compile"]) for r in rows] == [("eager", "default", False), ("eager+fused", "fused", False)]
    assert all(r["train_step_ms"] > 0 for r in rows)
    assert bench.parse_setup("compile:reduce-overhead/model+fused") == {
        "compile": True, "compile_mode": "reduce-overhead", "compile_scope": "model", "adam": "fused"}
    assert bench.parse_setup("compile/model")["compile_scope"] == "model"
    for text in ("eager", "compile/model", "compile:max-autotune", "compile:reduce-overhead/model+fused", "eager+loop"):
        assert bench.setup_name(bench.parse_setup(text)) == text  # the table names a setup as --setups takes it
    for bad in ("compile:fast", "eager:reduce-overhead", "eager+adamw", "jit"):
        with pytest.raises(SystemExit, match=re.escape(f"--setups: '{bad}'")):
            bench.main(["--setups", bad])
