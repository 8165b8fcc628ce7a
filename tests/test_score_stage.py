"""The score stage: results records → score records in scores.csv, and nothing else; the
records read back equal; reports and the gate read them; a full disk is one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_build import MODEL, demo_counts, write_run

from harness.cli import main
from harness.files import read_results
from harness.runs import RunDir
from harness.score import SCORES_FILE, SOURCES_FILE, pass_at_k, read_scores, score_run


def files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_score_writes_scores_csv_and_nothing_else(tmp_path, humaneval_dir, capsys):
    run = write_run(tmp_path / "run", demo_counts(langs=("py", "rb"), problems_per_lang=3, n=10))
    before = files(run.root)
    assert main(["score", str(run.root)]) == 0
    after = files(run.root)
    assert set(after) - set(before) == {SCORES_FILE, SOURCES_FILE}
    assert all(after[name] == stamp for name, stamp in before.items())
    assert "24 problems scored" in capsys.readouterr().out


def test_score_records_round_trip_and_carry_provenance_and_statuses(tmp_path, humaneval_dir):
    counts = demo_counts(langs=("py",), adapters=("base", "flora-r1"), problems_per_lang=4, n=12)
    run = write_run(tmp_path / "run", counts)
    scores = score_run(run)
    by_key = {(s.adapter, s.problem): s for s in read_scores(run.root / SCORES_FILE)}
    assert by_key == {(s.adapter, s.problem): s for s in scores}  # the file holds the records exactly
    for (model, adapter, lang), cell in counts.items():
        for problem, (n, c) in cell.items():
            s = by_key[(adapter, problem)]
            assert (s.model, s.lang, s.n, s.c) == (model, lang, n, c)
            assert s.pass_at == {1: pass_at_k(n, c, 1), 10: pass_at_k(n, c, 10)}
            assert s.provenance.method == ("base" if adapter == "base" else "flora")
            assert s.provenance.sampling.temperature == 0.1 and s.image_id.startswith("sha256:")
            assert sum(s.statuses.values()) == n and s.statuses.get("OK", 0) == c


def test_the_report_scores_a_run_that_has_no_scores_yet(tmp_path, humaneval_dir, capsys):
    run = write_run(tmp_path / "run", demo_counts(langs=("rb",), problems_per_lang=2, n=5))
    assert not (run.root / SCORES_FILE).exists()
    assert main(["report", str(run.root)]) == 0
    assert (run.root / SCORES_FILE).is_file() and (run.root / "report.html").is_file()
    assert f"| {MODEL}" in capsys.readouterr().out


def test_a_corrupt_scores_file_is_one_line(tmp_path):
    path = tmp_path / SCORES_FILE
    path.write_text("model,adapter\nx,y\n", encoding="utf-8")
    from harness.errors import UserError

    with pytest.raises(UserError, match="not a flora-eval scores file"):
        read_scores(path)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_a_rerun_resumes(tmp_path, humaneval_dir, small_disk, capsys):
    source = write_run(tmp_path / "run", demo_counts(langs=("py",), adapters=("base",), problems_per_lang=2,
                                                     n=4))
    run_root = small_disk / "run"
    shutil.copytree(source.root, run_root)
    filler = small_disk / "filler"
    try:  # fill the disk to the last byte
        with filler.open("wb", buffering=0) as f:
            while True:
                f.write(b"x" * 4096)
    except OSError:
        pass
    code = main(["score", str(run_root)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err, err
    assert err.startswith("flora-eval: error:") and "is full" in err and SCORES_FILE in err
    assert "run the same command again" in err
    assert not (run_root / SCORES_FILE).exists() and not list(run_root.glob(".*.tmp"))
    results = [read_results(p) for p in RunDir(run_root).result_files()]
    assert len(results) == 2  # nothing finished was lost
    filler.unlink()
    assert main(["score", str(run_root)]) == 0
    assert len(read_scores(run_root / SCORES_FILE)) == 2


def test_scores_are_current_only_for_the_results_they_were_made_from(tmp_path, humaneval_dir):
    """scores.csv is dated by the results files' hashes and the status rules, never by file
    times: a deleted or re-made results file, or a changed rule, makes it stale; a touched
    file (same content, newer time) does not."""
    import dataclasses
    import time

    from harness import api
    from harness.files import write_results
    from harness.report.load import run_scores
    from harness.score import scores_current
    from harness.score.judge import status_rules

    counts = demo_counts(langs=("py",), adapters=("base",), problems_per_lang=3, n=4)
    run = write_run(tmp_path / "run", counts)
    assert not scores_current(run, status_rules)
    assert len(api.score(api.open_run(run.root))) == 3
    assert scores_current(run, status_rules)
    # (these made-up results carry no observation, so no rule judges them: a rule change
    # making scores stale is test_execute_observe.py::test_scores_judged_under_other_rules_are_made_again)

    first, second, _ = run.result_files()
    later = time.time() + 3600
    os.utime(first, (later, later))  # newer than scores.csv, same content
    assert scores_current(run, status_rules)
    older = time.time() - 3600
    os.utime(run.root / SCORES_FILE, (older, older))
    results = read_results(second)  # re-made with other outcomes (older than scores.csv by time)
    write_results(second, dataclasses.replace(results, results=tuple(
        dataclasses.replace(r, status="Exception", exit_code=1) for r in results.results)))
    os.utime(second, (older - 10, older - 10))
    assert not scores_current(run, status_rules)
    assert sum(s.c for s in run_scores(run) if s.problem == results.name) == 0, "scored again"
    assert scores_current(run, status_rules)

    first.unlink()  # e.g. removed by --overwrite before its completions are made again
    assert not scores_current(run, status_rules)
    assert len(run_scores(run)) == 2 and len(read_scores(run.root / SCORES_FILE)) == 2
