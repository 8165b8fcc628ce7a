"""What `flora-eval bench serve` prints and writes: the table on stdout, and in `--out`
serve.json, serve.csv, serve.md (rank × method tables) and, with matplotlib, the figure
(`serve_plot.py`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def has_rank(method: str) -> bool:
    """Base and IA3 have no rank: one row each, no same-rank bmm-LoRA to compare with."""
    return method not in ("base", "ia3")


def print_table(rows: list[dict]) -> None:
    header = (f"{'model':10} {'method':11} {'rank':>4} {'rate':>5} {'tokens/s':>10} {'s/out-token':>12} "
              f"{'×bmm-lora':>10} {'×base':>7}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:10} {r['method']:11} {_cell(r['rank']):>4} {_cell(r['rate']):>5} "
              f"{r['tokens_per_s']:>10.1f} {r['s_per_output_token']:>12.4f} "
              f"{_cell(r['ratio_to_bmm_lora']):>10} {_cell(r['ratio_to_base']):>7}")


def _cell(value) -> str:
    return "-" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


CSV_FIELDS = ("model", "method", "rank", "rate", "repeats", "output_tokens", "tokens_per_s",
              "tokens_per_s_min", "tokens_per_s_max", "s_per_output_token", "s_per_output_token_min",
              "s_per_output_token_max", "mean_rows", "ratio_to_bmm_lora", "ratio_to_base")


def csv_rows(rows: list[dict]) -> list[dict]:
    """Rows flattened for CSV (spreads as min/max columns; None as empty cells)."""
    flat = []
    for r in rows:
        row = {k: v for k, v in r.items() if not k.endswith("_spread")}
        row["tokens_per_s_min"], row["tokens_per_s_max"] = r["tokens_per_s_spread"]
        row["s_per_output_token_min"], row["s_per_output_token_max"] = r["s_per_output_token_spread"]
        flat.append({k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS})
    return flat


def write_outputs(result: dict, out: Path, log=print) -> list[Path]:
    """serve.json, serve.csv, serve.md and (with matplotlib) serve.svg / serve.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(result, indent=1) + "\n")
    with open(out / "serve.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(result["rows"]))
    (out / "serve.md").write_text(markdown(result))
    written = [out / "serve.json", out / "serve.csv", out / "serve.md"]
    try:
        from harness.bench.serve_plot import plot
    except ModuleNotFoundError as exc:
        log(f"no plot: {exc.name} is not installed (pip install matplotlib)")
        return written
    written += plot(result, out)
    log("wrote " + ", ".join(str(p) for p in written))
    return written


def markdown(result: dict) -> str:
    """Per model and experiment, a rank × method table: figure (× bmm-LoRA at that rank)."""
    rows = result["rows"]
    parts = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for rate in dict.fromkeys(r["rate"] for r in rows):
            mine = [r for r in rows if r["model"] == model and r["rate"] == rate]
            figure = "tokens_per_s" if rate is None else "s_per_output_token"
            title = ("throughput, output tokens/s" if rate is None
                     else f"latency at {rate:g} requests/s, s per output token")
            ranked = [m for m in dict.fromkeys(r["method"] for r in mine) if has_rank(m)]
            parts.append(f"**{model}: {title}** (× bmm-LoRA at the same rank; > 1 = better)\n")
            parts.append("| rank | " + " | ".join(ranked) + " |")
            parts.append("|---:|" + "---:|" * len(ranked))
            for rank in sorted({r["rank"] for r in mine if r["rank"] is not None}):
                cells = []
                for method in ranked:
                    row = next((r for r in mine if r["method"] == method and r["rank"] == rank), None)
                    ratio = row and row["ratio_to_bmm_lora"]
                    cells.append("-" if row is None else f"{row[figure]:.4g} ({ratio:.2f}×)")
                parts.append(f"| {rank} | " + " | ".join(cells) + " |")
            flat = [f"{r['method']} {r[figure]:.4g} ({r['ratio_to_base']:.2f}× base)"
                    for r in mine if r["rank"] is None]
            parts.append("\nRank-less: " + "; ".join(flat) + "\n" if flat else "")
    return "\n".join(parts) + "\n"
