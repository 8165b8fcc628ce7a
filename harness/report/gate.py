"""`flora-eval check RUN --baseline FILE`: the CI gate. Exit 1 when a (model, adapter,
benchmark, language) cell got worse than the baseline, 0 otherwise, with one reason per
failing cell (each benchmark is gated on its own).

A cell regresses when its mean pass@k over the baseline's problems drops by more than
`--tolerance` points, or, with `--alpha`, when a one-sided paired permutation test on the
same problems says the drop is significant at that level (and, when both are given, both
hold). Without either flag the tolerance is DEFAULT_TOLERANCE points. A cell or problem of the
baseline missing from the run is a failure too: a gate must not pass by not measuring.

Module-level imports stay light: the CLI imports this module to build its parser."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TOLERANCE = 1.0  # percentage points of pass@k


@dataclass(frozen=True)
class Rule:
    """What counts as a regression."""

    k: int = 1
    tolerance: float | None = DEFAULT_TOLERANCE
    alpha: float | None = None

    def describe(self) -> str:
        parts = [f"drop > {self.tolerance:g} pts"] if self.tolerance is not None else []
        parts += [f"one-sided paired permutation p < {self.alpha:g}"] if self.alpha is not None else []
        return f"pass@{self.k} regression: " + " and ".join(parts)


@dataclass(frozen=True)
class CellCheck:
    """The verdict on one (model, adapter, benchmark, language) cell."""

    model: str
    adapter: str
    benchmark: str
    lang: str
    passed: bool
    reason: str
    problems: int = 0
    baseline: float | None = None  # mean pass@k, percent
    current: float | None = None
    diff: float | None = None  # percentage points, current - baseline
    diff_lo: float | None = None
    diff_hi: float | None = None
    p_worse: float | None = None

    @property
    def name(self) -> str:
        return cell_name((self.model, self.adapter, self.benchmark, self.lang))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory to check (results/<run-id>)")
    parser.add_argument("--baseline", required=True, metavar="FILE",
                        help="baseline written by `flora-eval baseline save`")
    parser.add_argument("--tolerance", type=float, metavar="PTS",
                        help=f"allowed drop of mean pass@k in percentage points (default "
                             f"{DEFAULT_TOLERANCE:g} unless --alpha is given)")
    parser.add_argument("--alpha", type=float, metavar="P",
                        help="fail only on a drop significant at this level (one-sided paired "
                             "permutation test over problems), e.g. 0.05")
    parser.add_argument("--k", type=int, default=1, help="which pass@k to compare (default 1)")
    parser.add_argument("--junit", metavar="FILE", help="also write JUnit XML (one testcase per cell)")
    parser.add_argument("--summary", metavar="FILE",
                        help="also write a markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument("--allow-different", action="store_true",
                        help="compare even when the run's model, dtype, quantization, device, "
                             "sampling settings, prompt style, benchmark or dataset revision differ from the "
                             "baseline's")


def rule_from(args: argparse.Namespace) -> Rule:
    from harness.errors import UserError

    if args.tolerance is not None and args.tolerance < 0:
        raise UserError(f"--tolerance must be >= 0 points, got {args.tolerance}")
    if args.alpha is not None and not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, e.g. 0.05; got {args.alpha}")
    if args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    tolerance = args.tolerance if args.tolerance is not None or args.alpha is not None else DEFAULT_TOLERANCE
    return Rule(k=args.k, tolerance=tolerance, alpha=args.alpha)


def run(args: argparse.Namespace) -> int:
    from harness.errors import UserError
    from harness.report.baseline import load_baseline, run_baseline
    from harness.runs import RunDir

    rule = rule_from(args)
    baseline, current = load_baseline(Path(args.baseline)), run_baseline(RunDir.existing(args.run))
    unlike = differences(baseline, current)
    if unlike and not args.allow_different:
        raise UserError(f"{args.run} is not comparable with {args.baseline}: {'; '.join(unlike)}; "
                        "gate like with like (save a baseline with these settings), or pass "
                        "--allow-different")
    for line in unlike:
        print(f"warning: compared although {line}")
    checks = check_cells(baseline.cells, current.cells, rule)
    for check in checks:
        print(("PASS " if check.passed else "FAIL ") + check.name + ": " + check.reason)
    failed = [c for c in checks if not c.passed]
    print(f"check: {len(failed)} of {len(checks)} cells regressed ({rule.describe()})")
    if args.junit:
        write_text(Path(args.junit), junit_xml(checks, rule))
    if args.summary:
        write_text(Path(args.summary), summary_markdown(checks, rule), append=True)
    return 1 if failed else 0


# settings older baselines do not record but whose value is known: every baseline saved before
# prompt styles existed was sampled with completion prompts and no chat template
KNOWN_BEFORE = {"prompt_style": "completion", "chat_template": ""}


def differences(baseline, current) -> list[str]:
    """Why the run and the baseline are not like with like: other models, or common cells
    sampled with other settings (the prompt style among them). Every setting is compared as
    recorded: one a side does not record (an older baseline or run: "") differs from one it
    does, except those whose value was the same for every older file (`KNOWN_BEFORE`)."""
    models = sorted({key[0] for key in baseline.cells}), sorted({key[0] for key in current.cells})
    if not set(models[0]) & set(models[1]):
        return [f"model is {', '.join(models[1])} in the run, {', '.join(models[0])} in the baseline"]
    cells: dict[tuple, list[str]] = {}
    for key in sorted(set(baseline.settings) & set(current.settings)):
        before, now = baseline.settings[key], current.settings[key]
        for name in sorted(set(before) | set(now)):
            old, new = before.get(name, KNOWN_BEFORE.get(name, "")), now.get(name, KNOWN_BEFORE.get(name, ""))
            if old != new:
                cells.setdefault((name, _shown(new), _shown(old)), []).append(cell_name(key))
    return [f"{name} is {now} in the run, {before} in the baseline "
            f"({keys[0]}{f' and {len(keys) - 1} more cells' if len(keys) > 1 else ''})"
            for (name, now, before), keys in cells.items()]


def _shown(value: object) -> str:
    return "not recorded" if value in ("", None) else repr(value)


def cell_name(key: tuple[str, str, str, str]) -> str:
    """`model/adapter/benchmark-lang`, as the run layout names the cell's folder."""
    model, adapter, benchmark, lang = key
    return f"{model}/{adapter}/{benchmark}-{lang}"


