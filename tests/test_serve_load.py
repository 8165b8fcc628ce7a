"""A bounded load test on loopback: 2,000 requests from 64 concurrent clients to `flora-eval
serve` (base, FLoRA, LoRA and IA3 interleaved), through `flora-eval bench serve --http`: no
request lost or answered twice, no error status, every answer equal to the in-process
engine's for the same seed. The speed ratio is printed, never asserted."""

from __future__ import annotations

import json

import pytest

from harness.cli import main

REQUESTS, CLIENTS = 2000, 64


@pytest.mark.slow
def test_two_thousand_requests_from_64_clients(capsys):
    code = main(["bench", "serve", "--http", "--json", "--requests", str(REQUESTS),
                 "--concurrency", str(CLIENTS), "--rows", "32", "--output-tokens", "8", "--repeats", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["statuses"] == {"200": REQUESTS}  # no 429, no 5xx, no dropped connection
    assert result["answered"] == REQUESTS and result["lost"] == 0 and result["answered_twice"] == 0
    assert result["equal"] == REQUESTS  # each answer is its own request's, token for token
    assert result["max_adapters_per_step"] == 4 and result["ratio"] > 0
