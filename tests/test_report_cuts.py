"""The report shows the share of samples cut at max_tokens per benchmark and language, from the
finish reason every completions file keeps per sample (in-process generation records it too)."""

from __future__ import annotations

import pandas as pd

from harness.cli import main
from harness.files import read_completions
from harness.report.tables import cut_shares
from harness.runs import RunDir


def test_report_shows_the_share_cut_at_max_tokens(tmp_path, humaneval_dir, capsys):
    run = tmp_path / "run"
    assert main(["generate", "--model", "tiny", "--device", "cpu", "--dataset", str(humaneval_dir),
                 "--lang", "py", "--limit", "2", "-n", "3", "--max-tokens", "4", "--run-dir", str(run)]) == 0
    reasons = [r for p in RunDir(run).completion_files() for r in read_completions(p).finish_reasons]
    cut = reasons.count("length")
    assert len(reasons) == 6 and cut > 0  # 4 tokens of a random model: mostly cut
    assert main(["report", str(run)]) == 0
    line = f"HumanEval Python {cut / 6 * 100:.1f} % ({cut} of 6)"
    assert f"Samples cut at max_tokens per language: {line}." in (run / "table.md").read_text()
    html = (run / "report.html").read_text()
    assert 'id="cut-share"' in html and f"{cut / 6 * 100:.1f} %</b> ({cut} of 6)" in html


def test_files_without_finish_reasons_are_left_out_of_the_share():
    finishes = pd.DataFrame([{"run": "r", "benchmark": "humaneval", "lang": "py", "samples": 10, "cut": 2,
                              "unknown": 0},
                             {"run": "r", "benchmark": "humaneval", "lang": "py", "samples": 10, "cut": 0,
                              "unknown": 10},
                             {"run": "r", "benchmark": "humaneval", "lang": "rb", "samples": 5, "cut": 0,
                              "unknown": 5}])
    shares = cut_shares(finishes)
    assert shares[["lang", "samples", "cut", "share"]].values.tolist() == [["py", 10, 2, 20.0]]