def check_cells(baseline: dict, current: dict, rule: Rule) -> list[CellCheck]:
    """A verdict for every baseline cell (then the run's new cells, which always pass)."""
    checks = [check_cell(key, problems, current.get(key), rule) for key, problems in sorted(baseline.items())]
    checks += [CellCheck(*key, passed=True, reason="new in this run (not in the baseline)",
                         problems=len(current[key])) for key in sorted(set(current) - set(baseline))]
    return checks


def check_cell(key: tuple[str, str, str, str], base: dict, cur: dict | None, rule: Rule) -> CellCheck:
    """Compare one cell on the baseline's problems."""
    from harness.score import align, paired, pass_at_k

    if not cur:
        return CellCheck(*key, passed=False, reason="no results in the run for this baseline cell")
    missing = sorted(set(base) - set(cur))
    if missing:
        return CellCheck(*key, passed=False, problems=len(base),
                         reason=f"{len(missing)} of {len(base)} baseline problems have no results "
                                f"(e.g. {missing[0]})")
    scored = [{p: pass_at_k(n, c, rule.k) * 100 for p, (n, c) in cell.items() if n >= rule.k}
              for cell in (cur, base)]
    problems, now, before = align(*scored)
    if not problems:
        return CellCheck(*key, passed=False, reason=f"no problem has n >= {rule.k} samples in both")
    p = paired(now, before)
    mean_now, mean_before = sum(now) / len(now), sum(before) / len(before)
    dropped = rule.tolerance is None or p.diff.mean < -rule.tolerance
    significant = rule.alpha is None or (p.p_worse < rule.alpha and p.diff.mean < 0)
    regressed = dropped and significant
    text = (f"pass@{rule.k} {mean_before:.2f} → {mean_now:.2f} ({p.diff.mean:+.2f} pts, 95% CI "
            f"[{p.diff.lo:+.2f}, {p.diff.hi:+.2f}], {len(problems)} problems, "
            f"{p.wins} better / {p.losses} worse, one-sided p {p.p_worse:.4f})")
    why = []
    if regressed and rule.tolerance is not None:
        why.append(f"drop beyond tolerance {rule.tolerance:g} pts")
    if regressed and rule.alpha is not None:
        why.append(f"significant at alpha {rule.alpha:g}")
    return CellCheck(*key, passed=not regressed, problems=len(problems),
                     reason=text + (": " + " and ".join(why) if regressed else ""),
                     baseline=mean_before, current=mean_now, diff=p.diff.mean, diff_lo=p.diff.lo,
                     diff_hi=p.diff.hi, p_worse=p.p_worse)


def junit_xml(checks: list[CellCheck], rule: Rule) -> str:
    """JUnit XML: one testsuite, one testcase per cell, a <failure> with the reason."""
    import xml.etree.ElementTree as ET

    failures = sum(not c.passed for c in checks)
    suites = ET.Element("testsuites", name="flora-eval check", tests=str(len(checks)),
                        failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name="flora-eval check", tests=str(len(checks)),
                          failures=str(failures), errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="rule", value=rule.describe())
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"flora-eval.{check.model}.{check.adapter}",
                             name=f"{check.benchmark}-{check.lang} pass@{rule.k}")
        if check.passed:
            ET.SubElement(case, "system-out").text = check.reason
        else:
            ET.SubElement(case, "failure", message=check.reason, type="regression").text = check.reason
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def summary_markdown(checks: list[CellCheck], rule: Rule) -> str:
    """A markdown table for CI job summaries."""
    failed = [c for c in checks if not c.passed]
    verdict = f"❌ {len(failed)} regression(s)" if failed else "✅ no regression"
    head = f"## flora-eval check: {verdict}\n\n{len(checks)} cells · {rule.describe()}\n\n"
    rows = ["| cell | baseline | current | Δ pts | 95% CI | p (worse) | verdict |",
            "|:--|--:|--:|--:|:--|--:|:--|"]
    for c in checks:
        ci = "–" if c.diff_lo is None else f"[{c.diff_lo:+.2f}, {c.diff_hi:+.2f}]"
        p = "–" if c.p_worse is None else f"{c.p_worse:.4f}"
        verdict = "pass" if c.passed else "**FAIL**: " + c.reason
        rows.append(f"| {c.name} | {_num(c.baseline)} | {_num(c.current)} | {_num(c.diff, '+')} | {ci} "
                    f"| {p} | {verdict} |")
    return head + "\n".join(rows) + "\n"


def _num(value: float | None, sign: str = "") -> str:
    return "–" if value is None else f"{value:{sign}.2f}"


def write_text(path: Path, text: str, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as f:
        f.write(text)
