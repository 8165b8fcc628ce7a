"""What a run directory already holds for one (language, problem, adapter), and whether it
may be kept: the rules that keep a run directory from mixing settings.

    same settings                   → keep the file (nothing to sample)
    a larger n, all else equal      → keep its samples, sample the missing indices
    any other difference            → stop with one line (or, with --overwrite, regenerate)

Per-sample seeds depend on the sample index, not on n, so extending n gives exactly the
samples of a fresh run at the larger n. Unfinished work lives in `<problem>.partial.jsonl`
beside the completions file: a header line (the provenance and the prompt), then one
sample per line (a line torn by a kill is ignored).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.files import read_completions
from harness.records import Provenance
from harness.runs import COMPLETIONS_SUFFIX, RESULTS_SUFFIX

PARTIAL_SUFFIX = ".partial.jsonl"
# settings whose change makes stored samples someone else's (n is handled apart)
COMPARED = ("temperature", "top_p", "max_tokens", "seed")
COMPARED_TOP = ("model_revision", "adapter_hash", "dataset_revision")


@dataclass(frozen=True)
class Difference:
    setting: str
    stored: object
    wanted: object


@dataclass
class Holding:
    """What is on disk for one work item: finished samples by index, and the differences
    that forbid keeping them (empty when they may be kept)."""

    samples: dict[int, str] = field(default_factory=dict)
    complete: bool = False
    differences: list[Difference] = field(default_factory=list)


def partial_path(completions_path: Path) -> Path:
    return completions_path.with_name(completions_path.name[: -len(COMPLETIONS_SUFFIX)] + PARTIAL_SUFFIX)


def results_path(completions_path: Path) -> Path:
    return completions_path.with_name(completions_path.name[: -len(COMPLETIONS_SUFFIX)] + RESULTS_SUFFIX)


def differences(stored: Provenance, stored_prompt: str, wanted: Provenance,
                wanted_prompt: str) -> list[Difference]:
    """Every setting in which stored samples differ from the wanted ones, except a smaller
    stored n (extended, not redone). Revisions unknown to an older file are not compared."""
    found = [Difference(name, getattr(stored.sampling, name), getattr(wanted.sampling, name))
             for name in COMPARED if getattr(stored.sampling, name) != getattr(wanted.sampling, name)]
    if stored.sampling.n > wanted.sampling.n:
        found.append(Difference("n", stored.sampling.n, wanted.sampling.n))
    for name in COMPARED_TOP:
        old, new = getattr(stored, name), getattr(wanted, name)
        if old != new and (old or name == "adapter_hash"):
            found.append(Difference(name, old, new))
    if stored_prompt != wanted_prompt:
        found.append(Difference("prompt", _short(stored_prompt), _short(wanted_prompt)))
    return found


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."


def holding(path: Path, wanted: Provenance, prompt: str) -> Holding:
    """Read the completions file and the partial file of one work item."""
    held = Holding()
    if path.exists():
        record = read_completions(path)
        held.differences = differences(record.provenance, record.prompt, wanted, prompt)
        held.samples = dict(enumerate(record.completions[: wanted.sampling.n]))
        held.complete = len(record.completions) == wanted.sampling.n
    partial = partial_path(path)
    if not held.complete and partial.exists():
        header, samples = read_partial(partial)
        if header is None:  # torn before its header was whole: nothing in it to keep
            partial.unlink()
        else:
            stored = Provenance.from_json(header.get("provenance") or {})
            held.differences += [d for d in differences(stored, header.get("prompt", ""), wanted, prompt)
                                 if d not in held.differences]
            held.samples.update((i, s) for i, s in samples.items() if i < wanted.sampling.n)
    return held


def read_partial(path: Path) -> tuple[dict | None, dict[int, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        return None, {}
    samples: dict[int, str] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        samples[int(entry["index"])] = entry["completion"]
    return header, samples


def append_partial(path: Path, provenance: Provenance, prompt: str, index: int, text: str) -> None:
    """Add one finished sample to the partial file of the completions file at `path`."""
    partial = partial_path(path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    fresh = not partial.exists()
    with partial.open("a", encoding="utf-8") as f:
        if fresh:
            f.write(json.dumps({"provenance": provenance.to_json(), "prompt": prompt}) + "\n")
        f.write(json.dumps({"index": index, "completion": text}, ensure_ascii=False) + "\n")


def discard(path: Path) -> None:
    """Remove a work item's completions, partial and results files (for --overwrite)."""
    for stale in (path, partial_path(path), results_path(path)):
        stale.unlink(missing_ok=True)


def conflict_error(path: Path, diffs: list[Difference], run_root: Path) -> UserError:
    """The one line that stops a run about to mix settings."""
    shown = "; ".join(f"{d.setting} is {d.stored!r} there, {d.wanted!r} now" for d in diffs[:3])
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    where = path.relative_to(run_root) if path.is_relative_to(run_root) else path
    return UserError(f"{run_root} was made with other settings ({where}: {shown}{more}); "
                     "use a new --run-id, or --overwrite to regenerate what differs")
