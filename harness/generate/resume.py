"""What a run directory already holds for one (language, problem, adapter), and whether it
may be kept: the rules that keep a run directory from mixing settings.

    same settings                   → keep the file (nothing to sample)
    a larger n, all else equal      → keep its samples, sample the missing indices
    any other difference            → stop with one line (or, with --overwrite, regenerate)

Every recorded setting is compared as it is, empty values included: a file that predates a
setting (no dtype, no revision) is not taken for one made with today's settings.

Per-sample seeds depend on the sample index, not on n, so extending n gives exactly the
samples of a fresh run at the larger n. Unfinished work lives in `<problem>.partial.jsonl`
beside the completions file: a header line (the provenance and the prompt), then one
sample per line with its finish reason (a line torn by a kill is ignored).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.files import read_completions
from harness.records import Provenance
from harness.runs import COMPLETIONS_SUFFIX, RESULTS_SUFFIX

PARTIAL_SUFFIX = ".partial.jsonl"
# settings whose change makes stored samples someone else's (n is handled apart)
COMPARED = ("temperature", "top_p", "max_tokens", "seed")
COMPARED_TOP = ("model_revision", "dtype", "quantization", "device", "adapter_hash", "dataset_revision",
                "seeded", "prompt_style", "chat_template")


@dataclass(frozen=True)
class Difference:
    setting: str
    stored: object
    wanted: object


@dataclass(frozen=True)
class Holding:
    """What is on disk for one work item: finished samples and their finish reasons by index,
    and the differences that forbid keeping them (empty when they may be kept)."""

    samples: Mapping[int, str] = field(default_factory=dict)
    complete: bool = False
    differences: tuple[Difference, ...] = ()
    reasons: Mapping[int, str] = field(default_factory=dict)


def partial_path(completions_path: Path) -> Path:
    return completions_path.with_name(completions_path.name[: -len(COMPLETIONS_SUFFIX)] + PARTIAL_SUFFIX)


def results_path(completions_path: Path) -> Path:
    return completions_path.with_name(completions_path.name[: -len(COMPLETIONS_SUFFIX)] + RESULTS_SUFFIX)


def differences(stored: Provenance, stored_prompt: str, wanted: Provenance,
                wanted_prompt: str) -> list[Difference]:
    """Every setting in which stored samples differ from the wanted ones, except a smaller
    stored n (extended, not redone). A value an older file lacks ("" or None) differs too."""
    found = [Difference(name, getattr(stored.sampling, name), getattr(wanted.sampling, name))
             for name in COMPARED if getattr(stored.sampling, name) != getattr(wanted.sampling, name)]
    if stored.sampling.n > wanted.sampling.n:
        found.append(Difference("n", stored.sampling.n, wanted.sampling.n))
    for name in COMPARED_TOP:
        old, new = getattr(stored, name), getattr(wanted, name)
        if old != new:
            found.append(Difference(name, old, new))
    if stored_prompt != wanted_prompt:
        found.append(Difference("prompt", _short(stored_prompt), _short(wanted_prompt)))
    return found


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."


def holding(path: Path, wanted: Provenance, prompt: str) -> Holding:
    """Read the completions file and the partial file of one work item (a partial file torn
    before its header was whole is removed: nothing in it can be kept)."""
    n = wanted.sampling.n
    found: list[Difference] = []
    samples: dict[int, str] = {}
    reasons: dict[int, str] = {}
    complete = False
    if path.exists():
        record = read_completions(path)
        found = differences(record.provenance, record.prompt, wanted, prompt)
        samples = dict(enumerate(record.completions[:n]))
        reasons = dict(enumerate(record.finish_reasons[:n]))
        complete = len(record.completions) == n
    partial = partial_path(path)
    if not complete and partial.exists():
        header, drawn = read_partial(partial)
        if header is None:
            partial.unlink()
        else:
            stored = Provenance.from_json(header.get("provenance") or {})
            found += [d for d in differences(stored, header.get("prompt", ""), wanted, prompt)
                      if d not in found]
            samples.update((i, text) for i, (text, _) in drawn.items() if i < n)
            reasons.update((i, reason) for i, (_, reason) in drawn.items() if i < n)
    return Holding(samples, complete, tuple(found), reasons)


def read_partial(path: Path) -> tuple[dict | None, dict[int, tuple[str, str]]]:
    """The header and the samples (index → (text, finish reason)) of a partial file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        return None, {}
    samples: dict[int, tuple[str, str]] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        samples[int(entry["index"])] = (entry["completion"], entry.get("finish_reason") or "")
    return header, samples


def append_partial(path: Path, provenance: Provenance, prompt: str, index: int, text: str,
                   finish_reason: str = "") -> None:
    """Add one finished sample to the partial file of the completions file at `path`."""
    partial = partial_path(path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    fresh = not partial.exists()
    with partial.open("a", encoding="utf-8") as f:
        if fresh:
            f.write(json.dumps({"provenance": provenance.to_json(), "prompt": prompt}) + "\n")
        entry = {"index": index, "completion": text, "finish_reason": finish_reason}
        f.write(json.dumps(entry, ensure_ascii=False) + "\n")


# -- the plan -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What a run directory holds for every work item, read once before anything is written:
    what is kept (`held`), what differs from the wanted settings (`conflicts`, with both
    values), and what is left to sample (`missing`). Made by `plan_run` and carried through
    the generate stage, so each completions file is read once."""

    held: Mapping[Path, Holding]  # by completions path: what may be kept (empty for a redo)
    conflicts: tuple[tuple[Path, tuple[Difference, ...]], ...] = ()  # files made with other settings
    overwrite: bool = False  # conflicting files are regenerated (else the plan stops the run)

    @property
    def missing(self) -> tuple[Path, ...]:
        """The completions files still to be written."""
        return tuple(path for path, held in self.held.items() if not held.complete)

    def redo(self) -> None:
        """Remove the files that differ (with their results) before generation writes anew."""
        for path, _ in self.conflicts:
            discard(path)


def plan_run(wanted: list[tuple[Path, Provenance, str]], run_root: Path, overwrite: bool) -> Plan:
    """Read what each (completions path, provenance, prompt) already has. A file made with other
    settings stops the run with one line; with `overwrite` it is planned to be made again."""
    held: dict[Path, Holding] = {}
    conflicts = []
    for path, provenance, prompt in wanted:
        found = holding(path, provenance, prompt)
        if found.differences and not overwrite:
            raise conflict_error(path, list(found.differences), run_root)
        if found.differences:
            conflicts.append((path, found.differences))
            found = Holding()
        held[path] = found
    return Plan(held, tuple(conflicts), overwrite)


def discard(path: Path) -> None:
    """Remove a work item's completions, partial and results files (for --overwrite)."""
    for stale in (path, partial_path(path), results_path(path)):
        stale.unlink(missing_ok=True)


def conflict_error(path: Path, diffs: list[Difference], run_root: Path) -> UserError:
    """The one line that stops a run about to mix settings."""
    shown = "; ".join(f"{d.setting} is {_value(d.stored)} there, {d.wanted!r} now" for d in diffs[:3])
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    where = path.relative_to(run_root) if path.is_relative_to(run_root) else path
    return UserError(f"{run_root} was made with other settings ({where}: {shown}{more}); "
                     "use a new --run-id, or --overwrite to regenerate what differs")


def _value(stored: object) -> str:
    return "not recorded" if stored in ("", None) else repr(stored)
