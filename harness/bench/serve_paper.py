"""What the paper reports of multi-adapter serving, and the ranks it sweeps: the reference
`flora-eval bench serve` runs and draws against (serve.py runs, serve_plot.py draws)."""

from __future__ import annotations

ALL_RANKS = (1, 2, 4, 8, 16, 32, 64)
PAPER = {  # ../shared/reference/adapters.md: only ratios (and one latency) are given
    "throughput_ratio": {1: 3.0, 2: 2.5, 8: 1.0},  # FLoRA / bmm-LoRA; 1.0 = crossover on 15B
    "latency_ratio_band": ((1, 4), (2.0, 6.0)),  # bmm-LoRA / FLoRA s per token, ranks 1-4, 15B
    "bmm_lora_s_per_token_15b": 2.3,
}
