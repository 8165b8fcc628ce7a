"""report.html: self-contained (no script, no network), the right numbers and samples on it, and
(slow) rendered by headless Chromium with no console message, screenshot taken."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from test_report_build import MODEL, demo_counts, write_run

from harness.files import read_results
from harness.report import write_reports
from harness.report.load import PROGRAMS_PER_CELL, cap

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--enable-logging=stderr", "--v=0")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, humaneval_dir):
    counts = demo_counts()
    run = write_run(tmp_path_factory.mktemp("html") / "demo-run", counts)
    paths = write_reports(run)
    return counts, run, paths["html"], paths["html"].read_text(encoding="utf-8")


def expected_means(counts) -> list[str]:
    return [f"{np.mean([c / n for n, c in cell.values()]) * 100:.2f}" for cell in counts.values()]


def summary_values(html: str) -> list[str]:
    table = re.search(r'<table id="summary-table">(.*?)</table>', html, re.S).group(1)
    return re.findall(r'<span class="value">([\d.]+)</span>', table)


def test_html_is_self_contained(demo):
    *_, html = demo
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for needle in ("<script", "<link", "<iframe", "src=", "url(", "@import"):
        assert needle not in html.lower(), needle
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}


def test_html_shows_every_section_and_the_numbers(demo):
    counts, _, _, html = demo
    for anchor in ("summary", "chart", "comparisons", "heatmap", "statuses", "samples", "manifest"):
        assert f'id="{anchor}"' in html
    assert sorted(summary_values(html)) == sorted(expected_means(counts))
    for column in ("base", "FLoRA", "IA3", "LoRA"):
        assert f"{column}</th>" in html
    assert html.count("<svg") >= 1 + 3 + 12  # bar chart, 3 heatmaps, 12 status bars
    # heatmap: one cell per (adapter, problem) of each language
    assert len(re.findall(r"<rect [^>]*><title>HumanEval_", html)) == sum(len(c) for c in counts.values())
    for section in ("environment", "config", "dataset", "model", "images"):
        assert f"<summary>{section}</summary>" in html
    assert "Throughput telemetry" in html and "tokens_per_s" in html and "507.5" in html


def test_drill_down_lists_distinct_programs_with_counts(demo):
    _, run, _, html = demo
    path = run.results_path(MODEL, "ia3", "rb", "HumanEval_1_separate_paren_groups")
    results = read_results(path)
    distinct = {r.program for r in results.results}
    c = results.n_passed
    shown = min(len(distinct), PROGRAMS_PER_CELL)
    assert (f"IA3: {c}/{results.n} passed · {len(distinct)} distinct programs"
            + (f" ({shown} shown)" if len(distinct) > shown else "")) in html
    assert "SyntaxError" in html and "Timeout" in html and "expected but was" in html


def test_long_text_is_capped():
    assert cap("x" * 50, 10) == "x" * 10 + "\n… [40 more characters]"
    assert cap("short", 10) == "short"


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install -y chromium)")


def render(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)


def console_messages(stderr: str) -> list[str]:
    """Chromium logs every console message (errors, CSP violations, blocked loads) as CONSOLE."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_console_detector_sees_errors(tmp_path):
    """Negative control: a page that breaks the rules is caught by the same detector."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                   "content=\"default-src 'none'\"></head><body><img src=\"https://example.com/x.png\">"
                   "<script>throw new Error('kaput')</script></body></html>", encoding="utf-8")
    messages = console_messages(render(bad, tmp_path, "--dump-dom").stderr)
    assert any("Content Security Policy" in m for m in messages)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(demo, tmp_path):
    counts, _, page, _ = demo
    dom = render(page, tmp_path, "--dump-dom")
    assert console_messages(dom.stderr) == []
    assert sorted(summary_values(dom.stdout)) == sorted(expected_means(counts))
    assert "Pass rate per problem" in dom.stdout and "HumanEval_0_has_close_elements" in dom.stdout
    shot = tmp_path / "report.png"
    taken = render(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1800",
                   "--hide-scrollbars")
    assert console_messages(taken.stderr) == []
    assert png_size(shot) == (1280, 1800)
    assert shot.stat().st_size > 40_000  # a blank page of this size is a few kB


@pytest.mark.slow
def test_a_full_size_report_stays_small_and_quick(tmp_path, humaneval_dir):
    """161 problems × 100 samples × 4 adapters × 2 languages: the page stays a few MB and opens."""
    counts = demo_counts(langs=("rb", "rs"), problems_per_lang=161, n=100, seed=3)
    run = write_run(tmp_path / "full-run", counts)
    start = time.perf_counter()
    page = write_reports(run)["html"]
    assert time.perf_counter() - start < 60
    assert page.stat().st_size < 8_000_000
    start = time.perf_counter()
    dom = render(page, tmp_path, "--dump-dom")
    assert time.perf_counter() - start < 30
    assert console_messages(dom.stderr) == []
    assert sorted(summary_values(dom.stdout)) == sorted(expected_means(counts))


def test_program_output_is_escaped(tmp_path, humaneval_dir):
    """Samples are untrusted text: a program that prints markup must not add any to the page."""
    from dataclasses import replace

    from harness.files import write_results

    counts = demo_counts(langs=("py",), adapters=("base",), problems_per_lang=1, n=3)
    run = write_run(tmp_path / "run", counts)
    path = run.result_files()[0]
    results = read_results(path)
    hostile = "</pre><script>alert('x')</script><img src=https://example.com/t.png>"
    bad = replace(results.results[0], stdout=hostile, stderr=hostile, status="Exception", exit_code=1)
    write_results(path, replace(results, results=(bad, *results.results[1:])))
    html = write_reports(run)["html"].read_text(encoding="utf-8")
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
