"""`flora-eval bench generate` at toy size: every engine and adapter count measured, with
the row fields and ratios of benchmarks.md."""

from __future__ import annotations

import argparse
import json

from harness.bench import generate as bench


def test_bench_rows_carry_every_engine_and_ratio(humaneval_dir):
    problem = bench.real_prompt(str(humaneval_dir))
    rows = bench.bench_case(bench.Case("tiny", samples=4, new_tokens=3, repeats=1, adapters=(2,)),
                            problem, "cpu")
    keys = {(r["engine"], r["method"], r["n_adapters"]) for r in rows}
    assert keys == {("ours", "base", 0), ("ours", "flora", 2), ("ours", "lora", 2), ("ours", "ia3", 2),
                    ("hf-generate", "base", 0), ("peft-mixed", "lora", 2)}
    by_key = {(r["engine"], r["method"], r["n_adapters"]): r for r in rows}
    assert by_key[("ours", "base", 0)]["ratio_to_base"] == 1.0
    assert by_key[("hf-generate", "base", 0)]["ratio_to_hf_generate"] == 1.0
    assert by_key[("ours", "lora", 2)]["ratio_to_peft_mixed"] > 0
    assert all(r["tokens_per_s"] > 0 and r["samples"] == 4 for r in rows)
    assert by_key[("ours", "flora", 2)]["decode_ratio_to_base"] > 0
    text = bench.table({"device": "cpu", "config": {"problem": problem.name}, "rows": rows})
    assert text.count("\n") == len(rows) + 2 and "new_tokens" in text
    json.dumps(rows)


def test_bench_arguments_parse():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--arch", "tiny", "--device", "cpu"])
    assert args.arch == ["tiny"] and args.device == "cpu"
