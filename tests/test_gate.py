"""The CI gate through the real CLI: `flora-eval baseline save` then `flora-eval check` on runs
written as MultiPL-E results files, with regressions and noise seeded into the pass counts."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from test_report_build import MODEL, demo_counts, write_run

from harness.cli import main
from harness.report.baseline import load_baseline, run_baseline

LANGS, ADAPTERS = ("py", "rb"), ("base", "flora-r1")


@pytest.fixture
def baseline(tmp_path, humaneval_dir):
    """A run with 100 samples per problem and the baseline saved from it through the CLI."""
    counts = demo_counts(langs=LANGS, adapters=ADAPTERS, problems_per_lang=12, n=100, seed=5)
    write_run(tmp_path / "baseline-run", counts, seed=1)
    path = tmp_path / "baseline.json"
    assert main(["baseline", "save", str(tmp_path / "baseline-run"), "-o", str(path)]) == 0
    return counts, path


def check(tmp_path, counts, baseline_path, *flags, seed=2):
    run = write_run(tmp_path / f"run-{seed}", counts, seed=seed)
    junit, summary = tmp_path / f"junit-{seed}.xml", tmp_path / f"summary-{seed}.md"
    code = main(["check", str(run.root), "--baseline", str(baseline_path), "--junit", str(junit),
                 "--summary", str(summary), *flags])
    return code, ET.parse(junit).getroot(), summary.read_text(encoding="utf-8")


def perturbed(counts, cell, change):
    """`counts` with `change(n, c, i) -> c'` applied to every problem of one cell."""
    out = {key: dict(problems) for key, problems in counts.items()}
    out[cell] = {p: (n, change(n, c, i)) for i, (p, (n, c)) in enumerate(counts[cell].items())}
    return out


def cells_of(counts):
    """The fixture's (model, adapter, lang) counts as gate cells (model, adapter, benchmark, lang)."""
    return {(m, a, "humaneval", lang): cell for (m, a, lang), cell in counts.items()}


def failures(junit):
    return [case.get("classname") + "/" + case.get("name") for case in junit.iter("testcase")
            if case.find("failure") is not None]


def test_baseline_file_round_trips_the_counts(baseline):
    counts, path = baseline
    baseline = load_baseline(path)
    assert baseline.cells == cells_of(counts)
    assert {s["temperature"] for s in baseline.settings.values()} == {0.1}


def test_identical_results_pass(tmp_path, baseline, capsys):
    counts, path = baseline
    code, junit, summary = check(tmp_path, counts, path)
    assert code == 0
    assert failures(junit) == [] and junit.get("tests") == str(len(counts))
    assert "no regression" in summary
    assert "0 of 4 cells regressed" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [[], ["--tolerance", "1"], ["--alpha", "0.05"],
                                   ["--alpha", "0.05", "--tolerance", "0.5"]])
def test_seeded_regression_fails_with_a_reason(tmp_path, baseline, capsys, flags):
    counts, path = baseline
    cell = (MODEL, "flora-r1", "rb")
    worse = perturbed(counts, cell, lambda n, c, i: max(0, c - 12) if i % 4 else c)  # 9 of 12 drop
    code, junit, summary = check(tmp_path, worse, path, *flags)
    out = capsys.readouterr().out
    assert code == 1
    assert failures(junit) == [f"flora-eval.{MODEL}.flora-r1/humaneval-rb pass@1"]
    assert f"FAIL {MODEL}/flora-r1/humaneval-rb: pass@1" in out and "1 of 4 cells regressed" in out
    assert "**FAIL**" in summary and "regression" in summary
    drop = np.mean([c - worse[cell][p][1] for p, (_, c) in counts[cell].items()])
    assert f"({-drop:+.2f} pts" in out  # the reason names the measured drop


def test_noise_within_tolerance_passes(tmp_path, baseline):
    counts, path = baseline
    rng = np.random.default_rng(11)
    noisy = counts
    for cell in counts:  # every problem moves by up to ±1 of 100 samples
        steps = rng.integers(-1, 2, size=len(counts[cell]))
        noisy = perturbed(noisy, cell, lambda n, c, i, s=steps: min(n, max(0, c + int(s[i]))))
    assert noisy != counts
    assert check(tmp_path, noisy, path, "--tolerance", "1")[0] == 0
    assert check(tmp_path, noisy, path, "--alpha", "0.05", seed=3)[0] == 0


