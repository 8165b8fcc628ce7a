"""`flora-eval bench adapters` in CI size: the real measuring code on a tiny shape; checks the
JSON shape and the grid (not the timings, which depend on the machine)."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.bench import cli
from harness.errors import UserError

ARGS = ["adapters", "--json", "--shape", "test-tiny", "--batch", "4", "--seq", "3", "--reps", "1",
        "--ranks", "1,2", "--adapters", "1,4", "--model-ranks", "1", "--model-adapters", "4"]  # fmt: skip


def parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_quick_bench_json_shape(capsys):
    assert cli.run(parse(ARGS)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bench"] == "adapters" and result["device"] == "cpu"
    assert result["config"]["shape"] == "test-tiny" and result["config"]["threads"] == 1
    rows = result["rows"]
    methods = {"flora", "bmm-lora", "gather-lora", "ia3", "peft-mixed"}
    for scope, phase in [(s, p) for s in ("layer", "model") for p in ("prefill", "decode")]:
        mine = [r for r in rows if r["scope"] == scope and r["phase"] == phase]
        base = [r for r in mine if r["method"] == "base"]
        assert len(base) == 1 and base[0]["ratio_to_base"] == 1.0
        ranks, counts = ((1, 2), (1, 4)) if scope == "layer" else ((1,), (4,))
        for method in methods:
            cells = {(r["rank"], r["n_adapters"]) for r in mine if r["method"] == method}
            want = {(None, n) for n in counts} if method == "ia3" else {(r, n) for r in ranks for n in counts}
            assert cells == want, (scope, phase, method)
    for row in rows:
        assert row["tokens_per_s"] > 0 and row["ratio_to_base"] > 0 and row["spread"] >= 0
        if row["method"] not in ("base", "peft-mixed"):
            assert row["ratio_to_peft_mixed"] > 0


def test_table_and_refusals(capsys):
    argv = [a for a in ARGS if a != "--json"] + [
        "--scopes",
        "layer",
        "--phases",
        "decode",
        "--methods",
        "flora",
    ]
    assert cli.run(parse(argv)) == 0
    out = capsys.readouterr().out
    assert "## layer / decode" in out and "| flora |" in out
    with pytest.raises(UserError, match="smaller than the number of distinct adapters"):
        cli.run(parse([*ARGS, "--adapters", "8"]))
