"""`flora-eval bench pipeline` and `bench execute --executor dask` at toy size: the rows and
ratios they print (the ratios themselves are measured, never asserted)."""

from __future__ import annotations

import json

import pytest

from harness.cli import main

pytest_plugins = ("test_execute_support",)


@pytest.mark.docker
@pytest.mark.slow
def test_bench_pipeline_prints_the_ratios(humaneval_dir, py_image, capsys):
    assert main(["bench", "pipeline", "--json", "--dataset", str(humaneval_dir), "--limit", "2", "-n", "2",
                 "--max-tokens", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    assert report["bench"] == "pipeline" and report["config"]["jobs"] == report["config"]["threads"] == 1
    assert row["programs"] == 4 and row["ratio_to_sequential"] > 0 and row["ratio_to_max_stage"] > 0
    assert {"main_s", "generate_s", "execute_s", "score_s", "sequential_s"} <= set(row)
    assert {"generate_s", "execute_busy_s", "both_active_s"} <= set(row["overlap"])


@pytest.mark.docker
@pytest.mark.slow
def test_bench_execute_dask_prints_the_ratio_to_the_local_pool(humaneval_dir, py_image, capsys):
    pytest.importorskip("distributed", reason="needs the dask extra")
    assert main(["bench", "execute", "--executor", "dask", "--json", "--programs", "8", "--jobs", "2",
                 "--dataset", str(humaneval_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["mode"]: r for r in report["rows"]}
    assert report["executor"] == "dask" and report["config"]["workers"] == 2
    assert rows["local"]["ratio_to_local"] == 1.0 and rows["dask"]["ratio_to_local"] > 0
    assert rows["dask"]["jobs"] == "2×1" and rows["local"]["jobs"] == 2