def test_small_consistent_drop_is_caught_by_alpha_but_not_by_tolerance(tmp_path, baseline):
    counts, path = baseline
    cell = (MODEL, "base", "py")
    worse = perturbed(counts, cell, lambda n, c, i: max(0, c - 1) if c else c)
    assert sum(c for _, c in worse[cell].values()) < sum(c for _, c in counts[cell].values()) - 6
    assert check(tmp_path, worse, path, "--tolerance", "2")[0] == 0
    assert check(tmp_path, worse, path, "--alpha", "0.05", seed=3)[0] == 1


def test_a_significant_improvement_passes(tmp_path, baseline):
    counts, path = baseline
    cell = (MODEL, "flora-r1", "py")
    better = perturbed(counts, cell, lambda n, c, i: min(n, c + 10))
    assert check(tmp_path, better, path, "--alpha", "0.05")[0] == 0


def test_a_missing_cell_or_problem_fails(tmp_path, baseline, capsys):
    counts, path = baseline
    partial = {k: v for k, v in counts.items() if k != (MODEL, "base", "rb")}
    first = next(iter(partial))
    partial[first] = dict(list(partial[first].items())[:-2])
    code, junit, _ = check(tmp_path, partial, path)
    out = capsys.readouterr().out
    assert code == 1 and len(failures(junit)) == 2
    assert f"FAIL {MODEL}/base/humaneval-rb: no results in the run" in out
    assert "2 of 12 baseline problems have no results" in out


def test_bad_inputs_are_one_line_user_errors(tmp_path, baseline, capsys):
    counts, path = baseline
    not_baseline = tmp_path / "x.json"
    not_baseline.write_text('{"hello": 1}', encoding="utf-8")
    run = write_run(tmp_path / "r", counts)
    assert main(["check", str(run.root), "--baseline", str(not_baseline)]) == 2
    assert main(["check", str(run.root), "--baseline", str(path), "--alpha", "5"]) == 2
    assert main(["baseline", "save", str(tmp_path / "empty"), "-o", str(tmp_path / "b.json")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 3 and all(line.startswith("flora-eval: error: ") for line in errors)


def test_run_cells_come_from_the_records_not_folder_names(tmp_path, humaneval_dir):
    counts = demo_counts(langs=("rs",), adapters=("base",), problems_per_lang=3, n=5)
    run = write_run(tmp_path / "r", counts)
    (run.root / MODEL).rename(run.root / "renamed-folder")  # folders are not read for names
    assert run_baseline(run).cells == cells_of(counts)


def test_check_refuses_a_run_sampled_at_another_temperature(tmp_path, baseline, capsys):
    counts, path = baseline
    run = write_run(tmp_path / "hot", counts, seed=2, temperature=0.8)
    code = main(["check", str(run.root), "--baseline", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "temperature is 0.8 in the run, 0.1 in the baseline" in err and "--allow-different" in err
    assert main(["check", str(run.root), "--baseline", str(path), "--allow-different"]) == 0
    assert "warning: compared although temperature" in capsys.readouterr().out


def test_check_compares_dtype_and_an_empty_revision(tmp_path, baseline, capsys):
    """A baseline sampled in bfloat16, and one whose model revision was not recorded: neither is
    like a run that records other values (an empty value is compared like any other)."""
    counts, path = baseline
    run = write_run(tmp_path / "run", counts, seed=2)
    data = json.loads(path.read_text(encoding="utf-8"))
    for cell in data["cells"]:
        cell["settings"].update(dtype="bfloat16", model_revision="")
    path.write_text(json.dumps(data), encoding="utf-8")
    code = main(["check", str(run.root), "--baseline", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--allow-different" in err
    assert "dtype is not recorded in the run, 'bfloat16' in the baseline" in err
    assert f"model_revision is {'sha256:' + '5e' * 8!r} in the run, not recorded in the baseline" in err
    assert load_baseline(path).settings and "quantization" in run_baseline(run).settings[
        next(iter(run_baseline(run).settings))]


def test_check_refuses_another_model(tmp_path, baseline, capsys):
    counts, path = baseline
    other = {("synthetic-2", *key[1:]): cell for key, cell in counts.items()}
    code = main(["check", str(write_run(tmp_path / "other", other).root), "--baseline", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "model is synthetic-2 in the run, synthetic in the baseline" in err
