"""`flora-eval bench serve`: the workload, the serving loop over the real engine (its greedy
outputs equal one-request-at-a-time decoding, with per-row adapters), and the output shape
of a tiny run (every method/rank/rate row present, ratios to bmm-LoRA, CSV, plot)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from harness.bench import serve, serve_report
from harness.bench import workload as wl
from harness.bench.serve_loop import figures, serve_requests
from harness.errors import UserError

# ---------------------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------------------


def test_synthetic_lengths_are_reproducible_and_inside_the_filters():
    pairs = wl.synthetic_lengths(300, seed=3)
    assert pairs == wl.synthetic_lengths(300, seed=3)
    assert pairs != wl.synthetic_lengths(300, seed=4)
    low, high = wl.PAPER_RANGE
    for prompt, output in pairs:
        assert prompt <= wl.MAX_PROMPT and prompt + output <= wl.MAX_TOTAL
        assert low <= prompt + output <= high and min(prompt, output) >= wl.MIN_TOKENS
    totals = sorted(p + o for p, o in pairs)
    assert totals[0] < 150 and totals[-1] > 1000  # a wide, chat-like spread, not one length


def test_scaled_lengths_shrink_with_the_scale():
    full = wl.synthetic_lengths(200, seed=0)
    small = wl.synthetic_lengths(200, seed=0, scale=1 / 16)
    assert sum(p + o for p, o in small) * 8 < sum(p + o for p, o in full)
    assert all(wl.keep(p, o, 1 / 16) for p, o in small)


def test_poisson_arrivals_have_the_asked_rate():
    times = wl.poisson_arrivals(4000, rate=8.0, seed=1)
    assert times[0] == 0.0 and all(b >= a for a, b in zip(times, times[1:], strict=False))
    mean_gap = times[-1] / (len(times) - 1)
    assert mean_gap == pytest.approx(1 / 8, rel=0.05)
    assert wl.poisson_arrivals(5, None, 1) == [0.0] * 5
    with pytest.raises(ValueError):
        wl.poisson_arrivals(5, 0.0, 1)


def test_jsonl_workload_keeps_given_arrivals_and_reports_bad_lines(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"prompt_len": 10, "output_len": 5, "arrival_s": 0.5}\n\n'
                    '{"prompt_len": 7, "output_len": 3}\n')
    requests = wl.read_workload(path)
    assert [(r.prompt_len, r.output_len, r.arrival_s) for r in requests] == [(10, 5, 0.5), (7, 3, 0.0)]
    assert wl.with_arrivals(requests, 8.0, 0) == requests  # file arrival times win
    path.write_text('{"prompt_len": "ten", "output_len": 5}\n')
    with pytest.raises(UserError, match="w.jsonl:1"):
        wl.read_workload(path)
    sharegpt = tmp_path / "sg.json"
    sharegpt.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}]}]))
    with pytest.raises(UserError, match="--tokenizer"):
        wl.read_workload(sharegpt)
    with pytest.raises(UserError, match="does not exist"):
        wl.read_workload(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------------------------------
# The serving loop over the engine
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return serve.build_model("cpu-tiny", "cpu")


def _engine(model, handle=None):
    from harness.generate.engine import Engine, EngineConfig
    from harness.models import byte_tokenizer

    config = EngineConfig(temperature=0.0, top_p=1.0, max_new_tokens=64, slots=4, max_positions=512,
                          ignore_eos=True)
    return Engine(model, byte_tokenizer(), config, set_rows=handle.set_rows if handle else None)


@torch.inference_mode()
def _alone(model, prompt: tuple[int, ...], steps: int, handle=None, adapter: int = -1) -> tuple[int, ...]:
    """Greedy decoding of one request by itself, recomputing the whole sequence each token."""
    if handle is not None:
        handle.set_rows([adapter])
    ids = list(prompt)
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        ids.append(int(logits.argmax()))
    return tuple(ids[len(prompt):])


REQUESTS = [wl.ServeRequest(0, 9, 6), wl.ServeRequest(1, 3, 11), wl.ServeRequest(2, 14, 2),
            wl.ServeRequest(3, 5, 1), wl.ServeRequest(4, 7, 8), wl.ServeRequest(5, 12, 4)]


@pytest.mark.parametrize("method", ["base", "flora", "bmm-lora", "gather-lora", "ia3"])
def test_served_tokens_equal_one_request_at_a_time(tiny, method):
    """Slots refilled, grown and dropped, prompts of different lengths left-padded, a row per
    adapter: every request still gets exactly the tokens it gets alone."""
    from harness.adapters import attach

    prompts = wl.prompt_ids(REQUESTS, tiny.config.vocab_size, seed=5)
    chosen = serve.adapter_config(method, 2)
    handle = None
    if chosen is not None:
        handle = attach(tiny, serve.make_adapters(tiny, chosen[0], 3, seed=1), lora_impl=chosen[1])
    adapter_of = {r.index: (r.index % 3 if handle else -1) for r in REQUESTS}
    try:
        served = serve_requests(_engine(tiny, handle), REQUESTS, prompts, adapter_of,
                                max_batched_tokens=16, max_rows=3)
        for r in REQUESTS:
            assert served.tokens[r.index] == _alone(tiny, prompts[r.index], r.output_len, handle,
                                                    adapter_of[r.index]), r
    finally:
        if handle is not None:
            handle.detach()
    assert [f[0] for f in served.finished] == [r.index for r in REQUESTS]
    assert 1 < served.mean_rows <= 3


def test_adapters_change_the_output(tiny):
    """The perturbed adapters are not the identity: a served FLoRA row differs from the base."""
    from harness.adapters import attach

    prompt = wl.prompt_ids(REQUESTS[:1], tiny.config.vocab_size, seed=5)[0]
    handle = attach(tiny, serve.make_adapters(tiny, serve.adapter_config("flora", 4)[0], 1, seed=2))
    try:
        with torch.inference_mode():
            handle.set_rows([0])
            adapted = tiny(input_ids=torch.tensor([prompt])).logits
            handle.set_rows([-1])
            base = tiny(input_ids=torch.tensor([prompt])).logits
    finally:
        handle.detach()
    assert not torch.allclose(adapted, base)


def test_arrivals_latency_and_process_clock(tiny):
    """Poisson arrivals: nothing finishes before it arrives; the process clock skips idle time."""
    requests = wl.with_arrivals(REQUESTS, rate=50.0, seed=0)
    prompts = wl.prompt_ids(requests, tiny.config.vocab_size, seed=0)
    served = serve_requests(_engine(tiny), requests, prompts, {r.index: -1 for r in requests},
                            max_batched_tokens=8192, max_rows=8, clock="process")
    by_index = {r.index: r for r in requests}
    for index, arrival, finish, n in served.finished:
        assert arrival == by_index[index].arrival_s and finish >= arrival and n == by_index[index].output_len
    assert served.seconds >= requests[-1].arrival_s  # idle waits count, without sleeping
    found = figures(served)
    assert found["output_tokens"] == sum(r.output_len for r in requests)
    expected = sum((f - a) / n for _, a, f, n in served.finished) / len(requests)
    assert found["s_per_output_token"] == pytest.approx(expected)
    assert found["tokens_per_s"] == pytest.approx(found["output_tokens"] / served.seconds)


def test_prefill_budget_limits_admission(tiny):
    """With a budget of one prompt per step, requests enter one by one: more decode steps."""
    prompts = wl.prompt_ids(REQUESTS, tiny.config.vocab_size, seed=0)
    rows = {r.index: -1 for r in REQUESTS}
    wide = serve_requests(_engine(tiny), REQUESTS, prompts, rows, max_batched_tokens=8192, max_rows=8)
    narrow = serve_requests(_engine(tiny), REQUESTS, prompts, rows, max_batched_tokens=1, max_rows=8)
    assert narrow.tokens == wide.tokens
    assert narrow.decode_steps > wide.decode_steps


# ---------------------------------------------------------------------------------------
# The benchmark's output
# ---------------------------------------------------------------------------------------
def _args(tmp_path, **over) -> argparse.Namespace:
    values = {"model": ["cpu-tiny"], "device": "cpu", "rate": 40.0, "requests": 3, "workload": None,
              "tokenizer": None, "scale": 1 / 32, "max_batched_tokens": 8192, "max_seqs": 4, "methods": None,
              "ranks": "1,2", "adapters": None, "repeats": 1, "no_latency": False, "clock": None,
              "threads": None, "seed": 0, "out": tmp_path, "json": True, "full": False}
    return argparse.Namespace(**{**values, **over})


@pytest.mark.slow
def test_rows_cover_every_method_rank_and_rate(tmp_path, capsys):
    threads_before = torch.get_num_threads()
    assert serve.run(_args(tmp_path)) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"bench", "device", "config", "rows"} and result["bench"] == "serve"
    assert result["config"]["clock"] == "process" and result["config"]["threads"] == 1  # CPU defaults
    assert torch.get_num_threads() == threads_before  # run() gives the caller's setting back
    cells = {(r["model"], r["method"], r["rank"], r["rate"]) for r in result["rows"]}
    expected = {("cpu-tiny", m, k, rate) for rate in (None, 40.0)
                for m, ranks in (("base", [None]), ("ia3", [None]), ("flora", [1, 2]), ("bmm-lora", [1, 2]),
                                 ("gather-lora", [1, 2])) for k in ranks}
    assert cells == expected and len(result["rows"]) == len(expected)
    for row in result["rows"]:
        assert row["tokens_per_s"] > 0 and row["s_per_output_token"] > 0
        assert row["output_tokens"] == result["config"]["output_tokens"]
        if row["method"] == "bmm-lora":
            assert row["ratio_to_bmm_lora"] == 1.0
        if row["rank"] is None:
            assert row["ratio_to_bmm_lora"] is None
        else:
            bmm = next(r for r in result["rows"] if r["method"] == "bmm-lora" and r["rank"] == row["rank"]
                       and r["rate"] == row["rate"])
            measured = (row["tokens_per_s"] / bmm["tokens_per_s"] if row["rate"] is None
                        else bmm["s_per_output_token"] / row["s_per_output_token"])
            assert row["ratio_to_bmm_lora"] == pytest.approx(measured, abs=2e-3)
    with open(tmp_path / "serve.csv") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == serve_report.CSV_FIELDS and len(table) == len(expected)
    assert json.loads((tmp_path / "serve.json").read_text())["rows"] == result["rows"]
    tables = (tmp_path / "serve.md").read_text()
    assert "**cpu-tiny: throughput, output tokens/s**" in tables and "latency at 40 requests/s" in tables
    assert tables.count("| 1 |") == 2 and tables.count("| 2 |") == 2  # one line per rank and experiment
    if serve_plot_available():
        assert (tmp_path / "serve.svg").read_text().lstrip().startswith("<?xml")
        assert (tmp_path / "serve.png").read_bytes()[:4] == b"\x89PNG"


def serve_plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown method"):
        serve.make_plan(_args(tmp_path, methods="flora,dora"))
    with pytest.raises(UserError, match="max-batched-tokens"):
        serve.make_plan(_args(tmp_path, max_batched_tokens=2, scale=1.0))
    with pytest.raises(UserError, match="rate"):
        serve.make_plan(_args(tmp_path, rate=-1.0))


def test_summary_ratios_follow_the_definition():
    raw = [{"model": "m", "method": m, "rank": k, "rate": rate, "repeat": rep, "tokens_per_s": tps,
            "s_per_output_token": spt, "seconds": 1.0, "output_tokens": 10, "mean_rows": 2.0}
           for m, k, rate, rep, tps, spt in [
               ("base", None, None, 0, 100.0, 0.1), ("bmm-lora", 1, None, 0, 40.0, 0.3),
               ("bmm-lora", 1, None, 1, 60.0, 0.2), ("flora", 1, None, 0, 90.0, 0.1),
               ("flora", 1, None, 1, 70.0, 0.1), ("bmm-lora", 1, 8.0, 0, 5.0, 2.0),
               ("flora", 1, 8.0, 0, 5.0, 0.5), ("base", None, 8.0, 0, 5.0, 0.25)]]
    rows = {(r["method"], r["rate"]): r for r in serve.summarise(raw)}
    assert rows[("flora", None)]["tokens_per_s"] == 80.0 and rows[("bmm-lora", None)]["tokens_per_s"] == 50.0
    assert rows[("flora", None)]["ratio_to_bmm_lora"] == 1.6 and rows[("flora", None)]["ratio_to_base"] == 0.8
    assert rows[("flora", None)]["tokens_per_s_spread"] == [70.0, 90.0]
    assert rows[("flora", 8.0)]["ratio_to_bmm_lora"] == 4.0  # 2.0 s/token ÷ 0.5 s/token
    assert rows[("flora", 8.0)]["ratio_to_base"] == 0.5
    assert rows[("base", None)]["ratio_to_bmm_lora"] is None
    assert math.isclose(rows[("bmm-lora", 8.0)]["ratio_to_bmm_lora"], 1.0)


@pytest.mark.slow
def test_cli_prints_the_ratio_table():
    """The CI-sized form through the real CLI: `flora-eval bench serve` prints the ratios."""
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "bench", "serve", "--model", "cpu-tiny", "--requests", "4",
         "--scale", "0.03", "--ranks", "1,8", "--rate", "40"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("bench serve: 4 requests")
    assert "×bmm-lora" in lines[1]
    flora = [line.split() for line in lines if line.split()[:2] == ["cpu-tiny", "flora"]]
    assert [cols[2] for cols in flora] == ["1", "1", "8", "8"]
    assert all(float(cols[6]) > 0 for cols in flora)
