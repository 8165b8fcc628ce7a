"""The serving benchmark's figure, laid out like the paper's Figure 2 with a row of ratios below.

    throughput (tokens/s) vs rank, per model   |  latency (s / output token) vs rank
    FLoRA ÷ bmm-LoRA throughput vs rank        |  bmm-LoRA ÷ FLoRA latency vs rank
    + the paper's ratios (3× r1, 2.5× r2,      |  + the paper's 2-6× band at ranks 1-4
      crossover near r8 on 15B)                |    (and bmm-LoRA ≈ 2.3 s/token when 15B is plotted)

The paper gives these ratios in its text, not its curves' values, so only they are overlaid.
Needs matplotlib (imported here only, so the benchmark runs without it).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.bench.serve_paper import ALL_RANKS, PAPER  # noqa: E402

STYLE = {  # method -> line style; colour = model
    "flora": {"linestyle": "-", "marker": "o"},
    "bmm-lora": {"linestyle": "--", "marker": "s"},
    "gather-lora": {"linestyle": ":", "marker": "^"},
}
FLAT = {"base": "-", "ia3": "-."}  # rank-less methods: horizontal lines
COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777")


def _series(rows: list[dict], model: str, method: str, rate_set: bool) -> list[dict]:
    picked = [r for r in rows
              if r["model"] == model and r["method"] == method and (r["rate"] is not None) == rate_set]
    return sorted(picked, key=lambda r: r["rank"] or 0)


def plot(result: dict, out: Path) -> list[Path]:
    """Write serve.svg and serve.png in `out`; return their paths."""
    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    has_latency = any(r["rate"] is not None for r in rows)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (thr, lat), (thr_ratio, lat_ratio) = axes
    for i, model in enumerate(models):
        color = COLORS[i % len(COLORS)]
        for panel, figure, rate_set in ((thr, "tokens_per_s", False), (lat, "s_per_output_token", True)):
            for method, style in STYLE.items():
                series = _series(rows, model, method, rate_set)
                if series:
                    panel.plot([r["rank"] for r in series], [r[figure] for r in series], color=color,
                               label=f"{model} {method}", **style)
            for method, linestyle in FLAT.items():
                for r in _series(rows, model, method, rate_set):
                    panel.axhline(r[figure], color=color, linestyle=linestyle, linewidth=0.9, alpha=0.7,
                                  label=f"{model} {method}")
        for panel, rate_set in ((thr_ratio, False), (lat_ratio, True)):
            series = _series(rows, model, "flora", rate_set)
            points = [(r["rank"], r["ratio_to_bmm_lora"]) for r in series if r["ratio_to_bmm_lora"]]
            if points:
                panel.plot(*zip(*points, strict=True), color=color, marker="o", label=f"{model} (ours)")
    ranks, ratios = zip(*sorted(PAPER["throughput_ratio"].items()), strict=True)
    thr_ratio.scatter(ranks, ratios, color="black", marker="x", s=70, zorder=5,
                      label="paper, StarCoder (r8: 15B crossover)")
    (low_rank, high_rank), (low, high) = PAPER["latency_ratio_band"]
    lat_ratio.fill_between([low_rank, high_rank], low, high, color="black", alpha=0.12,
                           label="paper, 15B: 2-6× at ranks 1-4")
    if "15b" in models:
        lat.axhline(PAPER["bmm_lora_s_per_token_15b"], color="black", linestyle=":",
                    label="paper bmm-LoRA 15B ≈ 2.3 s/token")
    for panel in (thr_ratio, lat_ratio):
        panel.axhline(1.0, color="grey", linewidth=0.8)
    titles = (
        (thr, "Throughput (all requests at t=0)", "output tokens / s"),
        (lat, f"Latency at {result['config'].get('rate')} requests/s", "s per output token (mean)"),
        (thr_ratio, "FLoRA ÷ bmm-LoRA throughput", "× bmm-LoRA (> 1: FLoRA faster)"),
        (lat_ratio, "bmm-LoRA ÷ FLoRA latency", "× lower latency than bmm-LoRA"),
    )
    for panel, title, ylabel in titles:
        panel.set_xscale("log", base=2)
        panel.set_xticks(ALL_RANKS, [str(r) for r in ALL_RANKS])
        panel.set_xlabel("rank")
        panel.set_ylabel(ylabel)
        panel.set_title(title, fontsize=10)
        panel.grid(alpha=0.3)
        if panel.has_data():
            panel.legend(fontsize=7)
    if not has_latency:
        for panel in (lat, lat_ratio):
            panel.text(0.5, 0.5, "latency not measured (--no-latency)", ha="center",
                       transform=panel.transAxes)
    config = result["config"]
    fig.suptitle(f"flora-eval bench serve on {result['device']}: {config.get('requests')} requests, "
                 f"{config.get('adapters')} adapters, clock {config.get('clock')}", fontsize=11)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "serve.svg", out / "serve.png"]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: smaller, searchable
        fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
